"""Causal self-attention with grouped query heads (MHA / GQA / MQA), packed-segment masking,
optional RoPE and QK-norm. Scores and softmax run in float32."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.layers.dense import DenseGeneral, Dtype
from jaxlm.layers.matmul import einsum_f32
from jaxlm.layers.norms import RMSNorm
from jaxlm.layers.positions import rope
from jaxlm.sharding import constrain

_MASKED = -1e30  # finite so fully masked rows (never produced by packing) cannot yield NaNs


def attention_mask(segment_ids_BxL: jax.Array) -> jax.Array:
    """[B, 1, 1, Lq, Lk] boolean: causal, and only within the same packed document."""
    length = segment_ids_BxL.shape[1]
    causal = jnp.tril(jnp.ones((length, length), dtype=bool))
    same_doc = segment_ids_BxL[:, :, None] == segment_ids_BxL[:, None, :]
    return (causal[None] & same_doc)[:, None, None]


class Attention(nn.Module):
    num_heads: int
    num_kv_heads: int
    head_dim: int
    use_rope: bool = True
    rope_theta: float = 10000.0
    qk_norm: bool = False
    norm_eps: float = 1e-6
    use_bias: bool = False
    dropout_rate: float = 0.0
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array, segment_ids_BxL: jax.Array, positions_BxL: jax.Array,
                 deterministic: bool) -> jax.Array:
        h, k, dh = self.num_heads, self.num_kv_heads, self.head_dim
        proj = lambda n, axes, name: DenseGeneral(  # noqa: E731
            (n, dh), ('embed', axes, 'head_dim'), activation_name=f'{name}_proj',
            use_bias=self.use_bias, init_std=self.init_std, dtype=self.dtype,
            param_dtype=self.param_dtype, name=name)
        q_BxLxHxDh = proj(h, 'heads', 'query')(x_BxLxD)
        k_BxLxKxDh = proj(k, 'kv_heads', 'key')(x_BxLxD)
        v_BxLxKxDh = proj(k, 'kv_heads', 'value')(x_BxLxD)

        if self.qk_norm:
            norm = lambda name: RMSNorm(self.norm_eps, scale_axis='head_dim',  # noqa: E731
                                        dtype=self.dtype, param_dtype=self.param_dtype, name=name)
            q_BxLxHxDh = norm('query_norm')(q_BxLxHxDh)
            k_BxLxKxDh = norm('key_norm')(k_BxLxKxDh)
        if self.use_rope:
            q_BxLxHxDh = rope(q_BxLxHxDh, positions_BxL, self.rope_theta)
            k_BxLxKxDh = rope(k_BxLxKxDh, positions_BxL, self.rope_theta)
        q_BxLxHxDh = constrain(q_BxLxHxDh, ('batch', 'length', 'heads', 'head_dim'))
        k_BxLxKxDh = constrain(k_BxLxKxDh, ('batch', 'length', 'kv_heads', 'head_dim'))
        v_BxLxKxDh = constrain(v_BxLxKxDh, ('batch', 'length', 'kv_heads', 'head_dim'))

        b, length = q_BxLxHxDh.shape[:2]
        q_BxLxKxGxDh = q_BxLxHxDh.reshape(b, length, k, h // k, dh)
        scores_BxKxGxLxL = einsum_f32('blkgd,bskd->bkgls', q_BxLxKxGxDh, k_BxLxKxDh,
                                      jnp.float32) * dh ** -0.5
        scores_BxKxGxLxL = jnp.where(attention_mask(segment_ids_BxL), scores_BxKxGxLxL, _MASKED)
        probs = jax.nn.softmax(scores_BxKxGxLxL, axis=-1).astype(self.dtype)
        probs = nn.Dropout(self.dropout_rate)(probs, deterministic=deterministic)
        out_BxLxKxGxDh = einsum_f32('bkgls,bskd->blkgd', probs, v_BxLxKxDh, self.dtype)
        out_BxLxHxDh = constrain(out_BxLxKxGxDh.reshape(b, length, h, dh),
                                 ('batch', 'length', 'heads', 'head_dim'))
        out = DenseGeneral((x_BxLxD.shape[-1],), ('heads', 'head_dim', 'embed'), num_contract=2,
                           activation_name='attention_out', use_bias=self.use_bias,
                           init_std=self.init_std, dtype=self.dtype,
                           param_dtype=self.param_dtype, name='out')(out_BxLxHxDh)
        return nn.Dropout(self.dropout_rate)(out, deterministic=deterministic)
