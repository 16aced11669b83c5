"""Next-token cross-entropy over packed sequences, with optional z-loss (PaLM)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy_sums(logits_BxLxV: jax.Array, targets_BxL: jax.Array, weights_BxL: jax.Array,
                       z_loss_weight: float = 0.0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns (sum of token losses incl. z-loss, sum of z-loss terms, sum of weights).

    Sums rather than means, so microbatches and shards add up to exactly the full-batch mean.
    """
    logits = logits_BxLxV.astype(jnp.float32)
    lse_BxL = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets_BxL[..., None], axis=-1)[..., 0]
    z_BxL = z_loss_weight * jnp.square(lse_BxL)
    loss_BxL = (lse_BxL - target_logit + z_BxL) * weights_BxL
    return loss_BxL.sum(), (z_BxL * weights_BxL).sum(), weights_BxL.sum()
