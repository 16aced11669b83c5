"""Dense projection over named axes, accumulating in float32."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxlm.layers.matmul import einsum_f32

Dtype = jnp.dtype | type


_LETTERS = 'abcdefghijklmnopqrstuvwxyz'


def contract(x: jax.Array, kernel: jax.Array, num_contract: int, dtype: Dtype) -> jax.Array:
    """Contracts the last `num_contract` dims of x with the first of kernel, accumulating in
    float32 forward and backward (see `matmul.einsum_f32`)."""
    n_free = x.ndim - num_contract
    n_out = kernel.ndim - num_contract
    free, con, out = (_LETTERS[:n_free], _LETTERS[n_free:x.ndim],
                      _LETTERS[x.ndim:x.ndim + n_out])
    return einsum_f32(f'{free}{con},{con}{out}->{free}{out}', x.astype(dtype),
                      kernel.astype(dtype), jnp.dtype(dtype))


class DenseGeneral(nn.Module):
    """y = x @ kernel (+ bias) where kernel has shape in_shape + features."""

    features: Sequence[int]
    kernel_axes: Sequence[str]  # logical names of the contracted input dims, then the outputs
    num_contract: int = 1
    activation_name: str | None = None  # names the output for remat (models/config.py)
    use_bias: bool = False
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = tuple(self.features)
        in_shape = x.shape[x.ndim - self.num_contract:]
        kernel = self.param(
            'kernel',
            nn.with_logical_partitioning(nn.initializers.normal(self.init_std),
                                         tuple(self.kernel_axes)),
            in_shape + features, self.param_dtype)
        y = contract(x, kernel, self.num_contract, self.dtype)
        if self.use_bias:
            bias = self.param(
                'bias',
                nn.with_logical_partitioning(nn.initializers.zeros,
                                             tuple(self.kernel_axes[self.num_contract:])),
                features, self.param_dtype)
            y = y + jnp.expand_dims(bias.astype(self.dtype), tuple(range(y.ndim - bias.ndim)))
        if self.activation_name:
            y = checkpoint_name(y, self.activation_name)
        return y
