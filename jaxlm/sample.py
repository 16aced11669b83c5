"""Sample from a trained run: python -m jaxlm.sample --workdir DIR --prompt "ROMEO:" [...]."""

from __future__ import annotations

import logging

from absl import flags

from jaxlm import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory written by jaxlm.train.')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None,
    'A checkpoints directory (its latest step) or one step directory in it '
    '(default: WORKDIR/checkpoints).')
_PROMPT = flags.DEFINE_multi_string('prompt', ['\n'], 'Prompt text (repeat for a batch).')
_MAX_NEW = flags.DEFINE_integer('max_new_tokens', 100, 'Tokens to generate per prompt.')
_TEMPERATURE = flags.DEFINE_float('temperature', 0.8, '0 = greedy.')
_TOP_K = flags.DEFINE_integer('top_k', 40, '0 = no top-k filtering.')
_TOP_P = flags.DEFINE_float('top_p', 1.0, 'Nucleus sampling mass; 1.0 = no top-p filtering.')
_USE_CACHE = flags.DEFINE_bool('use_cache', True,
                               'KV-cache decoding (--nouse_cache: recompute all tokens per step).')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')
flags.mark_flag_as_required('workdir')


def main(argv: list[str]) -> None:
    del argv
    for name in ('absl', 'jax._src.xla_bridge'):  # orbax warns that a read-only manager is one
        logging.getLogger(name).setLevel(logging.ERROR)
    from jaxlm.inference.decode import generate
    from jaxlm.inference.load import load_run, read_run_config
    from jaxlm.models import registry

    registry.causal_lm(read_run_config(_WORKDIR.value).model)  # before reading any checkpoint
    run = load_run(_WORKDIR.value, _CHECKPOINT.value)
    model, params, tokenizer, step = run.model, run.params, run.tokenizer, run.step
    prompts = [[tokenizer.bos_id] + tokenizer.encode(p) for p in _PROMPT.value]
    outs = generate(model, params, prompts, max_new_tokens=_MAX_NEW.value,
                    temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value,
                    seed=_SEED.value, eos_id=tokenizer.eos_id, use_cache=_USE_CACHE.value)
    print(f'# step {step}, temperature {_TEMPERATURE.value}, top_k {_TOP_K.value}, '
          f'top_p {_TOP_P.value}')
    for prompt, out in zip(_PROMPT.value, outs, strict=True):
        print(f'--- prompt: {prompt!r}\n{prompt}{tokenizer.decode(out)}')


if __name__ == '__main__':
    cli.run(main, 'jaxlm.sample')
