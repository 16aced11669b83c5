"""Attention with grouped query heads (MHA / GQA / MQA), packed-segment masking, optional RoPE,
QK-norm and an additive score bias (ALiBi, T5 relative positions). Causal self-attention by
default; `causal=False` for an encoder, and keys/values from another sequence (`kv_BxTxD`) for
cross-attention. Scores and softmax run in float32.

With a KV cache (incremental decoding) the layer writes this call's keys and values into the
cache at slot `index` (the same slot for every row) and attends over every cache slot; the mask
then comes from the position stored with each slot (-1 = empty or padding), so left- or
right-padded rows of different lengths each see exactly their own tokens.

With `sliding_window` = w > 0 (Mistral style, transformers' `q_idx - kv_idx < sliding_window`)
a query at position i sees only keys j with i - w < j <= i: w tokens including itself.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

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


def cached_attention_mask(query_positions_BxS: jax.Array, key_positions_BxT: jax.Array,
                          sliding_window: int = 0) -> jax.Array:
    """[B, 1, 1, S, T] boolean for attention over a KV cache: a query at position p sees the
    filled slots (position >= 0) holding positions <= p (and > p - w with `sliding_window`
    w > 0). Padding queries (position -1) see nothing; their outputs are finite and unused."""
    q = query_positions_BxS[:, :, None]
    k = key_positions_BxT[:, None, :]
    mask = (k >= 0) & (k <= q)
    if sliding_window > 0:
        mask &= q - k < sliding_window
    return mask[:, None, None]


def update_cache(cache_BxTxKxDh: jax.Array, new_BxSxKxDh: jax.Array,
                 index: jax.Array) -> jax.Array:
    """Writes `new` into slots [index, index + S) of every row."""
    updated = jax.lax.dynamic_update_slice_in_dim(
        cache_BxTxKxDh, new_BxSxKxDh.astype(cache_BxTxKxDh.dtype), index, axis=1)
    return constrain(updated, ('batch', 'length', 'kv_heads', 'head_dim'))


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
                 deterministic: bool, cache: dict[str, jax.Array] | None = None,
                 bias_BxHxSxT: jax.Array | None = None, kv_BxTxD: jax.Array | None = None,
                 kv_segment_ids_BxT: jax.Array | None = None
                 ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        """Without `cache`: attention within packed segments; returns the output.
        `bias_BxHxSxT` (batch may be 1) is added to the scores. With `kv_BxTxD` (and its
        segment ids) keys and values come from that sequence: cross-attention, without RoPE.

        With `cache` = {'key', 'value': [B, T, K, Dh] this layer's cache; 'index': scalar slot
        of this call's first token; 'key_positions': [B, T] position held by each slot after
        this call's write; 'query_positions': [B, S] this call's positions, -1 for padding}
        (`segment_ids_BxL` is ignored, `positions_BxL` are the RoPE positions): returns
        (output, {'key', 'value'} updated)."""
        h, k, dh = self.num_heads, self.num_kv_heads, self.head_dim
        proj = lambda n, axes, name: DenseGeneral(  # noqa: E731
            (n, dh), ('embed', axes, 'head_dim'), activation_name=f'{name}_proj',
            use_bias=self.use_bias, init_std=self.init_std, dtype=self.dtype,
            param_dtype=self.param_dtype, name=name)
        q_BxLxHxDh = proj(h, 'heads', 'query')(x_BxLxD)
        source_BxTxD = x_BxLxD if kv_BxTxD is None else kv_BxTxD
        k_BxLxKxDh = proj(k, 'kv_heads', 'key')(source_BxTxD)
        v_BxLxKxDh = proj(k, 'kv_heads', 'value')(source_BxTxD)

        if self.qk_norm:
            norm = lambda name: RMSNorm(self.norm_eps, scale_axis='head_dim',  # noqa: E731
                                        dtype=self.dtype, param_dtype=self.param_dtype, name=name)
            q_BxLxHxDh = norm('query_norm')(q_BxLxHxDh)
            k_BxLxKxDh = norm('key_norm')(k_BxLxKxDh)
        if self.use_rope and kv_BxTxD is None:
            q_BxLxHxDh = rope(q_BxLxHxDh, positions_BxL, self.rope_theta, self.rope_scaling)
            k_BxLxKxDh = rope(k_BxLxKxDh, positions_BxL, self.rope_theta, self.rope_scaling)
        q_BxLxHxDh = constrain(q_BxLxHxDh, ('batch', 'length', 'heads', 'head_dim'))
        k_BxLxKxDh = constrain(k_BxLxKxDh, ('batch', 'length', 'kv_heads', 'head_dim'))
        v_BxLxKxDh = constrain(v_BxLxKxDh, ('batch', 'length', 'kv_heads', 'head_dim'))

        new_cache = None
        if kv_BxTxD is not None:
            mask = cross_attention_mask(segment_ids_BxL, kv_segment_ids_BxT)
        elif cache is None:
            mask = attention_mask(segment_ids_BxL, self.sliding_window, self.causal)
        else:  # keys/values become the whole cache: [B, T, K, Dh], T >= L
            k_BxLxKxDh = update_cache(cache['key'], k_BxLxKxDh, cache['index'])
            v_BxLxKxDh = update_cache(cache['value'], v_BxLxKxDh, cache['index'])
            new_cache = {'key': k_BxLxKxDh, 'value': v_BxLxKxDh}
            mask = cached_attention_mask(cache['query_positions'], cache['key_positions'],
                                         self.sliding_window)

        b, length = q_BxLxHxDh.shape[:2]
        q_BxLxKxGxDh = q_BxLxHxDh.reshape(b, length, k, h // k, dh)
        scores_BxKxGxLxL = einsum_f32('blkgd,bskd->bkgls', q_BxLxKxGxDh, k_BxLxKxDh,
                                      jnp.float32)
        if self.scale_scores:
            scores_BxKxGxLxL = scores_BxKxGxLxL * dh ** -0.5
        if bias_BxHxSxT is not None:
            scores_BxKxGxLxL = scores_BxKxGxLxL + bias_BxHxSxT.reshape(
                bias_BxHxSxT.shape[0], k, h // k, *bias_BxHxSxT.shape[2:])
        scores_BxKxGxLxL = jnp.where(mask, scores_BxKxGxLxL, _MASKED)
        probs = jax.nn.softmax(scores_BxKxGxLxL, axis=-1).astype(self.dtype)
        probs = nn.Dropout(self.dropout_rate)(probs, deterministic=deterministic)
        out_BxLxKxGxDh = einsum_f32('bkgls,bskd->blkgd', probs, v_BxLxKxDh, self.dtype)
        out_BxLxHxDh = constrain(out_BxLxKxGxDh.reshape(b, length, h, dh),
                                 ('batch', 'length', 'heads', 'head_dim'))
        out = DenseGeneral((x_BxLxD.shape[-1],), ('heads', 'head_dim', 'embed'), num_contract=2,
                           activation_name='attention_out', use_bias=self.use_bias,
                           init_std=self.init_std, dtype=self.dtype,
                           param_dtype=self.param_dtype, name='out')(out_BxLxHxDh)
        out = nn.Dropout(self.dropout_rate)(out, deterministic=deterministic)
        return out if new_cache is None else (out, new_cache)
