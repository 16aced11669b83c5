"""The KV cache of incremental decoding, as typed pytrees.

`KVCache` is the contiguous cache: every row has the same `length` slots, and one call writes
its tokens to slots [index, index + S) of every row. Each slot remembers the position of the
token it holds (-1 = empty or padding), so left- or right-padded rows of different lengths each
attend to exactly their own tokens. A paged cache for serving would be another type with the
same three steps (`begin`, per-layer `LayerKV.write`, `end`) used by the decode modules
(`jaxlm/models/decoder.py:CachedTransformer`, and for the self-attention of
`jaxlm/models/encoder_decoder.py:CachedEncoderDecoder`); the training forward never sees a cache.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from jaxlm.sharding import constrain

_KV_AXES = ('batch', 'length', 'kv_heads', 'head_dim')


@flax.struct.dataclass
class LayerKV:
    """One layer's keys and values [B, T, K, Dh] (with a leading [layers] dim when stacked)."""

    key: jax.Array
    value: jax.Array

    def write(self, key_BxSxKxDh: jax.Array, value_BxSxKxDh: jax.Array,
              index: jax.Array) -> LayerKV:
        """This call's keys and values written into slots [index, index + S) of every row."""
        def put(cache_BxTxKxDh: jax.Array, new_BxSxKxDh: jax.Array) -> jax.Array:
            updated = jax.lax.dynamic_update_slice_in_dim(
                cache_BxTxKxDh, new_BxSxKxDh.astype(cache_BxTxKxDh.dtype), index, axis=1)
            return constrain(updated, _KV_AXES)
        return LayerKV(put(self.key, key_BxSxKxDh), put(self.value, value_BxSxKxDh))

    def constrained(self) -> LayerKV:
        """Sharded like activations, with the stacked `layers` dim in front."""
        return jax.tree.map(lambda x: constrain(x, ('layers', *_KV_AXES)), self)


@flax.struct.dataclass
class CacheView:
    """What every layer of one decode call shares: the slot of the call's first token, the
    positions of this call's tokens ([B, S], -1 = padding) and of every slot after the write
    ([B, T])."""

    index: jax.Array
    query_positions: jax.Array
    key_positions: jax.Array

    def mask(self, sliding_window: int = 0) -> jax.Array:
        """[B, 1, 1, S, T] boolean: a query at position p sees the filled slots holding
        positions <= p (and > p - w with `sliding_window` w > 0). Padding queries see nothing;
        their outputs are finite and unused."""
        q = self.query_positions[:, :, None]
        k = self.key_positions[:, None, :]
        mask = (k >= 0) & (k <= q)
        if sliding_window > 0:
            mask &= q - k < sliding_window
        return mask[:, None, None]


@flax.struct.dataclass
class KVCache:
    """Keys/values of every layer ([layers, B, T, K, Dh] in the compute dtype), the position of
    the token in each slot ([B, T] int32, -1 = empty) and the next slot to write (int32)."""

    layers: LayerKV
    positions: jax.Array
    index: jax.Array

    @classmethod
    def empty(cls, num_layers: int, batch: int, length: int, num_kv_heads: int,
              head_dim: int, dtype: jnp.dtype) -> KVCache:
        shape = (num_layers, batch, length, num_kv_heads, head_dim)
        return cls(LayerKV(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)),
                   jnp.full((batch, length), -1, jnp.int32), jnp.zeros((), jnp.int32))

    @property
    def length(self) -> int:
        return self.positions.shape[1]

    def begin(self, positions_BxS: jax.Array) -> CacheView:
        """The view of a call writing tokens at `positions_BxS` (-1 = padding)."""
        key_positions = jax.lax.dynamic_update_slice_in_dim(self.positions, positions_BxS,
                                                            self.index, axis=1)
        return CacheView(self.index, positions_BxS, constrain(key_positions, ('batch', 'length')))

    def end(self, view: CacheView, layers: LayerKV) -> KVCache:
        """The cache after the call: the layers' written keys/values, the view's positions."""
        num_new = view.query_positions.shape[1]
        return KVCache(layers.constrained(), view.key_positions, self.index + num_new)
