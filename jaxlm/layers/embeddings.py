"""Token embedding (with the tied output projection) and learned position embedding."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.layers.dense import Dtype
from jaxlm.layers.matmul import einsum_f32
from jaxlm.sharding import constrain


class Embed(nn.Module):
    num_embeddings: int
    features: int
    axes: tuple[str, str] = ('vocab', 'embed')
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self) -> None:
        self.embedding = self.param(
            'embedding', nn.with_logical_partitioning(nn.initializers.normal(self.init_std),
                                                      self.axes),
            (self.num_embeddings, self.features), self.param_dtype)

    def __call__(self, ids: jax.Array) -> jax.Array:
        # Gathering from a table sharded on both dims forces XLA into a full rematerialisation
        # (JAX_NOTES §4); all-gathering the model dim first keeps the gather local.
        table = constrain(self.embedding, (self.axes[0], None))
        return jnp.take(table, ids, axis=0).astype(self.dtype)

    def attend(self, x_BxLxD: jax.Array) -> jax.Array:
        """Logits against the same table (tied embeddings), accumulated in float32."""
        return einsum_f32('bld,vd->blv', x_BxLxD.astype(self.dtype),
                          self.embedding.astype(self.dtype), jnp.float32)
