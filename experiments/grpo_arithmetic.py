"""GRPO on the synthetic arithmetic task (jaxlm/data/sets/arithmetic.py) with the exact-answer
reward, from the supervised warm-up of experiments/_arithmetic.py: a CPU-sized check that the
mean reward rises with a bounded KL to the reference.

python -m experiments._arithmetic --workdir runs/arith_sft
python -m jaxlm.train --config experiments/grpo_arithmetic.py --workdir runs/arith_grpo \\
    --config.init_params_from=runs/arith_sft/checkpoints
Variant `:kl` adds the DeepSeekMath KL penalty (rl.kl_beta = 0.04).
"""

from experiments._arithmetic import arithmetic_config


def get_config(arg: str | None = None):
    c = arithmetic_config('grpo')
    if arg == 'kl':
        c.rl.kl_beta = 0.04
    elif arg:
        raise ValueError(f'unknown variant {arg!r} of grpo_arithmetic.py (kl)')
    return c
