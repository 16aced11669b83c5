"""The T5-style encoder-decoder (T5.1.1 flavour from the shared `ModelConfig`).

Built from the decoder-only model's layers: pre-norm blocks of `Attention` and `MLP` (RMSNorm and
gated GELU for T5.1.1), each stack a `LayerStack` of identical blocks (a scan, or with a
`PipelineSchedule` a pipeline over the `stage` mesh axis), one T5 relative position bias per stack
shared by its layers, unscaled attention scores as in T5, and a token embedding shared by the
encoder and the decoder. The encoder is bidirectional within each packed example; the decoder is
causal and cross-attends to the encoder tokens of its own example, never to encoder padding.

Parameters: token_embed, encoder/{relative_bias, layers, final_norm}, decoder/{relative_bias,
layers, final_norm}, and lm_head unless the embeddings are tied.

`CachedEncoderDecoder`, with the same parameters, decodes: `prefill` encodes the prompt once and
projects every decoder layer's cross-attention keys and values from it once; each step then feeds
decoder tokens through a `KVCache` (jaxlm/layers/cache.py) for the self-attention, as the
decoder-only model does, and reuses those keys and values (`EncoderDecoderCache`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from jaxlm.layers.attention import cross_attention_mask
from jaxlm.layers.cache import CacheView, KVCache, LayerKV
from jaxlm.layers.embeddings import Embed
from jaxlm.layers.pipeline import NO_PIPELINE, LayerStack, PipelineSchedule
from jaxlm.layers.positions import RelativePositionBias
from jaxlm.models import hf_specs as hfs
from jaxlm.models.blocks import (
    Block,
    CachedCrossBlock,
    block_params,
    norm,
    norm_params,
    remat_block,
)
from jaxlm.models.config import ModelConfig
from jaxlm.models.family import Batch, Field, ModelFamily, default_layout, dummy_tokens
from jaxlm.models.heads import LMHead
from jaxlm.sharding import constrain

_ACT = ('batch', 'length', 'act_embed')
# T5 starts every decoder sequence with the pad id 0 (the targets shifted right).
DECODER_START = 0


def _relative_bias(c: ModelConfig, bidirectional: bool) -> RelativePositionBias:
    """The stack's one bias table, shared by all its layers (bidirectional in the encoder)."""
    return RelativePositionBias(c.num_heads, bidirectional=bidirectional,
                                num_buckets=c.relative_buckets,
                                max_distance=c.relative_max_distance, init_std=c.init_std,
                                param_dtype=c.param_dtype, name='relative_bias')


def _stack(c: ModelConfig, deterministic: bool, schedule: PipelineSchedule,
           decoder: bool) -> LayerStack:
    """`num_layers` T5 blocks (unscaled scores; the decoder's causal, with cross-attention)
    under 'layers', stored as `nn.scan` stores them either way."""
    return LayerStack(remat_block(Block, c), (c, deterministic, decoder, decoder, False),
                      c.num_layers, schedule, name='layers')


class Encoder(nn.Module):
    cfg: ModelConfig
    pipeline: PipelineSchedule = PipelineSchedule()

    @nn.compact
    def __call__(self, x_BxSxD: jax.Array, segment_ids_BxS: jax.Array, positions_BxS: jax.Array,
                 deterministic: bool) -> jax.Array:
        c = self.cfg
        bias = _relative_bias(c, bidirectional=True)(positions_BxS, positions_BxS)
        x_BxSxD = _stack(c, deterministic, self.pipeline, decoder=False)(
            x_BxSxD, segment_ids_BxS, positions_BxS, bias)
        x_BxSxD = norm(c, 'final_norm')(x_BxSxD)
        return nn.Dropout(c.dropout_rate)(x_BxSxD, deterministic=deterministic)


class Decoder(nn.Module):
    cfg: ModelConfig
    pipeline: PipelineSchedule = PipelineSchedule()

    @nn.compact
    def __call__(self, y_BxLxD: jax.Array, segment_ids_BxL: jax.Array, positions_BxL: jax.Array,
                 encoded_BxSxD: jax.Array, encoder_segment_ids_BxS: jax.Array,
                 deterministic: bool) -> jax.Array:
        c = self.cfg
        bias = _relative_bias(c, bidirectional=False)(positions_BxL, positions_BxL)
        # The encoder output and its segment ids lead with the batch dim like the decoder's own
        # side inputs, so each pipeline microbatch cross-attends to its own rows.
        y_BxLxD = _stack(c, deterministic, self.pipeline, decoder=True)(
            y_BxLxD, segment_ids_BxL, positions_BxL, bias, encoded_BxSxD, encoder_segment_ids_BxS)
        y_BxLxD = norm(c, 'final_norm')(y_BxLxD)
        return nn.Dropout(c.dropout_rate)(y_BxLxD, deterministic=deterministic)


class EncoderDecoder(nn.Module):
    cfg: ModelConfig
    # Training-time layer schedule of both stacks (mesh.stage > 1): each is pipelined in turn
    # over all the stages; the parameter layout is the non-pipelined one.
    pipeline: PipelineSchedule = PipelineSchedule()
    # Tied T5 rescales the decoder output by 1/sqrt(d_model) before the shared embedding.
    head: Any = LMHead(rescale_tied=True)

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
        enc_seg, enc_pos = default_layout(encoder_tokens_BxS, encoder_segment_ids_BxS,
                                          encoder_positions_BxS)
        dec_seg, dec_pos = default_layout(decoder_tokens_BxL, decoder_segment_ids_BxL,
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
        return self.head(self, y_BxLxD, embed)


@flax.struct.dataclass
class EncoderDecoderCache:
    """What decoding carries from step to step: the decoder's self-attention `KVCache`, every
    layer's cross-attention keys and values of the encoded prompt ([layers, B, P, K, Dh],
    projected once) and the prompt's encoder segment ids ([B, P], 0 = padding)."""

    self_attention: KVCache
    cross: LayerKV
    encoder_segment_ids: jax.Array


class CachedDecoder(nn.Module):
    """The decoder stack over an `EncoderDecoderCache`, deterministic."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, y_BxSxD: jax.Array, positions_BxS: jax.Array, view: CacheView,
                 cache: EncoderDecoderCache, encoded_BxPxD: jax.Array | None
                 ) -> tuple[jax.Array, LayerKV, LayerKV]:
        """(normed outputs, new self-attention layers, cross-attention keys/values); these are
        projected from `encoded_BxPxD` when given (prefill), else taken from the cache."""
        c = self.cfg
        bias = _relative_bias(c, bidirectional=False)(positions_BxS, view.key_positions)
        cross_mask = cross_attention_mask(jnp.ones_like(positions_BxS),
                                          cache.encoder_segment_ids)
        stack = nn.scan(CachedCrossBlock, variable_axes={'params': 0},
                        split_rngs={'params': True},
                        in_axes=(nn.broadcast,) * 5 + (0, 0), length=c.num_layers,
                        metadata_params={nn.PARTITION_NAME: 'layers'})
        y_BxSxD, (layers, cross) = stack(c, True, True, True, False, name='layers')(
            y_BxSxD, positions_BxS, bias, view, cross_mask, encoded_BxPxD,
            cache.self_attention.layers.constrained(), cache.cross.constrained())
        return norm(c, 'final_norm')(y_BxSxD), layers, cross


class CachedEncoderDecoder(EncoderDecoder):
    """The decode path: the same parameters over an `EncoderDecoderCache`."""

    @nn.compact
    def __call__(self, tokens_BxS: jax.Array, cache: EncoderDecoderCache,
                 positions_BxS: jax.Array, last_only: bool = False,
                 prompt_BxP: jax.Array | None = None
                 ) -> tuple[jax.Array, EncoderDecoderCache]:
        """Decoder tokens at `positions_BxS` written to the self-attention cache as
        `CachedTransformer` writes them; with `prompt_BxP` (prefill) the prompt is encoded first,
        its padding where `cache.encoder_segment_ids` is 0. Returns (logits, updated cache)."""
        c = self.cfg
        embed = Embed(c.vocab_size, c.d_model, init_std=c.init_std, dtype=c.dtype,
                      param_dtype=c.param_dtype, name='token_embed')
        encoded_BxPxD = None
        if prompt_BxP is not None:
            seg_BxP = cache.encoder_segment_ids
            pos_BxP = jnp.maximum(jnp.cumsum(seg_BxP != 0, axis=1) - 1, 0)
            encoded_BxPxD = Encoder(c, name='encoder')(constrain(embed(prompt_BxP), _ACT),
                                                       seg_BxP, pos_BxP, True)
        view = cache.self_attention.begin(positions_BxS.astype(jnp.int32))
        y_BxSxD, layers, cross = CachedDecoder(c, name='decoder')(
            constrain(embed(tokens_BxS), _ACT), jnp.maximum(view.query_positions, 0), view,
            cache, encoded_BxPxD)
        if last_only:
            y_BxSxD = y_BxSxD[:, -1:]
        cache = EncoderDecoderCache(cache.self_attention.end(view, layers), cross,
                                    cache.encoder_segment_ids)
        return self.head(self, y_BxSxD, embed), cache

    def prefill(self, prompt_BxP: jax.Array, positions_BxP: jax.Array, cache_len: int
                ) -> tuple[jax.Array, EncoderDecoderCache, jax.Array]:
        """The prompts encoded (padding at position -1) and the decoder's start token fed at
        position 0 of a fresh cache of `cache_len` slots: (the logits of each row's first
        generated token [B, V], the cache, the next decoder position [B], all 1)."""
        c = self.cfg
        b, p = prompt_BxP.shape
        cross = jnp.zeros((c.num_layers, b, p, c.num_kv_heads, c.head_dim), c.dtype)
        cache = EncoderDecoderCache(
            KVCache.empty(c.num_layers, b, cache_len, c.num_kv_heads, c.head_dim, c.dtype),
            LayerKV(cross, cross), (positions_BxP >= 0).astype(jnp.int32))
        start_Bx1 = jnp.full((b, 1), DECODER_START, jnp.int32)
        logits_Bx1xV, cache = self(start_Bx1, cache, jnp.zeros((b, 1), jnp.int32), True,
                                   prompt_BxP)
        return logits_Bx1xV[:, -1], cache, jnp.ones((b,), jnp.int32)


def count_params(cfg: ModelConfig) -> int:
    """Closed-form parameter count (a test checks it against `init` and T5.1.1's published
    sizes): the shared embedding, two stacks (layers, final norm, relative bias table each; the
    decoder's layers with cross-attention) and the head."""
    stacks = sum(cfg.num_layers * block_params(cfg, cross) + norm_params(cfg)
                 + cfg.relative_buckets * cfg.num_heads for cross in (False, True))
    total = cfg.vocab_size * cfg.d_model + stacks
    if not cfg.tie_embeddings:
        total += cfg.d_model * cfg.vocab_size
    return total


def flops_per_example(cfg: ModelConfig, inputs_len: int, targets_len: int) -> float:
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


ENCODER_FIELDS = ('encoder_inputs', 'encoder_segment_ids', 'encoder_positions')


class EncoderDecoderFamily(ModelFamily):
    """Reads the decoder fields of an LM batch ([B, seq_len]: the shifted targets) and the
    encoder's tokens and packing layout ([B, inputs_len])."""

    name = 'encoder_decoder'
    decodes = True
    decoder_start = DECODER_START

    def build(self, cfg: ModelConfig, pipeline: PipelineSchedule = NO_PIPELINE
              ) -> EncoderDecoder:
        return EncoderDecoder(cfg, pipeline)

    def input_fields(self, data_cfg: Any) -> dict[str, Field]:
        fields = {k: Field((data_cfg.seq_len,)) for k in ('inputs', 'segment_ids', 'positions')}
        fields.update({k: Field((data_cfg.inputs_len,)) for k in ENCODER_FIELDS})
        return fields

    def init_inputs(self, seq_len: int) -> tuple[jax.Array, ...]:
        return (dummy_tokens(seq_len), dummy_tokens(seq_len))

    def apply(self, model: nn.Module, params: Any, batch: Batch, *, deterministic: bool = True,
              rngs: dict[str, jax.Array] | None = None) -> jax.Array:
        return model.apply({'params': params}, batch['encoder_inputs'], batch['inputs'],
                           batch['encoder_segment_ids'], batch['segment_ids'],
                           batch['encoder_positions'], batch['positions'],
                           deterministic=deterministic, rngs=rngs)

    def count_params(self, cfg: ModelConfig) -> int:
        return count_params(cfg)

    def flops_per_example(self, cfg: ModelConfig, data_cfg: Any) -> float:
        return flops_per_example(cfg, data_cfg.inputs_len, data_cfg.seq_len)

    def validate(self, run_cfg: Any) -> str | None:
        m, d = run_cfg.model, run_cfg.data
        if m.positions != 't5_relative':
            return (f"`model.positions` must be 't5_relative' for `model.architecture` = "
                    f"'encoder_decoder' (T5), got {m.positions!r}")
        if d.inputs_len > m.max_seq_len:
            return (f'`data.inputs_len` ({d.inputs_len}) exceeds `model.max_seq_len` '
                    f'({m.max_seq_len})')
        return None

    def decoder(self, model: nn.Module) -> CachedEncoderDecoder:
        return CachedEncoderDecoder(model.cfg, head=model.head)

    # Hugging Face: T5.1.1 (T5ForConditionalGeneration with gated GELU).

    def _check_t5(self, m: dict[str, Any]) -> None:
        if (m['norm'], m['mlp'], m['positions']) != ('rmsnorm', 'geglu', 't5_relative') \
                or m['use_bias'] or m.get('qk_norm') or m['num_kv_heads'] != m['num_heads']:
            raise hfs.ConversionError('an encoder-decoder is a T5.1.1 only with rmsnorm, geglu, '
                                      't5_relative, no biases, no qk_norm and num_kv_heads == '
                                      'num_heads')

    def hf_specs(self, m: dict[str, Any]) -> list[hfs.Spec]:
        self._check_t5(m)
        # Checkpoints may also store the stacks' views of the shared embedding; transformers
        # >= 5 stores an untied (unscaled) head only as `shared`.
        specs = [hfs.token_embedding('shared.weight', m, copies=(
            'encoder.embed_tokens.weight', 'decoder.embed_tokens.weight'))]
        for stack in ('encoder', 'decoder'):
            specs += self._hf_stack_specs(m, stack)
        return specs + hfs.lm_head(m, fallback='shared.weight')

    def _hf_stack_specs(self, m: dict[str, Any], stack: str) -> list[hfs.Spec]:
        d, h, dh, f = m['d_model'], m['num_heads'], m['head_dim'], m['mlp_dim']
        p, layers = f'{stack}.block.{{i}}.layer.', (stack, 'layers')

        def attention(hf: str, path: hfs.Path) -> list[hfs.Spec]:
            return [hfs.linear_in(f'{hf}.{n}.weight', path + (name, 'kernel'), d, h, dh)
                    for n, name in (('q', 'query'), ('k', 'key'), ('v', 'value'))] + [
                hfs.linear_out(f'{hf}.o.weight', path + ('out', 'kernel'), d, h, dh)]

        def norm(hf: str, path: hfs.Path) -> hfs.Spec:
            return hfs.same(hf + '.layer_norm.weight', path + ('scale',), (d,), True)

        specs = [hfs.same(f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight',
                          (stack, 'relative_bias', 'embedding'), (m['relative_buckets'], h))]
        specs += attention(p + '0.SelfAttention', layers + ('attention',))
        specs.append(norm(p + '0', layers + ('attention_norm',)))
        mlp = p + '1'
        if stack == 'decoder':
            specs += attention(p + '1.EncDecAttention', layers + ('cross_attention',))
            specs.append(norm(p + '1', layers + ('cross_attention_norm',)))
            mlp = p + '2'
        specs += [hfs.transposed(f'{mlp}.DenseReluDense.{n}.weight',
                                 layers + ('mlp', name, 'kernel'), shape, True)
                  for n, name, shape in (('wi_0', 'gate', (f, d)), ('wi_1', 'up', (f, d)),
                                         ('wo', 'down', (d, f)))]
        specs.append(norm(mlp, layers + ('mlp_norm',)))
        specs.append(hfs.same(f'{stack}.final_layer_norm.weight', (stack, 'final_norm', 'scale'),
                              (d,)))
        return specs

    def hf_config(self, m: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        self._check_t5(m)
        out = dict(base)
        out.update(architectures=['T5ForConditionalGeneration'], model_type='t5',
                   vocab_size=m['vocab_size'], d_model=m['d_model'], d_kv=m['head_dim'],
                   d_ff=m['mlp_dim'], num_layers=m['num_layers'],
                   num_decoder_layers=m['num_layers'], num_heads=m['num_heads'],
                   relative_attention_num_buckets=m['relative_buckets'],
                   relative_attention_max_distance=m['relative_max_distance'],
                   layer_norm_epsilon=m['norm_eps'], feed_forward_proj='gated-gelu',
                   tie_word_embeddings=m['tie_embeddings'],
                   scale_decoder_outputs=m['tie_embeddings'], is_encoder_decoder=True)
        out.setdefault('decoder_start_token_id', 0)
        return out


FAMILY = EncoderDecoderFamily()
