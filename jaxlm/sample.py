"""Sample from a trained run: python -m jaxlm.sample --workdir DIR --prompt "ROMEO:" [...]."""

from __future__ import annotations

import json
import logging
import os

from absl import app, flags

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory written by jaxlm.train.')
_PROMPT = flags.DEFINE_multi_string('prompt', ['\n'], 'Prompt text (repeat for a batch).')
_MAX_NEW = flags.DEFINE_integer('max_new_tokens', 100, 'Tokens to generate per prompt.')
_TEMPERATURE = flags.DEFINE_float('temperature', 0.8, '0 = greedy.')
_TOP_K = flags.DEFINE_integer('top_k', 40, '0 = no top-k filtering.')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')
flags.mark_flag_as_required('workdir')


def main(argv: list[str]) -> None:
    del argv
    for name in ('absl', 'jax._src.xla_bridge'):  # orbax warns that a read-only manager is one
        logging.getLogger(name).setLevel(logging.ERROR)
    import jax  # noqa: PLC0415
    import ml_collections  # noqa: PLC0415

    from jaxlm.data.grain_pipeline import tokenizer_only  # noqa: PLC0415
    from jaxlm.inference.decode import generate  # noqa: PLC0415
    from jaxlm.trainer.checkpoint import restore_params  # noqa: PLC0415
    from jaxlm.trainer.loop import build_model  # noqa: PLC0415
    from jaxlm.trainer.state import param_abstract  # noqa: PLC0415

    config_path = os.path.join(_WORKDIR.value, 'config.json')
    if not os.path.exists(config_path):
        raise SystemExit(f'{config_path} not found: is --workdir a jaxlm.train run directory?')
    with open(config_path) as f:
        cfg = ml_collections.ConfigDict(json.load(f))
    model = build_model(cfg)
    tokenizer = tokenizer_only(cfg.data)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    step, params = restore_params(os.path.join(_WORKDIR.value, 'checkpoints'),
                                  param_abstract(model, cfg.data.seq_len, device))
    prompts = [[tokenizer.bos_id] + tokenizer.encode(p) for p in _PROMPT.value]
    outs = generate(model, params, prompts, max_new_tokens=_MAX_NEW.value,
                    temperature=_TEMPERATURE.value, top_k=_TOP_K.value, seed=_SEED.value,
                    eos_id=tokenizer.eos_id)
    print(f'# step {step}, temperature {_TEMPERATURE.value}, top_k {_TOP_K.value}')
    for prompt, out in zip(_PROMPT.value, outs, strict=True):
        print(f'--- prompt: {prompt!r}\n{prompt}{tokenizer.decode(out)}')


if __name__ == '__main__':
    app.run(main)
