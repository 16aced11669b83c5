"""The decoder-only Transformer (GPT-2 and LLaMA styles from one config).

Layers are stacked with `nn.scan` so a 32-layer model compiles as fast as a 1-layer one; the
stacked parameters carry a leading `layers` logical axis.

Incremental decoding passes an explicit KV cache (`init_cache`) in and gets the updated one back,
so `apply` stays pure: per-layer keys/values are scanned over together with the parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.layers.attention import Attention
from jaxlm.layers.embeddings import Embed
from jaxlm.layers.matmul import einsum_f32
from jaxlm.layers.mlp import MLP
from jaxlm.layers.norms import make_norm
from jaxlm.layers.pipeline import LayerStack, PipelineSchedule
from jaxlm.layers.positions import RelativePositionBias, RopeScaling, alibi_bias, sinusoidal
from jaxlm.sharding import constrain

# Which activations of a block the backward pass keeps; the rest it recomputes. Matmul outputs
# are named (DenseGeneral.activation_name) so what is kept is the bf16 result the next layer
# reads, not an f32 accumulator (MaxText's named-remat approach).
_QKV = ('query_proj', 'key_proj', 'value_proj')
_ATTENTION = _QKV + ('attention_out',)
_MLP = ('mlp_gate', 'mlp_up', 'mlp_down')
_REMAT_POLICIES = {
    'full': jax.checkpoint_policies.nothing_saveable,
    'save_dots': jax.checkpoint_policies.save_only_these_names(*_ATTENTION, *_MLP),
    'save_dots_except_mlp': jax.checkpoint_policies.save_only_these_names(*_ATTENTION),
    'save_qkv_proj': jax.checkpoint_policies.save_only_these_names(*_QKV),
}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int
    num_layers: int
    d_model: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    max_seq_len: int
    architecture: str = 'decoder'  # or 'encoder_decoder' (models/encoder_decoder.py)
    norm: str = 'rmsnorm'
    norm_eps: float = 1e-5
    mlp: str = 'swiglu'
    positions: str = 'rope'
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = RopeScaling()
    relative_buckets: int = 32  # T5 relative position bias ('t5_relative')
    relative_max_distance: int = 128
    sliding_window: int = 0  # > 0: each query sees only the last `sliding_window` tokens
    tie_embeddings: bool = False
    use_bias: bool = False
    qk_norm: bool = False
    dropout_rate: float = 0.0
    init_std: float = 0.02
    dtype: Any = jnp.bfloat16
    param_dtype: Any = jnp.float32
    remat_policy: str = 'none'

    @classmethod
    def from_config(cls, model_cfg: Any) -> TransformerConfig:
        kwargs = dict(model_cfg)
        kwargs['dtype'] = jnp.dtype(kwargs['dtype'])
        kwargs['param_dtype'] = jnp.dtype(kwargs['param_dtype'])
        if 'rope_scaling' in kwargs:
            scaling = kwargs['rope_scaling']
            if not isinstance(scaling, RopeScaling):
                s = dict(scaling)
                kwargs['rope_scaling'] = RopeScaling(
                    kind=str(s.get('kind', 'none')), factor=float(s.get('factor', 1.0)),
                    low_freq_factor=float(s.get('low_freq_factor', 1.0)),
                    high_freq_factor=float(s.get('high_freq_factor', 4.0)),
                    original_max_seq_len=int(s.get('original_max_seq_len', 8192)))
        return cls(**kwargs)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    cfg: TransformerConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array, segment_ids_BxL: jax.Array | None,
                 positions_BxL: jax.Array, bias_BxHxSxT: jax.Array | None = None,
                 cache_meta: dict[str, jax.Array] | None = None,
                 layer_cache: dict[str, jax.Array] | None = None
                 ) -> tuple[jax.Array, dict[str, jax.Array] | None]:
        """Training: returns (x, None). Decoding (`layer_cache` = this layer's {'key', 'value'},
        `cache_meta` = the slot index and positions shared by all layers): (x, new layer cache).
        `bias_BxHxSxT`: the position bias shared by all layers (ALiBi, T5), or None."""
        c = self.cfg
        norm = lambda name: make_norm(c.norm, eps=c.norm_eps, use_bias=c.use_bias,  # noqa: E731
                                      dtype=c.dtype, param_dtype=c.param_dtype, name=name)
        h = norm('attention_norm')(x_BxLxD)
        attention = Attention(c.num_heads, c.num_kv_heads, c.head_dim,
                              use_rope=c.positions == 'rope', rope_theta=c.rope_theta,
                              rope_scaling=c.rope_scaling, sliding_window=c.sliding_window,
                              qk_norm=c.qk_norm, norm_eps=c.norm_eps, use_bias=c.use_bias,
                              dropout_rate=c.dropout_rate, init_std=c.init_std, dtype=c.dtype,
                              param_dtype=c.param_dtype, name='attention')
        new_cache = None
        if layer_cache is None:
            h = attention(h, segment_ids_BxL, positions_BxL, self.deterministic,
                          bias_BxHxSxT=bias_BxHxSxT)
        else:
            h, new_cache = attention(h, segment_ids_BxL, positions_BxL, self.deterministic,
                                     cache={**layer_cache, **cache_meta},
                                     bias_BxHxSxT=bias_BxHxSxT)
        x_BxLxD = constrain(x_BxLxD + h, ('batch', 'length', 'act_embed'))
        h = norm('mlp_norm')(x_BxLxD)
        h = MLP(c.mlp, c.mlp_dim, use_bias=c.use_bias, dropout_rate=c.dropout_rate,
                init_std=c.init_std, dtype=c.dtype, param_dtype=c.param_dtype,
                name='mlp')(h, self.deterministic)
        return constrain(x_BxLxD + h, ('batch', 'length', 'act_embed')), new_cache


def remat_block(block: type[nn.Module], cfg: TransformerConfig) -> type[nn.Module]:
    """`block` with the configured remat policy."""
    if cfg.remat_policy == 'none':
        return block
    return nn.remat(block, policy=_REMAT_POLICIES[cfg.remat_policy], prevent_cse=False)


def scan_blocks(block: type[nn.Module], cfg: TransformerConfig,
                in_axes: tuple[Any, ...]) -> type[nn.Module]:
    """`num_layers` copies of `block` as one scanned module (parameters stacked on a leading
    `layers` axis), with the configured remat policy: the decoding stack (training stacks go
    through `LayerStack`, the same scan when not pipelined)."""
    return nn.scan(remat_block(block, cfg), variable_axes={'params': 0},
                   split_rngs={'params': True, 'dropout': True}, in_axes=in_axes,
                   length=cfg.num_layers, metadata_params={nn.PARTITION_NAME: 'layers'})


# Logical axes of the decoding cache (`init_cache`): keys/values shard like activations.
CACHE_LOGICAL_AXES = {
    'key': ('layers', 'batch', 'length', 'kv_heads', 'head_dim'),
    'value': ('layers', 'batch', 'length', 'kv_heads', 'head_dim'),
    'positions': ('batch', 'length'),
    'index': (),
}


def init_cache(cfg: TransformerConfig, batch: int, length: int) -> dict[str, jax.Array]:
    """An empty KV cache of `length` slots: 'key'/'value' [layers, batch, length, kv_heads,
    head_dim] in the compute dtype, 'positions' [batch, length] int32 (the position of the token
    in each slot, -1 = empty) and 'index' (int32 scalar, the next slot to write)."""
    shape = (cfg.num_layers, batch, length, cfg.num_kv_heads, cfg.head_dim)
    return {'key': jnp.zeros(shape, cfg.dtype), 'value': jnp.zeros(shape, cfg.dtype),
            'positions': jnp.full((batch, length), -1, jnp.int32),
            'index': jnp.zeros((), jnp.int32)}


class Transformer(nn.Module):
    cfg: TransformerConfig
    # Training-time layer schedule (mesh.stage > 1); decoding always runs the layers in sequence.
    pipeline: PipelineSchedule = PipelineSchedule()

    @nn.compact
    def __call__(self, tokens_BxL: jax.Array, segment_ids_BxL: jax.Array | None = None,
                 positions_BxL: jax.Array | None = None, deterministic: bool = True,
                 cache: dict[str, jax.Array] | None = None, last_only: bool = False
                 ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        """Returns float32 logits [batch, length, vocab] (length 1 with `last_only`).

        With `cache` (from `init_cache`, or returned by the previous call) the tokens are the
        next ones of each row: they are written to cache slots [index, index + length) and
        attend to every filled slot at a position <= theirs. `positions_BxL` then gives each
        token's true position, -1 for padding (default: index + 0, 1, ...); segment ids are
        ignored. Returns (logits, updated cache). Decoding is always deterministic."""
        c = self.cfg
        cache_meta = None
        if cache is not None:
            if positions_BxL is None:
                positions_BxL = jnp.broadcast_to(cache['index'] + jnp.arange(tokens_BxL.shape[1]),
                                                 tokens_BxL.shape)
            positions_BxL = positions_BxL.astype(jnp.int32)
            cache_meta = {
                'index': cache['index'], 'query_positions': positions_BxL,
                'key_positions': constrain(jax.lax.dynamic_update_slice_in_dim(
                    cache['positions'], positions_BxL, cache['index'], axis=1),
                    ('batch', 'length'))}
            positions_BxL = jnp.maximum(positions_BxL, 0)  # padding: any valid position
            deterministic = True
        if segment_ids_BxL is None:
            segment_ids_BxL = jnp.ones_like(tokens_BxL)
        if positions_BxL is None:
            positions_BxL = jnp.broadcast_to(jnp.arange(tokens_BxL.shape[1]), tokens_BxL.shape)

        embed = Embed(c.vocab_size, c.d_model, init_std=c.init_std, dtype=c.dtype,
                      param_dtype=c.param_dtype, name='token_embed')
        x_BxLxD = embed(tokens_BxL)
        if c.positions == 'learned':
            pos = Embed(c.max_seq_len, c.d_model, axes=('length', 'embed'), init_std=c.init_std,
                        dtype=c.dtype, param_dtype=c.param_dtype, name='position_embed')
            x_BxLxD = x_BxLxD + pos(positions_BxL)
        elif c.positions == 'sinusoidal':
            x_BxLxD = x_BxLxD + sinusoidal(positions_BxL, c.d_model).astype(c.dtype)
        x_BxLxD = nn.Dropout(c.dropout_rate)(x_BxLxD, deterministic=deterministic)
        x_BxLxD = constrain(x_BxLxD, ('batch', 'length', 'act_embed'))
        # Score biases depend on (query, key) positions only, so they are computed once here.
        if cache is None:
            query_positions, key_positions = positions_BxL, positions_BxL
        else:
            query_positions, key_positions = positions_BxL, cache_meta['key_positions']
        bias = None
        if c.positions == 'alibi':
            bias = alibi_bias(query_positions, key_positions, c.num_heads)
        elif c.positions == 't5_relative':
            bias = RelativePositionBias(c.num_heads, bidirectional=False,
                                        num_buckets=c.relative_buckets,
                                        max_distance=c.relative_max_distance,
                                        init_std=c.init_std, param_dtype=c.param_dtype,
                                        name='relative_bias')(query_positions, key_positions)

        if cache is None:
            side = (segment_ids_BxL, positions_BxL) + (() if bias is None else (bias,))
            x_BxLxD = LayerStack(remat_block(Block, c), (c, deterministic), c.num_layers,
                                 self.pipeline, name='layers')(x_BxLxD, *side)
        else:  # the same parameters; each layer's cache slice is scanned over with them
            stack = scan_blocks(Block, c, (nn.broadcast,) * 4 + (0,))
            layer_cache = {k: constrain(cache[k], CACHE_LOGICAL_AXES[k]) for k in ('key', 'value')}
            x_BxLxD, new_kv = stack(c, True, name='layers')(x_BxLxD, segment_ids_BxL,
                                                            positions_BxL, bias, cache_meta,
                                                            layer_cache)
            cache = {**{k: constrain(v, CACHE_LOGICAL_AXES[k]) for k, v in new_kv.items()},
                     'positions': cache_meta['key_positions'],
                     'index': cache['index'] + tokens_BxL.shape[1]}
        if last_only:
            x_BxLxD = x_BxLxD[:, -1:]

        x_BxLxD = make_norm(c.norm, eps=c.norm_eps, use_bias=c.use_bias, dtype=c.dtype,
                            param_dtype=c.param_dtype, name='final_norm')(x_BxLxD)
        logits = output_logits(self, x_BxLxD, embed)
        return logits if cache is None else (logits, cache)


def output_logits(model: nn.Module, x_BxLxD: jax.Array, embed: Embed,
                  tied_scale: float = 1.0) -> jax.Array:
    """Float32 logits from the final hidden states: against the token embedding (scaled by
    `tied_scale`) when `tie_embeddings`, else through `model`'s own `lm_head` kernel. Call it
    inside `model`'s compact `__call__`."""
    c = model.cfg
    if c.tie_embeddings:
        logits = embed.attend(x_BxLxD * tied_scale)
    else:
        kernel = model.param('lm_head', nn.with_logical_partitioning(
            nn.initializers.normal(c.init_std), ('embed', 'vocab')),
            (c.d_model, c.vocab_size), c.param_dtype)
        logits = einsum_f32('bld,dv->blv', x_BxLxD, kernel.astype(c.dtype), jnp.float32)
    return constrain(logits, ('batch', 'length', 'vocab'))


def count_params(cfg: TransformerConfig) -> int:
    """Closed-form parameter count (tests check it against `init`, and against public models)."""
    d, h, k, dh, f, v = (cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim,
                         cfg.vocab_size)
    bias = cfg.use_bias
    norm = d * (2 if cfg.norm == 'layernorm' and bias else 1)
    attn = d * dh * (h + 2 * k) + h * dh * d + (bias * (dh * (h + 2 * k) + d))
    if cfg.qk_norm:
        attn += 2 * dh
    n_in = 1 if cfg.mlp == 'gelu' else 2  # gated MLPs have two input kernels
    mlp = n_in * d * f + f * d + bias * (n_in * f + d)
    per_layer = attn + mlp + 2 * norm
    total = cfg.num_layers * per_layer + v * d + norm
    if cfg.positions == 'learned':
        total += cfg.max_seq_len * d
    if cfg.positions == 't5_relative':
        total += cfg.relative_buckets * h
    if not cfg.tie_embeddings:
        total += d * v
    return total


def matmul_params(cfg: TransformerConfig) -> int:
    """Parameters that take part in a matmul per token: every kernel plus the output head (the
    input embedding is a gather). This is the N of the 6N FLOPs-per-token rule."""
    d, h, k, dh, f, v = (cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim,
                         cfg.vocab_size)
    n_in = 1 if cfg.mlp == 'gelu' else 2  # gated MLPs have two input kernels
    per_layer = d * dh * (h + 2 * k) + h * dh * d + n_in * d * f + f * d
    return cfg.num_layers * per_layer + d * v
