"""Feed-forward blocks: GELU (GPT-2), SwiGLU (LLaMA) and gated GELU (T5.1.1)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.layers.dense import DenseGeneral, Dtype
from jaxlm.sharding import constrain


class MLP(nn.Module):
    kind: str  # 'gelu' | 'swiglu' | 'geglu'
    mlp_dim: int
    use_bias: bool = False
    dropout_rate: float = 0.0
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array, deterministic: bool) -> jax.Array:
        dense = functools.partial(_dense, self)
        d = x_BxLxD.shape[-1]
        if self.kind in ('swiglu', 'geglu'):
            gate = dense(self.mlp_dim, ('embed', 'mlp'), 'gate')(x_BxLxD).astype(jnp.float32)
            up = dense(self.mlp_dim, ('embed', 'mlp'), 'up')(x_BxLxD)
            # T5.1.1's gated GELU uses the tanh approximation (transformers' gelu_new).
            act = nn.silu(gate) if self.kind == 'swiglu' else nn.gelu(gate, approximate=True)
            h_BxLxF = act.astype(self.dtype) * up
        elif self.kind == 'gelu':
            h = dense(self.mlp_dim, ('embed', 'mlp'), 'up')(x_BxLxD)
            h_BxLxF = nn.gelu(h.astype(jnp.float32), approximate=True).astype(self.dtype)
        else:
            raise ValueError(f'unknown mlp {self.kind!r}')
        h_BxLxF = constrain(h_BxLxF, ('batch', 'length', 'mlp'))
        out = dense(d, ('mlp', 'embed'), 'down')(h_BxLxF)
        return nn.Dropout(self.dropout_rate)(out, deterministic=deterministic)


def _dense(mlp: MLP, features: int, axes: tuple[str, str], name: str) -> DenseGeneral:
    return DenseGeneral((features,), axes, activation_name=f'mlp_{name}', use_bias=mlp.use_bias,
                        init_std=mlp.init_std, dtype=mlp.dtype, param_dtype=mlp.param_dtype,
                        name=name)
