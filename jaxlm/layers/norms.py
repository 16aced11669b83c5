"""RMSNorm and LayerNorm, computed in float32 whatever the activation dtype."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.layers.dense import Dtype


def _lead(p: jax.Array, ndim: int) -> jax.Array:
    """`p` [D] with leading unit dims up to rank `ndim` (explicit broadcasting: the tests
    run with jax_numpy_rank_promotion='raise')."""
    return jnp.expand_dims(p, tuple(range(ndim - p.ndim)))


class RMSNorm(nn.Module):
    eps: float = 1e-6
    scale_axis: str = 'norm'
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param('scale', nn.with_logical_partitioning(nn.initializers.ones,
                                                                 (self.scale_axis,)),
                           (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * _lead(scale.astype(jnp.float32), y.ndim)).astype(self.dtype)


class LayerNorm(nn.Module):
    eps: float = 1e-5
    use_bias: bool = True
    scale_axis: str = 'norm'
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = (x.shape[-1],)
        scale = self.param('scale', nn.with_logical_partitioning(nn.initializers.ones,
                                                                 (self.scale_axis,)),
                           features, self.param_dtype)
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * _lead(scale.astype(jnp.float32),
                                                                 x32.ndim)
        if self.use_bias:
            bias = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros,
                                                                   (self.scale_axis,)),
                              features, self.param_dtype)
            y = y + _lead(bias.astype(jnp.float32), y.ndim)
        return y.astype(self.dtype)


def make_norm(kind: str, *, eps: float, use_bias: bool, dtype: Dtype, param_dtype: Dtype,
              name: str, scale_axis: str = 'norm') -> nn.Module:
    if kind == 'rmsnorm':
        return RMSNorm(eps=eps, scale_axis=scale_axis, dtype=dtype, param_dtype=param_dtype,
                       name=name)
    if kind == 'layernorm':
        return LayerNorm(eps=eps, use_bias=use_bias, scale_axis=scale_axis, dtype=dtype,
                         param_dtype=param_dtype, name=name)
    raise ValueError(f'unknown norm {kind!r}')
