"""PPO on the synthetic arithmetic task with the exact-answer reward: the decoder with a value
head (model.architecture 'policy_value'), GAE (gamma 1, lambda 0.95), per-token KL penalty 0.05
folded into the rewards, 4 epochs per batch; from the supervised warm-up of
experiments/_arithmetic.py (its value head starts fresh).

python -m experiments._arithmetic --workdir runs/arith_sft
python -m jaxlm.train --config experiments/ppo_arithmetic.py --workdir runs/arith_ppo \\
    --config.init_params_from=runs/arith_sft/checkpoints
"""

from experiments._arithmetic import arithmetic_config


def get_config():
    c = arithmetic_config('ppo')
    c.model.architecture = 'policy_value'
    c.rl.update(epochs=4, kl_coef=0.05, gamma=1.0, lam=0.95, vf_coef=0.1)
    return c
