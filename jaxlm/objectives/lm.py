"""Next-token language modelling: cross-entropy on the targets where `loss_mask` is set, with
optional z-loss (PaLM), over packed sequences."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.models.family import Field
from jaxlm.objectives.base import Batch, LossSums, Objective

DECODER_INPUTS = ('inputs', 'segment_ids', 'positions')


def cross_entropy_sums(logits_BxLxV: jax.Array, targets_BxL: jax.Array, weights_BxL: jax.Array,
                       z_loss_weight: float = 0.0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns (sum of token losses incl. z-loss, sum of z-loss terms, sum of weights)."""
    logits = logits_BxLxV.astype(jnp.float32)
    lse_BxL = jax.nn.logsumexp(logits, axis=-1)
    target_logit_BxL = jnp.take_along_axis(logits, targets_BxL[..., None], axis=-1)[..., 0]
    z_BxL = z_loss_weight * jnp.square(lse_BxL)
    loss_BxL = (lse_BxL - target_logit_BxL + z_BxL) * weights_BxL
    return loss_BxL.sum(), (z_BxL * weights_BxL).sum(), weights_BxL.sum()


def token_targets(data_cfg: Any) -> dict[str, Field]:
    """Next tokens [seq_len] and the float mask of the positions that are trained."""
    return {'targets': Field((data_cfg.seq_len,)),
            'loss_mask': Field((data_cfg.seq_len,), np.float32)}


@dataclasses.dataclass(frozen=True)
class LanguageModeling(Objective):
    z_loss_weight: float = 0.0
    name: str = 'lm'

    @classmethod
    def from_config(cls, cfg: Any) -> LanguageModeling:
        return cls(z_loss_weight=cfg.optimizer.z_loss_weight)

    def model_inputs(self) -> tuple[str, ...]:
        return DECODER_INPUTS

    def target_fields(self, data_cfg: Any) -> dict[str, Field]:
        return token_targets(data_cfg)

    def loss(self, outputs: jax.Array, batch: Batch) -> LossSums:
        loss, z_loss, weight = cross_entropy_sums(outputs, batch['targets'], batch['loss_mask'],
                                                  self.z_loss_weight)
        return LossSums(loss, weight, {'z_loss': z_loss})
