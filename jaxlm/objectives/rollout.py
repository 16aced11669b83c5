"""What GRPO and PPO share: batches of sampled completions built by the RL loop
(jaxlm/trainer/rl.py), the token log-probabilities the policy-gradient losses differentiate,
and the checks of the `rl` config group.

A rollout row is one prompt and one sampled completion, right-padded to `data.seq_len + 1`
tokens and read as next-token `inputs`/`targets` like language modelling; `loss_mask` marks
the targets that are completion tokens (the stop token included, so the model learns to
stop). Beside them, per target token: `old_logps` (the sampler's log-probabilities, at the
sampling temperature), `ref_logps` (the frozen reference's) and `advantages`; PPO adds
`returns` and `old_values`. Losses return sums (`LossSums`), so the sharded train step
(jaxlm/trainer/step.py) trains on these batches unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.errors import ConfigError
from jaxlm.models.family import Field
from jaxlm.objectives.base import Objective
from jaxlm.objectives.lm import DECODER_INPUTS, token_targets

AGGREGATIONS = ('token', 'sequence')


def token_logprobs(logits_BxLxV: jax.Array, targets_BxL: jax.Array,
                   temperature: float) -> jax.Array:
    """Float32 log-probabilities of the targets under softmax(logits / temperature), as the
    sampler computes them (jaxlm/inference/decode.py:sampled_logprobs)."""
    scaled = logits_BxLxV.astype(jnp.float32) / (temperature or 1.0)
    logp_BxLxV = jax.nn.log_softmax(scaled, axis=-1)
    return jnp.take_along_axis(logp_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]


def clipped_policy_loss(logp_BxL: jax.Array, old_logp_BxL: jax.Array, adv_BxL: jax.Array,
                        clip_eps: float) -> tuple[jax.Array, jax.Array]:
    """Per-token PPO-clip surrogate loss, and where the clip is active (TRL's clip ratio: the
    ratio left [1 - eps, 1 + eps] on the side its advantage pushes it)."""
    ratio_BxL = jnp.exp(logp_BxL - old_logp_BxL)
    clipped_BxL = jnp.clip(ratio_BxL, 1.0 - clip_eps, 1.0 + clip_eps)
    loss_BxL = -jnp.minimum(ratio_BxL * adv_BxL, clipped_BxL * adv_BxL)
    active_BxL = (((ratio_BxL < 1.0 - clip_eps) & (adv_BxL < 0))
                  | ((ratio_BxL > 1.0 + clip_eps) & (adv_BxL > 0)))
    return loss_BxL, active_BxL.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class RolloutObjective(Objective):
    """Base of objectives trained on the RL loop's rollouts: `python -m jaxlm.train` runs
    jaxlm/trainer/rl.py for any objective with `rollouts = True`."""

    rollouts = True
    temperature: float = 1.0
    clip_eps: float = 0.2
    # Per-token float fields beside targets / loss_mask, in the order the RL loop fills them.
    extra_fields = ('old_logps', 'ref_logps', 'advantages')

    def model_inputs(self) -> tuple[str, ...]:
        return DECODER_INPUTS

    def target_fields(self, data_cfg: Any) -> dict[str, Field]:
        return {**token_targets(data_cfg),
                **{k: Field((data_cfg.seq_len,), np.float32) for k in self.extra_fields}}


def check_rl(cfg: Any) -> None:
    """One-line ConfigErrors for the `rl` group (run by `from_config`, so `config.validate`
    refuses a bad group before anything is built)."""
    rl, seq_len = cfg.rl, cfg.data.seq_len
    for field in ('group_size', 'prompts_per_iteration', 'max_new_tokens', 'epochs'):
        value = rl[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f'`rl.{field}` must be a positive integer, got {value!r}')
    if rl.group_size < 2:
        raise ConfigError(f'`rl.group_size` must be >= 2 (advantages compare the completions '
                          f'of one prompt), got {rl.group_size}')
    if rl.max_new_tokens >= seq_len:
        raise ConfigError(f'`rl.max_new_tokens` ({rl.max_new_tokens}) must be below '
                          f'`data.seq_len` ({seq_len}), which also holds the prompt')
    rows, batch = rl.group_size * rl.prompts_per_iteration, cfg.data.global_batch_size
    if rows % batch:
        raise ConfigError(f'`rl.group_size` x `rl.prompts_per_iteration` ({rows} completions '
                          f'per iteration) must be a multiple of `data.global_batch_size` '
                          f'({batch}, the minibatch of one train step)')
    if not rl.temperature > 0:
        raise ConfigError(f'`rl.temperature` must be > 0 (sampled rollouts), got '
                          f'{rl.temperature}')
    if not 0 < rl.clip_eps < 1:
        raise ConfigError(f'`rl.clip_eps` must be in (0, 1), got {rl.clip_eps}')
    for field in ('kl_beta', 'kl_coef', 'vf_coef', 'value_clip'):
        if not rl[field] >= 0:
            raise ConfigError(f'`rl.{field}` must be >= 0, got {rl[field]}')
    if not 0 <= rl.gamma <= 1 or not 0 <= rl.lam <= 1:
        raise ConfigError(f'`rl.gamma` and `rl.lam` must be in [0, 1], got {rl.gamma} and '
                          f'{rl.lam}')
    if rl.loss_aggregation not in AGGREGATIONS:
        raise ConfigError(f'`rl.loss_aggregation` = {rl.loss_aggregation!r} is not one of '
                          f'{AGGREGATIONS}')
    if bool(rl.reward) == bool(rl.reward_model):
        raise ConfigError('set exactly one of `rl.reward` (a programmatic reward, '
                          "'module:function') and `rl.reward_model` (a reward model run's "
                          f'workdir), got {rl.reward!r} and {rl.reward_model!r}')
    if rl.reward and rl.reward.count(':') != 1:
        raise ConfigError(f"`rl.reward` must be 'module:function', got {rl.reward!r}")
