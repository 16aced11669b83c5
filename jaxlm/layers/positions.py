"""Position encodings: rotary (RoPE) and the fixed sinusoidal table."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rope(x_BxLxHxD: jax.Array, positions_BxL: jax.Array, theta: float) -> jax.Array:
    """Rotates channel pairs (i, i + D/2) by angle position * theta^(-2i/D) (LLaMA/NeoX layout)."""
    d = x_BxLxHxD.shape[-1]
    inv_freq = theta ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)
    angles_BxLxK = positions_BxL.astype(jnp.float32)[..., None] * inv_freq
    sin = jnp.sin(angles_BxLxK)[:, :, None, :]
    cos = jnp.cos(angles_BxLxK)[:, :, None, :]
    x = x_BxLxHxD.astype(jnp.float32)
    x1, x2 = jnp.split(x, 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BxLxHxD.dtype)


def sinusoidal(positions_BxL: jax.Array, d_model: int, max_timescale: float = 1e4) -> jax.Array:
    """PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(...) (Vaswani et al. 2017)."""
    i = jnp.arange(d_model // 2, dtype=jnp.float32)
    angles = positions_BxL.astype(jnp.float32)[..., None] / max_timescale ** (2 * i / d_model)
    pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return pe.reshape(*positions_BxL.shape, d_model)
