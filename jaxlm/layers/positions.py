"""Position encodings: rotary (RoPE), with optional linear / Llama 3 frequency scaling, the fixed
sinusoidal table, and the additive attention biases of ALiBi and T5 (relative position buckets)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
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
    angles_BxLxK = positions_BxL.astype(jnp.float32)[:, :, None] * inv_freq[None, None, :]
    sin = jnp.sin(angles_BxLxK)[:, :, None, :]
    cos = jnp.cos(angles_BxLxK)[:, :, None, :]
    x = x_BxLxHxD.astype(jnp.float32)
    x1, x2 = jnp.split(x, 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BxLxHxD.dtype)


def sinusoidal(positions_BxL: jax.Array, d_model: int, max_timescale: float = 1e4) -> jax.Array:
    """PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(...) (Vaswani et al. 2017)."""
    i = jnp.arange(d_model // 2, dtype=jnp.float32)
    angles = (positions_BxL.astype(jnp.float32)[:, :, None]
              / (max_timescale ** (2 * i / d_model))[None, None, :])
    pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return pe.reshape(*positions_BxL.shape, d_model)


def alibi_slopes(num_heads: int) -> np.ndarray:
    """Per-head slopes of ALiBi (Press et al. 2022): the geometric sequence 2^(-8/n * (h + 1))
    for a power-of-two head count n; otherwise those of the next lower power of two followed by
    every other slope of twice that count (the paper's reference code)."""
    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]
    closest = 2 ** math.floor(math.log2(num_heads))
    slopes = power_of_two(closest)
    if closest != num_heads:
        slopes += power_of_two(2 * closest)[0::2][:num_heads - closest]
    return np.asarray(slopes, np.float32)


def alibi_bias(query_positions_BxS: jax.Array, key_positions_BxT: jax.Array,
               num_heads: int) -> jax.Array:
    """[B, H, S, T] additive attention bias -slope_h * |i - j|: linear in the distance."""
    distance = jnp.abs(query_positions_BxS[:, :, None] - key_positions_BxT[:, None, :])
    slopes = jnp.asarray(alibi_slopes(num_heads))
    return -slopes[None, :, None, None] * distance[:, None].astype(jnp.float32)


def relative_position_bucket(relative_position: jax.Array, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> jax.Array:
    """T5's bucketing of key_position - query_position: half the buckets hold exact small
    distances, the rest grow logarithmically up to `max_distance` (everything beyond shares the
    last bucket). Bidirectional (encoder) spends half the buckets on each sign; causal (decoder)
    puts all future offsets into bucket 0. Same arithmetic as transformers' T5Attention."""
    buckets = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).astype(jnp.int32) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    log_ratio = (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
                 / math.log(max_distance / max_exact))
    large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return buckets + jnp.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    """T5's learned relative position bias: one scalar per (bucket, head), computed once per
    stack and added to every layer's attention scores."""

    num_heads: int
    bidirectional: bool
    num_buckets: int = 32
    max_distance: int = 128
    init_std: float = 0.02
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, query_positions_BxS: jax.Array, key_positions_BxT: jax.Array
                 ) -> jax.Array:
        """[B, H, S, T] float32 bias from each token's position in its own segment."""
        table = self.param('embedding', nn.with_logical_partitioning(
            nn.initializers.normal(self.init_std), ('relpos_buckets', 'heads')),
            (self.num_buckets, self.num_heads), self.param_dtype)
        relative = key_positions_BxT[:, None, :] - query_positions_BxS[:, :, None]
        buckets_BxSxT = relative_position_bucket(relative.astype(jnp.int32), self.bidirectional,
                                                 self.num_buckets, self.max_distance)
        bias_BxSxTxH = jnp.take(table.astype(jnp.float32), buckets_BxSxT, axis=0)
        return jnp.transpose(bias_BxSxTxH, (0, 3, 1, 2))
