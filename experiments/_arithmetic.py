"""Shared settings of the arithmetic RL recipes (grpo_arithmetic.py, ppo_arithmetic.py): a
~70k-parameter byte-level decoder that answers "Q: What is a+b?\\nA:" on a CPU, and the short
supervised warm-up (SFT on the gold sums) that RL starts from.

    python -m experiments._arithmetic --workdir runs/arith_sft --steps 300
    python -m jaxlm.train --config experiments/grpo_arithmetic.py --workdir runs/arith_grpo \\
        --config.init_params_from=runs/arith_sft/checkpoints
"""

from __future__ import annotations

import argparse
import copy
import os
from collections.abc import Sequence

import jax
import numpy as np
from flax import traverse_util

from jaxlm.config import default_config, resolve_mesh_shape

PROMPT_FORMAT = 'Q: {prompt}\nA:'


def arithmetic_config(objective: str):
    c = default_config()
    c.num_train_steps = 40  # RL iterations
    c.log_every_steps = 1
    c.checkpoint_every_steps = 10
    c.eval_every_steps = 1000
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    c.model.update(vocab_size=264, num_layers=2, d_model=64, num_heads=4, num_kv_heads=2,
                   head_dim=16, mlp_dim=128, max_seq_len=32, dtype='float32')
    # 16 prompts x 8 completions per iteration, trained in 2 minibatches of 64.
    c.data.update(objective=objective, seq_len=32, global_batch_size=64)
    c.data.tokenizer.update(kind='byte', vocab_size=259)
    c.rl.update(prompts='arithmetic', prompt_format=PROMPT_FORMAT, group_size=8,
                prompts_per_iteration=16, max_new_tokens=6, temperature=1.0,
                reward='jaxlm.trainer.rewards:arithmetic_exact')
    # 1e-3 raises the reward for a few iterations, then the KL explodes and it collapses.
    c.optimizer.update(learning_rate=3e-4, schedule='constant', warmup_steps=0,
                       weight_decay=0.0, grad_clip_norm=1.0)
    return c


def sft_warmup(cfg, workdir: str, steps: int, learning_rate: float = 3e-3,
               devices: Sequence[jax.Device] | None = None) -> str:
    """Trains the model of the RL config `cfg` for `steps` steps of completion-only
    cross-entropy on prompt + ' <sum>' + EOS rows (the 'lm' objective on rollout-shaped rows),
    saves the parameters as `workdir/checkpoints/<steps>` with a config.json beside them, and
    returns that checkpoints directory for `init_params_from`."""
    from jaxlm.checkpoints import save_params
    from jaxlm.data.tokenizers import ByteTokenizer
    from jaxlm.trainer.loop import compile_training
    from jaxlm.trainer.rl import build_rows, prompt_stream
    from jaxlm.trainer.state import init_state

    sft = copy.deepcopy(cfg)
    sft.data.objective = 'lm'
    sft.data.global_batch_size = 16
    sft.model.architecture = 'decoder'
    sft.optimizer.update(learning_rate=learning_rate, schedule='constant', warmup_steps=0)
    devices = list(jax.devices() if devices is None else devices)
    setup = compile_training(sft, devices, resolve_mesh_shape(sft.mesh, len(devices)))
    tokenizer = ByteTokenizer()
    stream = prompt_stream(sft, tokenizer)
    b, width = sft.data.global_batch_size, sft.rl.max_new_tokens
    with jax.set_mesh(setup.mesh):
        state = init_state(setup.model, setup.tx, sft.seed, sft.data.seq_len,
                           setup.state_shardings, setup.tuning)
        for step in range(steps):
            prompts = stream.take(step * b, b)
            gold = [tokenizer.encode(' ' + p.answer)[:width - 1] + [tokenizer.eos_id]
                    for p in prompts]
            tokens = np.zeros((b, width), np.int32)
            for i, g in enumerate(gold):
                tokens[i, :len(g)] = g
            rows = build_rows([p.tokens for p in prompts], tokens, np.zeros(tokens.shape),
                              np.array([len(g) for g in gold]), sft.data.seq_len)
            batch = jax.device_put({k: rows[k] for k in setup.abstract_batch},
                                   setup.batch_sharding)
            state, _ = setup.train_step(state, batch)
    directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    params = jax.device_get(state['params'])
    save_params(directory, steps, traverse_util.flatten_dict(params).items())
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
        f.write(sft.to_json_best_effort(indent=2, sort_keys=True))
    return directory


def expected_reward(cfg, checkpoints: str, device: jax.Device | None = None) -> float:
    """The exact probability that the policy in `checkpoints` (its latest step) samples
    ' <sum>' EOS at temperature 1, averaged over every prompt: a noise-free stand-in for the
    mean `arithmetic_exact` reward (which also accepts other completions that start with the
    sum)."""
    from jaxlm.checkpoints import restore_params
    from jaxlm.data.tokenizers import ByteTokenizer
    from jaxlm.models import params as param_lib
    from jaxlm.models import registry
    from jaxlm.objectives.rollout import token_logprobs
    from jaxlm.trainer.rl import build_rows, prompt_stream

    model = registry.build_model(cfg)
    device = device or jax.devices()[0]
    abstract = param_lib.abstract(model, cfg.data.seq_len,
                                  jax.sharding.SingleDeviceSharding(device))
    _, params = restore_params(checkpoints, abstract)
    tokenizer = ByteTokenizer()
    stream = prompt_stream(cfg, tokenizer)
    prompts = stream.take(0, len(stream.prompts))
    gold = [tokenizer.encode(' ' + p.answer) + [tokenizer.eos_id] for p in prompts]
    tokens = np.zeros((len(gold), cfg.rl.max_new_tokens), np.int32)
    for i, g in enumerate(gold):
        tokens[i, :len(g)] = g
    rows = build_rows([p.tokens for p in prompts], tokens, np.zeros(tokens.shape),
                      np.array([len(g) for g in gold]), cfg.data.seq_len)
    family = registry.family(cfg.model)
    logits = family.token_logits(family.apply(model, params, rows))
    logp = np.asarray(token_logprobs(logits, rows['targets'], 1.0)) * rows['loss_mask']
    return float(np.exp(logp.sum(axis=1)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--workdir', required=True)
    parser.add_argument('--steps', type=int, default=300)
    args = parser.parse_args()
    print(sft_warmup(arithmetic_config('grpo'), args.workdir, args.steps))


if __name__ == '__main__':
    main()
