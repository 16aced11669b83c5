"""Position encodings: rotary (RoPE), with optional linear / Llama 3 frequency scaling, and the
fixed sinusoidal table."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

ROPE_SCALING_KINDS = ('none', 'linear', 'llama3')


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling (hashable, so it can sit in a frozen model config).

    'none': inv_freq_i = theta^(-2i/D). 'linear' (position interpolation): inv_freq / factor.
    'llama3' (Llama 3.1/3.2): wavelengths 2*pi/inv_freq longer than original_max_seq_len /
    low_freq_factor are divided by `factor`, those shorter than original_max_seq_len /
    high_freq_factor are kept, and those in between interpolate smoothly, exactly as
    transformers' `_compute_llama3_parameters`."""

    kind: str = 'none'
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_seq_len: int = 8192


def rope_inv_freq(head_dim: int, theta: float, scaling: RopeScaling | None = None) -> np.ndarray:
    """float32 [head_dim // 2] inverse frequencies of the channel pairs, after `scaling`."""
    inv_freq = (1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32)
                                             / np.float32(head_dim)))).astype(np.float32)
    kind = 'none' if scaling is None else scaling.kind
    if kind == 'none':
        return inv_freq
    if kind == 'linear':
        return (inv_freq / np.float32(scaling.factor)).astype(np.float32)
    if kind == 'llama3':
        factor, low, high = scaling.factor, scaling.low_freq_factor, scaling.high_freq_factor
        old_len = scaling.original_max_seq_len
        low_freq_wavelen, high_freq_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    raise ValueError(f'unknown RoPE scaling kind {kind!r} (known: {ROPE_SCALING_KINDS})')


def rope(x_BxLxHxD: jax.Array, positions_BxL: jax.Array, theta: float,
         scaling: RopeScaling | None = None) -> jax.Array:
    """Rotates channel pairs (i, i + D/2) by angle position * theta^(-2i/D) (LLaMA/NeoX layout);
    with `scaling` (kind other than 'none') the frequencies come from `rope_inv_freq`."""
    d = x_BxLxHxD.shape[-1]
    if scaling is None or scaling.kind == 'none':
        inv_freq = theta ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)
    else:
        inv_freq = jnp.asarray(rope_inv_freq(d, theta, scaling))
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
