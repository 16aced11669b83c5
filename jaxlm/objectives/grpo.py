"""GRPO (DeepSeekMath; TRL's GRPOTrainer): the PPO-clip surrogate with group-normalised
advantages and no value function, plus an optional KL penalty to the frozen reference.

Advantages are computed by the RL loop per prompt over its group of G completions:
(r - mean) / (std + 1e-4), the std unbiased as TRL's. The KL term is the k3 estimator
exp(ref - logp) - (ref - logp) - 1 per token, weighted by `rl.kl_beta` (0 by default, as TRL
now; 0.04 as DeepSeekMath). Aggregation: 'token' averages over every completion token of the
batch (DAPO, TRL's default 'dapo'), 'sequence' averages each completion's tokens and then the
completions (the original GRPO).
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


def k3_kl(logp_BxL: jax.Array, ref_logp_BxL: jax.Array) -> jax.Array:
    """Per-token estimate of KL(policy || reference) from samples of the policy (unbiased,
    never negative)."""
    delta_BxL = ref_logp_BxL - logp_BxL
    return jnp.exp(delta_BxL) - delta_BxL - 1.0


def aggregation_weights(mask_BxL: jax.Array, aggregation: str) -> tuple[jax.Array, jax.Array]:
    """(per-token weights, their denominator) so that sum(weights * x) / denominator is the
    token-level or the sequence-level mean of x over the completion tokens."""
    if aggregation == 'token':
        return mask_BxL, mask_BxL.sum()
    tokens_B = mask_BxL.sum(axis=1)
    weights_BxL = mask_BxL / jnp.maximum(tokens_B, 1.0)[:, None]
    return weights_BxL, (tokens_B > 0).sum().astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class GRPO(RolloutObjective):
    kl_beta: float = 0.0
    aggregation: str = 'token'
    name: str = 'grpo'

    @classmethod
    def from_config(cls, cfg: Any) -> GRPO:
        check_rl(cfg)
        rl = cfg.rl
        return cls(temperature=rl.temperature, clip_eps=rl.clip_eps, kl_beta=rl.kl_beta,
                   aggregation=rl.loss_aggregation)

    def loss(self, outputs: jax.Array, batch: Batch, reference: Any = None) -> LossSums:
        del reference  # the reference's log-probabilities come with the rollouts
        logp_BxL = token_logprobs(outputs, batch['targets'], self.temperature)
        pg_BxL, clipped_BxL = clipped_policy_loss(logp_BxL, batch['old_logps'],
                                                  batch['advantages'], self.clip_eps)
        kl_BxL = k3_kl(logp_BxL, batch['ref_logps'])
        w_BxL, weight = aggregation_weights(batch['loss_mask'], self.aggregation)
        loss = ((pg_BxL + self.kl_beta * kl_BxL) * w_BxL).sum()
        return LossSums(loss, weight, {'clip_fraction': (clipped_BxL * w_BxL).sum(),
                                       'policy_kl': (kl_BxL * w_BxL).sum()})
