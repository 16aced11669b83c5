"""Attention with grouped query heads (MHA / GQA / MQA), packed-segment masking, optional RoPE,
QK-norm and an additive score bias (ALiBi, T5 relative positions). Causal self-attention by
default; `causal=False` for an encoder, and keys/values from another sequence (`kv_BxTxD`) for
cross-attention. Scores and softmax run in float32.

`CachedAttention` is the same layer (same parameters) for incremental decoding: it writes this
call's keys and values into the KV cache (jaxlm/layers/cache.py) at slot `index`, the same slot
for every row, and attends over every cache slot; the mask then comes from the position stored
with each slot (-1 = empty or padding), so left- or right-padded rows of different lengths each
see exactly their own tokens.

With `sliding_window` = w > 0 (Mistral style, transformers' `q_idx - kv_idx < sliding_window`)
a query at position i sees only keys j with i - w < j <= i: w tokens including itself.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.layers.cache import CacheView, LayerKV
from jaxlm.layers.dense import DenseGeneral, Dtype
from jaxlm.layers.matmul import einsum_f32
from jaxlm.layers.norms import RMSNorm
from jaxlm.layers.positions import RopeScaling, rope
from jaxlm.sharding import constrain

_MASKED = -1e30  # finite so fully masked rows (never produced by packing) cannot yield NaNs


def attention_mask(segment_ids_BxL: jax.Array, sliding_window: int = 0,
                   causal: bool = True) -> jax.Array:
    """[B, 1, 1, Lq, Lk] boolean: only within the same packed document, and (`causal`) only
    earlier keys; with `sliding_window` w > 0 also only the last w tokens (query index - key
    index < w)."""
    length = segment_ids_BxL.shape[1]
    q_idx = jnp.arange(length)[:, None]
    k_idx = jnp.arange(length)[None, :]
    allowed = k_idx <= q_idx if causal else jnp.ones((length, length), bool)
    if sliding_window > 0:
        allowed &= q_idx - k_idx < sliding_window
    same_doc = segment_ids_BxL[:, :, None] == segment_ids_BxL[:, None, :]
    return (allowed[None] & same_doc)[:, None, None]


def cross_attention_mask(query_segment_ids_BxS: jax.Array,
                         key_segment_ids_BxT: jax.Array) -> jax.Array:
    """[B, 1, 1, S, T] boolean: a decoder token sees the encoder tokens of its own packed
    example and never encoder padding (segment id 0)."""
    q = query_segment_ids_BxS[:, :, None]
    k = key_segment_ids_BxT[:, None, :]
    return ((q == k) & (k != 0))[:, None, None]


class Attention(nn.Module):
    num_heads: int
    num_kv_heads: int
    head_dim: int
    use_rope: bool = True
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    sliding_window: int = 0  # 0 = full causal attention
    causal: bool = True  # False: every key of the segment (an encoder)
    scale_scores: bool = True  # False: T5, which folds 1/sqrt(head_dim) into initialisation
    qk_norm: bool = False
    norm_eps: float = 1e-6
    use_bias: bool = False
    dropout_rate: float = 0.0
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array, segment_ids_BxL: jax.Array, positions_BxL: jax.Array,
                 deterministic: bool, bias_BxHxSxT: jax.Array | None = None,
                 kv_BxTxD: jax.Array | None = None,
                 kv_segment_ids_BxT: jax.Array | None = None) -> jax.Array:
        """Attention within packed segments. `bias_BxHxSxT` (batch may be 1) is added to the
        scores. With `kv_BxTxD` (and its segment ids) keys and values come from that sequence:
        cross-attention, without RoPE."""
        q_BxLxHxDh, k_BxTxKxDh, v_BxTxKxDh = _project(self, x_BxLxD, positions_BxL, kv_BxTxD)
        if kv_BxTxD is None:
            mask = attention_mask(segment_ids_BxL, self.sliding_window, self.causal)
        else:
            mask = cross_attention_mask(segment_ids_BxL, kv_segment_ids_BxT)
        return _attend(self, q_BxLxHxDh, k_BxTxKxDh, v_BxTxKxDh, mask, bias_BxHxSxT,
                       deterministic, x_BxLxD.shape[-1])


class CachedAttention(Attention):
    """The same layer (same parameters) over a KV cache: causal self-attention of this call's
    tokens to every filled slot, deterministic."""

    @nn.compact
    def __call__(self, x_BxSxD: jax.Array, positions_BxS: jax.Array, layer_kv: LayerKV,
                 view: CacheView, bias_BxHxSxT: jax.Array | None = None
                 ) -> tuple[jax.Array, LayerKV]:
        """Writes this call's keys/values at slot `view.index`; `positions_BxS` are the RoPE
        positions (padding at any valid one). Returns (output, this layer's updated cache)."""
        q_BxSxHxDh, k_BxSxKxDh, v_BxSxKxDh = _project(self, x_BxSxD, positions_BxS, None)
        layer_kv = layer_kv.write(k_BxSxKxDh, v_BxSxKxDh, view.index)
        out = _attend(self, q_BxSxHxDh, layer_kv.key, layer_kv.value,
                      view.mask(self.sliding_window), bias_BxHxSxT, True, x_BxSxD.shape[-1])
        return out, layer_kv


class CachedCrossAttention(Attention):
    """Cross-attention (same parameters as `Attention` with `kv_BxTxD`) whose keys and values
    are projected once per sequence: decoding reuses them at every step."""

    @nn.compact
    def __call__(self, x_BxSxD: jax.Array, layer_kv: LayerKV, mask: jax.Array,
                 kv_BxTxD: jax.Array | None = None) -> tuple[jax.Array, LayerKV]:
        """With `kv_BxTxD` (the encoder output) its keys and values are projected and returned
        as the new `layer_kv`; without, `layer_kv`'s are used. `mask`: [B, 1, 1, S, T]."""
        q_BxSxHxDh = _queries(self, x_BxSxD)
        if kv_BxTxD is not None:
            layer_kv = LayerKV(*_keys_values(self, kv_BxTxD))
        out = _attend(self, q_BxSxHxDh, layer_kv.key, layer_kv.value, mask, None, True,
                      x_BxSxD.shape[-1])
        return out, layer_kv


def _qk_norm(layer: Attention, name: str) -> RMSNorm:
    return RMSNorm(layer.norm_eps, scale_axis='head_dim', dtype=layer.dtype,
                   param_dtype=layer.param_dtype, name=name)


def _queries(layer: Attention, x_BxLxD: jax.Array) -> jax.Array:
    """Queries from `x`, QK-normed (not rotated)."""
    q_BxLxHxDh = _projection(layer, layer.head_dim, layer.num_heads, 'heads', 'query')(x_BxLxD)
    return _qk_norm(layer, 'query_norm')(q_BxLxHxDh) if layer.qk_norm else q_BxLxHxDh


def _keys_values(layer: Attention, x_BxTxD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Keys (QK-normed, not rotated) and values from `x`."""
    proj = functools.partial(_projection, layer, layer.head_dim, layer.num_kv_heads, 'kv_heads')
    k_BxTxKxDh = proj('key')(x_BxTxD)
    if layer.qk_norm:
        k_BxTxKxDh = _qk_norm(layer, 'key_norm')(k_BxTxKxDh)
    return k_BxTxKxDh, proj('value')(x_BxTxD)


def _project(layer: Attention, x_BxLxD: jax.Array, positions_BxL: jax.Array,
             kv_BxTxD: jax.Array | None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Queries from `x`, keys and values from `kv_BxTxD` (else `x`), QK-normed and (self-
    attention) rotated; called inside `layer`'s compact `__call__`."""
    q_BxLxHxDh = _queries(layer, x_BxLxD)
    k_BxTxKxDh, v_BxTxKxDh = _keys_values(layer, x_BxLxD if kv_BxTxD is None else kv_BxTxD)
    if layer.use_rope and kv_BxTxD is None:
        q_BxLxHxDh = rope(q_BxLxHxDh, positions_BxL, layer.rope_theta, layer.rope_scaling)
        k_BxTxKxDh = rope(k_BxTxKxDh, positions_BxL, layer.rope_theta, layer.rope_scaling)
    return (constrain(q_BxLxHxDh, ('batch', 'length', 'heads', 'head_dim')),
            constrain(k_BxTxKxDh, ('batch', 'length', 'kv_heads', 'head_dim')),
            constrain(v_BxTxKxDh, ('batch', 'length', 'kv_heads', 'head_dim')))


def _projection(layer: Attention, head_dim: int, num: int, axis: str, name: str) -> DenseGeneral:
    return DenseGeneral((num, head_dim), ('embed', axis, 'head_dim'),
                        activation_name=f'{name}_proj', use_bias=layer.use_bias,
                        init_std=layer.init_std, dtype=layer.dtype, param_dtype=layer.param_dtype,
                        name=name)


def _attend(layer: Attention, q_BxLxHxDh: jax.Array, k_BxTxKxDh: jax.Array,
            v_BxTxKxDh: jax.Array, mask: jax.Array, bias_BxHxSxT: jax.Array | None,
            deterministic: bool, features: int) -> jax.Array:
    """softmax(q k^T [* Dh^-0.5] + bias, masked) v, grouped by KV head, then the output
    projection to `features`."""
    h, k, dh = layer.num_heads, layer.num_kv_heads, layer.head_dim
    b, length = q_BxLxHxDh.shape[:2]
    q_BxLxKxGxDh = q_BxLxHxDh.reshape(b, length, k, h // k, dh)
    scores_BxKxGxLxT = einsum_f32('blkgd,btkd->bkglt', q_BxLxKxGxDh, k_BxTxKxDh, jnp.float32)
    if layer.scale_scores:
        scores_BxKxGxLxT = scores_BxKxGxLxT * dh ** -0.5
    if bias_BxHxSxT is not None:
        scores_BxKxGxLxT = scores_BxKxGxLxT + bias_BxHxSxT.reshape(
            bias_BxHxSxT.shape[0], k, h // k, *bias_BxHxSxT.shape[2:])
    scores_BxKxGxLxT = jnp.where(mask, scores_BxKxGxLxT, _MASKED)
    probs = jax.nn.softmax(scores_BxKxGxLxT, axis=-1).astype(layer.dtype)
    probs = nn.Dropout(layer.dropout_rate)(probs, deterministic=deterministic)
    out_BxLxKxGxDh = einsum_f32('bkglt,btkd->blkgd', probs, v_BxTxKxDh, layer.dtype)
    out_BxLxHxDh = constrain(out_BxLxKxGxDh.reshape(b, length, h, dh),
                             ('batch', 'length', 'heads', 'head_dim'))
    out = DenseGeneral((features,), ('heads', 'head_dim', 'embed'), num_contract=2,
                       activation_name='attention_out', use_bias=layer.use_bias,
                       init_std=layer.init_std, dtype=layer.dtype, param_dtype=layer.param_dtype,
                       name='out')(out_BxLxHxDh)
    return nn.Dropout(layer.dropout_rate)(out, deterministic=deterministic)
