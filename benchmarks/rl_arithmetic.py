"""Evidence for the RL recipes on a CPU: a short supervised warm-up of a tiny byte-level model
on "Q: What is a+b?\\nA:", then GRPO and PPO (experiments/{grpo,ppo}_arithmetic.py) for a few
dozen iterations; prints the mean sampled reward of the first and last iterations, the exact
expected reward (experiments/_arithmetic.py:expected_reward) before and after, and the KL to
the reference.

    PYTHONPATH=. .venv/bin/python benchmarks/rl_arithmetic.py --workdir /tmp/rl_evidence \\
        --sft_steps 300 --iterations 40
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import numpy as np

from experiments import _arithmetic, grpo_arithmetic, ppo_arithmetic
from jaxlm.trainer.rl import train_rl


def _records(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        return [r for r in map(json.loads, f) if 'reward_mean' in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--workdir', required=True)
    parser.add_argument('--sft_steps', type=int, default=300)
    parser.add_argument('--iterations', type=int, default=40)
    parser.add_argument('--recipes', default='grpo,ppo')
    args = parser.parse_args()
    device = jax.devices()[:1]
    sft = os.path.join(args.workdir, 'sft')
    if not os.path.exists(os.path.join(sft, 'checkpoints')):
        _arithmetic.sft_warmup(grpo_arithmetic.get_config(), sft, args.sft_steps, devices=device)
    start = _arithmetic.expected_reward(grpo_arithmetic.get_config(),
                                        os.path.join(sft, 'checkpoints'))
    modules = {'grpo': grpo_arithmetic, 'ppo': ppo_arithmetic}
    for name in args.recipes.split(','):
        cfg = modules[name].get_config()
        cfg.update(num_train_steps=args.iterations,
                   init_params_from=os.path.join(sft, 'checkpoints'))
        cfg.mesh.update(fsdp=1)
        workdir = os.path.join(args.workdir, name)
        train_rl(cfg, workdir, devices=device)
        records = _records(workdir)
        k = max(1, len(records) // 8)
        first = np.mean([r['reward_mean'] for r in records[:k]])
        last = np.mean([r['reward_mean'] for r in records[-k:]])
        end = _arithmetic.expected_reward(cfg, os.path.join(workdir, 'checkpoints'))
        kls = [r['kl'] for r in records]
        print(f'{name}: sampled reward {first:.3f} (first {k} iterations) -> {last:.3f} (last '
              f'{k}); expected reward {start:.3f} -> {end:.3f}; kl final {kls[-1]:.3f}, max '
              f'{max(kls):.3f}; response length {records[-1]["response_length"]:.2f}; '
              f'generation share {np.mean([r["generation_share"] for r in records]):.0%}',
              flush=True)


if __name__ == '__main__':
    main()
