"""The T5-style encoder-decoder (T5.1.1 flavour from the shared `TransformerConfig`).

Built from the decoder-only model's layers: pre-norm blocks of `Attention` and `MLP` (RMSNorm and
gated GELU for T5.1.1), each stack a `LayerStack` of identical blocks (a scan, or with a
`PipelineSchedule` a pipeline over the `stage` mesh axis), one T5 relative position bias per stack
shared by its layers, unscaled attention scores as in T5, and a token embedding shared by the
encoder and the decoder. The encoder is bidirectional within each packed example; the decoder is
causal and cross-attends to the encoder tokens of its own example, never to encoder padding.

Parameters: token_embed, encoder/{relative_bias, layers, final_norm}, decoder/{relative_bias,
layers, final_norm}, and lm_head unless the embeddings are tied.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.layers.attention import Attention
from jaxlm.layers.embeddings import Embed
from jaxlm.layers.mlp import MLP
from jaxlm.layers.norms import make_norm
from jaxlm.layers.pipeline import LayerStack, PipelineSchedule
from jaxlm.layers.positions import RelativePositionBias
from jaxlm.models.transformer import TransformerConfig, output_logits, remat_block
from jaxlm.sharding import constrain

_ACT = ('batch', 'length', 'act_embed')


def _norm(c: TransformerConfig, name: str) -> nn.Module:
    return make_norm(c.norm, eps=c.norm_eps, use_bias=c.use_bias, dtype=c.dtype,
                     param_dtype=c.param_dtype, name=name)


def _attention(c: TransformerConfig, name: str, causal: bool) -> Attention:
    return Attention(c.num_heads, c.num_kv_heads, c.head_dim, use_rope=False, causal=causal,
                     scale_scores=False, qk_norm=c.qk_norm, norm_eps=c.norm_eps,
                     use_bias=c.use_bias, dropout_rate=c.dropout_rate, init_std=c.init_std,
                     dtype=c.dtype, param_dtype=c.param_dtype, name=name)


def _relative_bias(c: TransformerConfig, bidirectional: bool) -> RelativePositionBias:
    """The stack's one bias table, shared by all its layers (bidirectional in the encoder)."""
    return RelativePositionBias(c.num_heads, bidirectional=bidirectional,
                                num_buckets=c.relative_buckets,
                                max_distance=c.relative_max_distance, init_std=c.init_std,
                                param_dtype=c.param_dtype, name='relative_bias')


def _mlp_residual(c: TransformerConfig, x_BxLxD: jax.Array, deterministic: bool) -> jax.Array:
    h = _norm(c, 'mlp_norm')(x_BxLxD)
    h = MLP(c.mlp, c.mlp_dim, use_bias=c.use_bias, dropout_rate=c.dropout_rate,
            init_std=c.init_std, dtype=c.dtype, param_dtype=c.param_dtype,
            name='mlp')(h, deterministic)
    return constrain(x_BxLxD + h, _ACT)


class EncoderBlock(nn.Module):
    """x + self_attention(norm(x)) over the whole packed example, then x + mlp(norm(x))."""

    cfg: TransformerConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, x_BxSxD: jax.Array, segment_ids_BxS: jax.Array, positions_BxS: jax.Array,
                 bias_BxHxSxS: jax.Array) -> tuple[jax.Array, None]:
        c = self.cfg
        h = _norm(c, 'attention_norm')(x_BxSxD)
        h = _attention(c, 'attention', causal=False)(
            h, segment_ids_BxS, positions_BxS, self.deterministic, bias_BxHxSxT=bias_BxHxSxS)
        x_BxSxD = constrain(x_BxSxD + h, _ACT)
        return _mlp_residual(c, x_BxSxD, self.deterministic), None


class DecoderBlock(nn.Module):
    """Causal self-attention, then cross-attention to the encoder output, then the MLP."""

    cfg: TransformerConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, y_BxLxD: jax.Array, segment_ids_BxL: jax.Array, positions_BxL: jax.Array,
                 bias_BxHxLxL: jax.Array, encoded_BxSxD: jax.Array,
                 encoder_segment_ids_BxS: jax.Array) -> tuple[jax.Array, None]:
        c = self.cfg
        h = _norm(c, 'attention_norm')(y_BxLxD)
        h = _attention(c, 'attention', causal=True)(
            h, segment_ids_BxL, positions_BxL, self.deterministic, bias_BxHxSxT=bias_BxHxLxL)
        y_BxLxD = constrain(y_BxLxD + h, _ACT)
        h = _norm(c, 'cross_attention_norm')(y_BxLxD)
        h = _attention(c, 'cross_attention', causal=False)(
            h, segment_ids_BxL, positions_BxL, self.deterministic, kv_BxTxD=encoded_BxSxD,
            kv_segment_ids_BxT=encoder_segment_ids_BxS)
        y_BxLxD = constrain(y_BxLxD + h, _ACT)
        return _mlp_residual(c, y_BxLxD, self.deterministic), None


def _stack(block: type[nn.Module], c: TransformerConfig, deterministic: bool,
           schedule: PipelineSchedule) -> LayerStack:
    """`num_layers` blocks under 'layers', stored as `nn.scan` stores them either way."""
    return LayerStack(remat_block(block, c), (c, deterministic), c.num_layers, schedule,
                      name='layers')


class Encoder(nn.Module):
    cfg: TransformerConfig
    pipeline: PipelineSchedule = PipelineSchedule()

    @nn.compact
    def __call__(self, x_BxSxD: jax.Array, segment_ids_BxS: jax.Array, positions_BxS: jax.Array,
                 deterministic: bool) -> jax.Array:
        c = self.cfg
        bias = _relative_bias(c, bidirectional=True)(positions_BxS, positions_BxS)
        x_BxSxD = _stack(EncoderBlock, c, deterministic, self.pipeline)(
            x_BxSxD, segment_ids_BxS, positions_BxS, bias)
        x_BxSxD = _norm(c, 'final_norm')(x_BxSxD)
        return nn.Dropout(c.dropout_rate)(x_BxSxD, deterministic=deterministic)


class Decoder(nn.Module):
    cfg: TransformerConfig
    pipeline: PipelineSchedule = PipelineSchedule()

    @nn.compact
    def __call__(self, y_BxLxD: jax.Array, segment_ids_BxL: jax.Array, positions_BxL: jax.Array,
                 encoded_BxSxD: jax.Array, encoder_segment_ids_BxS: jax.Array,
                 deterministic: bool) -> jax.Array:
        c = self.cfg
        bias = _relative_bias(c, bidirectional=False)(positions_BxL, positions_BxL)
        # The encoder output and its segment ids lead with the batch dim like the decoder's own
        # side inputs, so each pipeline microbatch cross-attends to its own rows.
        y_BxLxD = _stack(DecoderBlock, c, deterministic, self.pipeline)(
            y_BxLxD, segment_ids_BxL, positions_BxL, bias, encoded_BxSxD, encoder_segment_ids_BxS)
        y_BxLxD = _norm(c, 'final_norm')(y_BxLxD)
        return nn.Dropout(c.dropout_rate)(y_BxLxD, deterministic=deterministic)


def _default_layout(tokens_BxL: jax.Array, segment_ids_BxL: jax.Array | None,
                    positions_BxL: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """One unpacked example per row when segment ids / positions are not given."""
    if segment_ids_BxL is None:
        segment_ids_BxL = jnp.ones_like(tokens_BxL)
    if positions_BxL is None:
        positions_BxL = jnp.broadcast_to(jnp.arange(tokens_BxL.shape[1]), tokens_BxL.shape)
    return segment_ids_BxL, positions_BxL


class EncoderDecoder(nn.Module):
    cfg: TransformerConfig
    # Training-time layer schedule of both stacks (mesh.stage > 1): each is pipelined in turn
    # over all the stages; the parameter layout is the non-pipelined one.
    pipeline: PipelineSchedule = PipelineSchedule()

    @nn.compact
    def __call__(self, encoder_tokens_BxS: jax.Array, decoder_tokens_BxL: jax.Array,
                 encoder_segment_ids_BxS: jax.Array | None = None,
                 decoder_segment_ids_BxL: jax.Array | None = None,
                 encoder_positions_BxS: jax.Array | None = None,
                 decoder_positions_BxL: jax.Array | None = None,
                 deterministic: bool = True) -> jax.Array:
        """Float32 logits [batch, decoder length, vocab]. Decoder tokens are the targets
        shifted right within each packed example (0 starts each), as in T5."""
        c = self.cfg
        enc_seg, enc_pos = _default_layout(encoder_tokens_BxS, encoder_segment_ids_BxS,
                                           encoder_positions_BxS)
        dec_seg, dec_pos = _default_layout(decoder_tokens_BxL, decoder_segment_ids_BxL,
                                           decoder_positions_BxL)
        embed = Embed(c.vocab_size, c.d_model, init_std=c.init_std, dtype=c.dtype,
                      param_dtype=c.param_dtype, name='token_embed')
        dropout = nn.Dropout(c.dropout_rate)

        x_BxSxD = constrain(dropout(embed(encoder_tokens_BxS), deterministic=deterministic), _ACT)
        encoded_BxSxD = Encoder(c, self.pipeline, name='encoder')(x_BxSxD, enc_seg, enc_pos,
                                                                  deterministic)
        y_BxLxD = constrain(dropout(embed(decoder_tokens_BxL), deterministic=deterministic), _ACT)
        y_BxLxD = Decoder(c, self.pipeline, name='decoder')(y_BxLxD, dec_seg, dec_pos,
                                                            encoded_BxSxD, enc_seg, deterministic)
        # Tied T5 rescales the decoder output by 1/sqrt(d_model) before the shared embedding.
        return output_logits(self, y_BxLxD, embed, tied_scale=c.d_model ** -0.5)


def _stack_params(cfg: TransformerConfig, num_attention: int) -> int:
    """One stack: layers of `num_attention` attention sublayers + MLP, their norms, the final
    norm and the relative bias table."""
    d, h, k, dh, f = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
    bias = cfg.use_bias
    norm = d * (2 if cfg.norm == 'layernorm' and bias else 1)
    attn = d * dh * (h + 2 * k) + h * dh * d + bias * (dh * (h + 2 * k) + d)
    if cfg.qk_norm:
        attn += 2 * dh
    n_in = 1 if cfg.mlp == 'gelu' else 2
    mlp = n_in * d * f + f * d + bias * (n_in * f + d)
    per_layer = num_attention * attn + mlp + (num_attention + 1) * norm
    return cfg.num_layers * per_layer + norm + cfg.relative_buckets * h


def count_params(cfg: TransformerConfig) -> int:
    """Closed-form parameter count (a test checks it against `init` and T5.1.1's published
    sizes)."""
    total = cfg.vocab_size * cfg.d_model + _stack_params(cfg, 1) + _stack_params(cfg, 2)
    if not cfg.tie_embeddings:
        total += cfg.d_model * cfg.vocab_size
    return total


def flops_per_example(cfg: TransformerConfig, inputs_len: int, targets_len: int) -> float:
    """Training FLOPs of one (inputs_len, targets_len) example: 6 x tokens x the matmul
    parameters each token passes through (cross-attention keys/values are projected from the
    encoder tokens, its queries/outputs from the decoder tokens; the head once per target), plus
    attention scores and values (encoder S^2, causal decoder L^2 / 2, cross L x S) x 3."""
    d, h, k, dh, f = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
    q_o, k_v = 2 * h * dh * d, 2 * k * dh * d
    mlp = (1 if cfg.mlp == 'gelu' else 2) * d * f + f * d
    encoder = cfg.num_layers * (q_o + 2 * k_v + mlp) * inputs_len
    decoder = (cfg.num_layers * (2 * q_o + k_v + mlp) + d * cfg.vocab_size) * targets_len
    hd = h * dh * cfg.num_layers
    scores = 2 * 2 * hd * (inputs_len ** 2 + targets_len ** 2 / 2 + targets_len * inputs_len)
    return 6 * (encoder + decoder) + 3 * scores
