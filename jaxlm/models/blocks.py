"""The residual block every family stacks, and how a stack is scanned and rematerialised.

One `Block` is the pre-norm block of all families: x + self_attention(norm(x)), optionally
x + cross_attention(norm(x)) to an encoder's output (the encoder-decoder's decoder), then
x + mlp(norm(x)). `CachedBlock` is the same block (same parameters) over a KV cache.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxlm.layers.attention import Attention, CachedAttention, CachedCrossAttention
from jaxlm.layers.cache import CacheView, LayerKV
from jaxlm.layers.mlp import MLP
from jaxlm.layers.norms import make_norm
from jaxlm.models.config import REMAT_POLICIES, ModelConfig
from jaxlm.sharding import constrain

_ACT = ('batch', 'length', 'act_embed')

def norm(c: ModelConfig, name: str) -> nn.Module:
    """The configured norm (call inside a compact `__call__`)."""
    return make_norm(c.norm, eps=c.norm_eps, use_bias=c.use_bias, dtype=c.dtype,
                     param_dtype=c.param_dtype, name=name)


class Block(nn.Module):
    """Pre-norm residual block. `causal=False`: bidirectional self-attention (an encoder);
    `cross_attention`: a cross-attention sublayer to `encoded_BxTxD` after it; `scale_scores`
    False: T5's unscaled scores."""

    cfg: ModelConfig
    deterministic: bool = True
    causal: bool = True
    cross_attention: bool = False
    scale_scores: bool = True

    def attention(self, name: str, causal: bool, cls: type[Attention] = Attention) -> Attention:
        c = self.cfg
        return cls(c.num_heads, c.num_kv_heads, c.head_dim, use_rope=c.positions == 'rope',
                   rope_theta=c.rope_theta, rope_scaling=c.rope_scaling,
                   sliding_window=c.sliding_window if causal else 0, causal=causal,
                   scale_scores=self.scale_scores, qk_norm=c.qk_norm, norm_eps=c.norm_eps,
                   use_bias=c.use_bias, dropout_rate=c.dropout_rate, init_std=c.init_std,
                   dtype=c.dtype, param_dtype=c.param_dtype, name=name)

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array, segment_ids_BxL: jax.Array, positions_BxL: jax.Array,
                 bias_BxHxLxL: jax.Array | None = None, encoded_BxTxD: jax.Array | None = None,
                 encoder_segment_ids_BxT: jax.Array | None = None) -> tuple[jax.Array, None]:
        """Returns (x, None): the carry of a scan. `bias_BxHxLxL`: the position bias shared by
        the stack's layers (ALiBi, T5), or None."""
        h_BxLxD = self.attention('attention', self.causal)(
            norm(self.cfg, 'attention_norm')(x_BxLxD), segment_ids_BxL, positions_BxL,
            self.deterministic, bias_BxHxSxT=bias_BxHxLxL)
        x_BxLxD = constrain(x_BxLxD + h_BxLxD, _ACT)
        if self.cross_attention:
            h_BxLxD = self.attention('cross_attention', causal=False)(
                norm(self.cfg, 'cross_attention_norm')(x_BxLxD), segment_ids_BxL,
                positions_BxL, self.deterministic, kv_BxTxD=encoded_BxTxD,
                kv_segment_ids_BxT=encoder_segment_ids_BxT)
            x_BxLxD = constrain(x_BxLxD + h_BxLxD, _ACT)
        return mlp_residual(self, x_BxLxD), None


class CachedBlock(Block):
    """The decoder-only block over one layer's KV cache: returns (x, the layer's new cache)."""

    @nn.compact
    def __call__(self, x_BxSxD: jax.Array, positions_BxS: jax.Array,
                 bias_BxHxSxT: jax.Array | None, view: CacheView,
                 layer_kv: LayerKV) -> tuple[jax.Array, LayerKV]:
        h_BxSxD, layer_kv = self.attention('attention', True, CachedAttention)(
            norm(self.cfg, 'attention_norm')(x_BxSxD), positions_BxS, layer_kv, view,
            bias_BxHxSxT)
        x_BxSxD = constrain(x_BxSxD + h_BxSxD, _ACT)
        return mlp_residual(self, x_BxSxD), layer_kv


class CachedCrossBlock(Block):
    """The encoder-decoder's decoder block over one layer's self-attention KV cache and its
    cross-attention keys/values (projected from `encoded_BxTxD` when given, else reused): returns
    (x, (the layer's new self-attention cache, its cross-attention keys/values))."""

    @nn.compact
    def __call__(self, x_BxSxD: jax.Array, positions_BxS: jax.Array,
                 bias_BxHxSxT: jax.Array | None, view: CacheView, cross_mask: jax.Array,
                 encoded_BxTxD: jax.Array | None, layer_kv: LayerKV, cross_kv: LayerKV
                 ) -> tuple[jax.Array, tuple[LayerKV, LayerKV]]:
        h_BxSxD, layer_kv = self.attention('attention', True, CachedAttention)(
            norm(self.cfg, 'attention_norm')(x_BxSxD), positions_BxS, layer_kv, view,
            bias_BxHxSxT)
        x_BxSxD = constrain(x_BxSxD + h_BxSxD, _ACT)
        h_BxSxD, cross_kv = self.attention('cross_attention', False, CachedCrossAttention)(
            norm(self.cfg, 'cross_attention_norm')(x_BxSxD), cross_kv, cross_mask,
            encoded_BxTxD)
        x_BxSxD = constrain(x_BxSxD + h_BxSxD, _ACT)
        return mlp_residual(self, x_BxSxD), (layer_kv, cross_kv)


def mlp_residual(block: Block, x_BxLxD: jax.Array) -> jax.Array:
    c = block.cfg
    h_BxLxD = MLP(c.mlp, c.mlp_dim, use_bias=c.use_bias, dropout_rate=c.dropout_rate,
                  init_std=c.init_std, dtype=c.dtype, param_dtype=c.param_dtype,
                  name='mlp')(norm(c, 'mlp_norm')(x_BxLxD), block.deterministic)
    return constrain(x_BxLxD + h_BxLxD, _ACT)


def remat_block(block: type[nn.Module], cfg: ModelConfig) -> type[nn.Module]:
    """`block` with the configured remat policy."""
    if cfg.remat_policy == 'none':
        return block
    return nn.remat(block, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=False)



def norm_params(c: ModelConfig) -> int:
    return c.d_model * (2 if c.norm == 'layernorm' and c.use_bias else 1)


def attention_params(c: ModelConfig) -> int:
    d, h, k, dh = c.d_model, c.num_heads, c.num_kv_heads, c.head_dim
    return (d * dh * (h + 2 * k) + h * dh * d + c.use_bias * (dh * (h + 2 * k) + d)
            + 2 * dh * c.qk_norm)


def mlp_params(c: ModelConfig) -> int:
    n_in = 1 if c.mlp == 'gelu' else 2  # gated MLPs have two input kernels
    return n_in * c.d_model * c.mlp_dim + c.mlp_dim * c.d_model + c.use_bias * (
        n_in * c.mlp_dim + c.d_model)


def block_params(c: ModelConfig, cross_attention: bool = False) -> int:
    """Parameters of one `Block`: its attention sublayers, MLP and their norms."""
    num_attention = 1 + cross_attention
    return (num_attention * attention_params(c) + mlp_params(c)
            + (num_attention + 1) * norm_params(c))
