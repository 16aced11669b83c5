"""PPO with a learned value function (Ouyang et al. 2022; TRL's PPOTrainer), for the
`policy_value` model family (jaxlm/models/policy_value.py), whose output is (logits, values).

The RL loop folds the per-token KL penalty (`rl.kl_coef` x (logp - ref_logp)) into the rewards,
computes GAE advantages (`rl.gamma`, `rl.lam`) with the rollout-time values, whitens them over
the batch, and passes `returns` = advantages + old values. The loss per completion token is the
PPO-clip surrogate plus `rl.vf_coef` x the clipped value loss
0.5 max((v - R)^2, (old_v + clip(v - old_v, +-value_clip) - R)^2), averaged over tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxlm.objectives.base import Batch, LossSums
from jaxlm.objectives.rollout import (
    RolloutObjective,
    check_rl,
    clipped_policy_loss,
    token_logprobs,
)


def clipped_value_loss(values_BxL: jax.Array, old_values_BxL: jax.Array, returns_BxL: jax.Array,
                       value_clip: float) -> tuple[jax.Array, jax.Array]:
    """Per-token clipped value loss and where the clipped branch is the larger one."""
    clipped_BxL = old_values_BxL + jnp.clip(values_BxL - old_values_BxL, -value_clip, value_clip)
    plain_BxL = jnp.square(values_BxL - returns_BxL)
    worse_BxL = jnp.square(clipped_BxL - returns_BxL)
    return 0.5 * jnp.maximum(plain_BxL, worse_BxL), (worse_BxL > plain_BxL).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class PPO(RolloutObjective):
    vf_coef: float = 0.1
    value_clip: float = 0.2
    name: str = 'ppo'
    output = 'logits_and_values'  # the policy_value family's
    extra_fields = ('old_logps', 'ref_logps', 'advantages', 'returns', 'old_values')

    @classmethod
    def from_config(cls, cfg: Any) -> PPO:
        check_rl(cfg)
        rl = cfg.rl
        return cls(temperature=rl.temperature, clip_eps=rl.clip_eps, vf_coef=rl.vf_coef,
                   value_clip=rl.value_clip)

    def loss(self, outputs: tuple[jax.Array, jax.Array], batch: Batch,
             reference: Any = None) -> LossSums:
        del reference  # the reference's log-probabilities come with the rollouts
        logits_BxLxV, values_BxL = outputs
        logp_BxL = token_logprobs(logits_BxLxV, batch['targets'], self.temperature)
        pg_BxL, clipped_BxL = clipped_policy_loss(logp_BxL, batch['old_logps'],
                                                  batch['advantages'], self.clip_eps)
        vf_BxL, vf_clipped_BxL = clipped_value_loss(values_BxL, batch['old_values'],
                                                    batch['returns'], self.value_clip)
        mask_BxL = batch['loss_mask']
        loss = ((pg_BxL + self.vf_coef * vf_BxL) * mask_BxL).sum()
        return LossSums(loss, mask_BxL.sum(), {
            'clip_fraction': (clipped_BxL * mask_BxL).sum(),
            'value_loss': (vf_BxL * mask_BxL).sum(),
            'value_clip_fraction': (vf_clipped_BxL * mask_BxL).sum()})
