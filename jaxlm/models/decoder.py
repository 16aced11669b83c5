"""The decoder-only family: GPT-2 and LLaMA styles from one config.

Layers are stacked with `nn.scan` (through `LayerStack`, which also pipelines them) so a 32-layer
model compiles as fast as a 1-layer one; the stacked parameters carry a leading `layers` logical
axis. `Transformer` is the training forward; `CachedTransformer`, with the same parameters, is
the decode path: it takes a `KVCache` (jaxlm/layers/cache.py) and returns the updated one, so
`apply` stays pure.

Parameters: token_embed, position_embed ('learned'), relative_bias ('t5_relative'), layers,
final_norm, and the head's own (`lm_head` unless the embeddings are tied).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.layers.cache import KVCache
from jaxlm.layers.embeddings import Embed
from jaxlm.layers.pipeline import NO_PIPELINE, LayerStack, PipelineSchedule
from jaxlm.layers.positions import RelativePositionBias, alibi_bias, sinusoidal
from jaxlm.models import hf_specs as hfs
from jaxlm.models.blocks import Block, CachedBlock, block_params, norm, norm_params, remat_block
from jaxlm.models.config import ModelConfig
from jaxlm.models.family import Batch, Field, ModelFamily, default_layout, dummy_tokens
from jaxlm.models.heads import LMHead
from jaxlm.sharding import constrain

_ACT = ('batch', 'length', 'act_embed')


class Transformer(nn.Module):
    """Training forward: tokens [B, L] (packed: segment ids and positions) -> head output."""

    cfg: ModelConfig
    # Training-time layer schedule (mesh.stage > 1); decoding always runs the layers in sequence.
    pipeline: PipelineSchedule = PipelineSchedule()
    head: Any = LMHead()

    @nn.compact
    def __call__(self, tokens_BxL: jax.Array, segment_ids_BxL: jax.Array | None = None,
                 positions_BxL: jax.Array | None = None,
                 deterministic: bool = True) -> jax.Array:
        """Float32 logits [batch, length, vocab] with the LM head."""
        c = self.cfg
        segment_ids_BxL, positions_BxL = default_layout(tokens_BxL, segment_ids_BxL,
                                                        positions_BxL)
        x_BxLxD, embed = embed_tokens(self, tokens_BxL, positions_BxL, deterministic)
        bias = position_bias(self, positions_BxL, positions_BxL)
        side = (segment_ids_BxL, positions_BxL) + (() if bias is None else (bias,))
        x_BxLxD = LayerStack(remat_block(Block, c), (c, deterministic), c.num_layers,
                             self.pipeline, name='layers')(x_BxLxD, *side)
        return self.head(self, norm(c, 'final_norm')(x_BxLxD), embed)


class CachedTransformer(Transformer):
    """The decode path: the same parameters over a `KVCache`, deterministic."""

    @nn.compact
    def __call__(self, tokens_BxS: jax.Array, cache: KVCache,
                 positions_BxS: jax.Array | None = None,
                 last_only: bool = False) -> tuple[jax.Array, KVCache]:
        """The tokens are the next ones of each row: they are written to cache slots
        [index, index + S) and attend to every filled slot at a position <= theirs.
        `positions_BxS` gives each token's true position, -1 for padding (default:
        index + 0, 1, ...). Returns (logits, updated cache); logits of the last token only
        with `last_only`."""
        c = self.cfg
        if positions_BxS is None:
            positions_BxS = jnp.broadcast_to(cache.index + jnp.arange(tokens_BxS.shape[1])[None],
                                             tokens_BxS.shape)
        view = cache.begin(positions_BxS.astype(jnp.int32))
        positions_BxS = jnp.maximum(view.query_positions, 0)  # padding: any valid position
        x_BxSxD, embed = embed_tokens(self, tokens_BxS, positions_BxS, True)
        bias = position_bias(self, positions_BxS, view.key_positions)
        stack = nn.scan(CachedBlock, variable_axes={'params': 0}, split_rngs={'params': True},
                        in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0),
                        length=c.num_layers, metadata_params={nn.PARTITION_NAME: 'layers'})
        x_BxSxD, layers = stack(c, True, name='layers')(x_BxSxD, positions_BxS, bias, view,
                                                        cache.layers.constrained())
        if last_only:
            x_BxSxD = x_BxSxD[:, -1:]
        return self.head(self, norm(c, 'final_norm')(x_BxSxD), embed), cache.end(view, layers)

    def prefill(self, prompt_BxP: jax.Array, positions_BxP: jax.Array, cache_len: int
                ) -> tuple[jax.Array, KVCache, jax.Array]:
        """The prompts written to a fresh cache of `cache_len` slots: (the logits of each row's
        next token [B, V], the cache, that token's position [B])."""
        cache = init_cache(self.cfg, prompt_BxP.shape[0], cache_len)
        logits_Bx1xV, cache = self(prompt_BxP, cache, positions_BxP, last_only=True)
        return logits_Bx1xV[:, -1], cache, jnp.max(positions_BxP, axis=1) + 1


def embed_tokens(model: Transformer, tokens_BxL: jax.Array, positions_BxL: jax.Array,
                 deterministic: bool) -> tuple[jax.Array, Embed]:
    """Token (+ learned or sinusoidal position) embeddings, dropout; and the token embedding
    module, which a tied head reuses."""
    c = model.cfg
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
    return constrain(x_BxLxD, _ACT), embed


def position_bias(model: Transformer, query_positions_BxS: jax.Array,
                  key_positions_BxT: jax.Array) -> jax.Array | None:
    """The score bias every layer shares (ALiBi, T5 relative), computed once; else None."""
    c = model.cfg
    if c.positions == 'alibi':
        return alibi_bias(query_positions_BxS, key_positions_BxT, c.num_heads)
    if c.positions == 't5_relative':
        return RelativePositionBias(c.num_heads, bidirectional=False,
                                    num_buckets=c.relative_buckets,
                                    max_distance=c.relative_max_distance, init_std=c.init_std,
                                    param_dtype=c.param_dtype,
                                    name='relative_bias')(query_positions_BxS, key_positions_BxT)
    return None


def init_cache(cfg: ModelConfig, batch: int, length: int) -> KVCache:
    """An empty cache of `length` slots for `CachedTransformer`."""
    return KVCache.empty(cfg.num_layers, batch, length, cfg.num_kv_heads, cfg.head_dim,
                         cfg.dtype)


def count_params(cfg: ModelConfig) -> int:
    """Closed-form parameter count of the LM (tests check it against `init`, and against
    public models)."""
    d, v = cfg.d_model, cfg.vocab_size
    total = cfg.num_layers * block_params(cfg) + v * d + norm_params(cfg)
    if cfg.positions == 'learned':
        total += cfg.max_seq_len * d
    if cfg.positions == 't5_relative':
        total += cfg.relative_buckets * cfg.num_heads
    if not cfg.tie_embeddings:
        total += d * v
    return total


def matmul_params(cfg: ModelConfig) -> int:
    """Parameters that take part in a matmul per token: every kernel plus the output head (the
    input embedding is a gather). This is the N of the 6N FLOPs-per-token rule."""
    d, h, k, dh, f = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
    n_in = 1 if cfg.mlp == 'gelu' else 2  # gated MLPs have two input kernels
    per_layer = d * dh * (h + 2 * k) + h * dh * d + n_in * d * f + f * d
    return cfg.num_layers * per_layer + d * cfg.vocab_size


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """MaxText's definition: 6 x matmul parameters + causal attention (QK^T and AV, 2 matmuls x
    2 FLOPs x S^2 H Dh per layer, halved for the mask, x3 for forward + backward) per token."""
    return 6 * matmul_params(cfg) + 6 * cfg.num_layers * cfg.num_heads * cfg.head_dim * seq_len


class DecoderFamily(ModelFamily):
    name = 'decoder'
    decodes = True

    def build(self, cfg: ModelConfig, pipeline: PipelineSchedule = NO_PIPELINE
              ) -> Transformer:
        return Transformer(cfg, pipeline)

    def input_fields(self, data_cfg: Any) -> dict[str, Field]:
        return {k: Field((data_cfg.seq_len,)) for k in ('inputs', 'segment_ids', 'positions')}

    def init_inputs(self, seq_len: int) -> tuple[jax.Array, ...]:
        return (dummy_tokens(seq_len),)

    def apply(self, model: nn.Module, params: Any, batch: Batch, *, deterministic: bool = True,
              rngs: dict[str, jax.Array] | None = None) -> jax.Array:
        return model.apply({'params': params}, batch['inputs'], batch['segment_ids'],
                           batch['positions'], deterministic=deterministic, rngs=rngs)

    def count_params(self, cfg: ModelConfig) -> int:
        return count_params(cfg)

    def flops_per_example(self, cfg: ModelConfig, data_cfg: Any) -> float:
        return flops_per_token(cfg, data_cfg.seq_len) * data_cfg.seq_len

    def decoder(self, model: nn.Module) -> CachedTransformer:
        return CachedTransformer(model.cfg, head=model.head)

    # Hugging Face: GPT-2 (learned positions, LayerNorm, GELU) and LLaMA / Mistral (RoPE,
    # RMSNorm, SwiGLU; Mistral when it has a sliding window).

    def hf_kind(self, m: dict[str, Any]) -> str:
        """'gpt2', 'llama' or 'mistral': the HF layout of the `model` fields `m`."""
        if m['positions'] == 'learned' and m['norm'] == 'layernorm' and m['mlp'] == 'gelu':
            if not m['use_bias'] or m['num_kv_heads'] != m['num_heads'] or m.get('qk_norm'):
                raise hfs.ConversionError('a learned-position GPT-2-style jaxlm model needs '
                                      'use_bias=True, num_kv_heads == num_heads and no qk_norm '
                                      'to be a GPT-2')
            return 'gpt2'
        if m['positions'] == 'rope' and m['norm'] == 'rmsnorm' and m['mlp'] == 'swiglu':
            if m['use_bias'] or m.get('qk_norm'):
                raise hfs.ConversionError('use_bias / qk_norm have no LLaMA/Mistral equivalent')
            return 'mistral' if m.get('sliding_window') else 'llama'
        raise hfs.ConversionError(
            f"no HF architecture for norm={m['norm']!r} mlp={m['mlp']!r} positions="
            f"{m['positions']!r} (GPT-2: layernorm+gelu+learned; LLaMA: rmsnorm+swiglu+rope)")

    def hf_specs(self, m: dict[str, Any]) -> list[hfs.Spec]:
        if self.hf_kind(m) == 'gpt2':
            return self._hf_specs_gpt2(m)
        return self._hf_specs_llama(m)

    def _hf_specs_llama(self, m: dict[str, Any]) -> list[hfs.Spec]:
        d, h, k, dh, f = (m['d_model'], m['num_heads'], m['num_kv_heads'], m['head_dim'],
                          m['mlp_dim'])
        p, att, mlp = 'model.layers.{i}.', ('layers', 'attention'), ('layers', 'mlp')
        return [
            hfs.token_embedding('model.embed_tokens.weight', m),
            hfs.same(p + 'input_layernorm.weight', ('layers', 'attention_norm', 'scale'),
                          (d,), True),
            hfs.linear_in(p + 'self_attn.q_proj.weight', att + ('query', 'kernel'), d, h, dh),
            hfs.linear_in(p + 'self_attn.k_proj.weight', att + ('key', 'kernel'), d, k, dh),
            hfs.linear_in(p + 'self_attn.v_proj.weight', att + ('value', 'kernel'), d, k, dh),
            hfs.linear_out(p + 'self_attn.o_proj.weight', att + ('out', 'kernel'), d, h, dh),
            hfs.same(p + 'post_attention_layernorm.weight',
                          ('layers', 'mlp_norm', 'scale'), (d,), True),
            hfs.transposed(p + 'mlp.gate_proj.weight', mlp + ('gate', 'kernel'), (f, d), True),
            hfs.transposed(p + 'mlp.up_proj.weight', mlp + ('up', 'kernel'), (f, d), True),
            hfs.transposed(p + 'mlp.down_proj.weight', mlp + ('down', 'kernel'), (d, f), True),
            hfs.same('model.norm.weight', ('final_norm', 'scale'), (d,)),
            *hfs.lm_head(m),
        ]

    def _hf_specs_gpt2(self, m: dict[str, Any]) -> list[hfs.Spec]:
        d, h, dh, f = m['d_model'], m['num_heads'], m['head_dim'], m['mlp_dim']
        p, att, mlp = 'transformer.h.{i}.', ('layers', 'attention'), ('layers', 'mlp')
        qkv = tuple(att + (n, 'kernel') for n in ('query', 'key', 'value'))
        qkv_b = tuple(att + (n, 'bias') for n in ('query', 'key', 'value'))
        same = functools.partial(hfs.same, per_layer=True)
        return [
            hfs.token_embedding('transformer.wte.weight', m),
            hfs.same('transformer.wpe.weight', ('position_embed', 'embedding'),
                          (m['max_seq_len'], d)),
            same(p + 'ln_1.weight', ('layers', 'attention_norm', 'scale'), (d,)),
            same(p + 'ln_1.bias', ('layers', 'attention_norm', 'bias'), (d,)),
            # Conv1D weights are [in, out]; c_attn's out is [q | k | v].
            hfs.Spec(p + 'attn.c_attn.weight', qkv, (d, 3 * h * dh),
                          lambda w: [x.reshape(d, h, dh) for x in np.split(w, 3, axis=1)],
                          lambda ws: np.concatenate([x.reshape(d, h * dh) for x in ws], axis=1),
                          True),
            hfs.Spec(p + 'attn.c_attn.bias', qkv_b, (3 * h * dh,),
                          lambda b: [x.reshape(h, dh) for x in np.split(b, 3)],
                          lambda bs: np.concatenate([x.reshape(h * dh) for x in bs]), True),
            hfs.Spec(p + 'attn.c_proj.weight', (att + ('out', 'kernel'),), (h * dh, d),
                          lambda w: [w.reshape(h, dh, d)], lambda ws: ws[0].reshape(h * dh, d),
                          True),
            same(p + 'attn.c_proj.bias', att + ('out', 'bias'), (d,)),
            same(p + 'ln_2.weight', ('layers', 'mlp_norm', 'scale'), (d,)),
            same(p + 'ln_2.bias', ('layers', 'mlp_norm', 'bias'), (d,)),
            same(p + 'mlp.c_fc.weight', mlp + ('up', 'kernel'), (d, f)),
            same(p + 'mlp.c_fc.bias', mlp + ('up', 'bias'), (f,)),
            same(p + 'mlp.c_proj.weight', mlp + ('down', 'kernel'), (f, d)),
            same(p + 'mlp.c_proj.bias', mlp + ('down', 'bias'), (d,)),
            hfs.same('transformer.ln_f.weight', ('final_norm', 'scale'), (d,)),
            hfs.same('transformer.ln_f.bias', ('final_norm', 'bias'), (d,)),
            *hfs.lm_head(m),
        ]

    def hf_config(self, m: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        kind, out = self.hf_kind(m), dict(base)
        if kind == 'gpt2':
            out.update(architectures=['GPT2LMHeadModel'], model_type='gpt2',
                       vocab_size=m['vocab_size'], n_layer=m['num_layers'], n_embd=m['d_model'],
                       n_head=m['num_heads'], n_inner=m['mlp_dim'],
                       n_positions=m['max_seq_len'], layer_norm_epsilon=m['norm_eps'],
                       tie_word_embeddings=m['tie_embeddings'])
            out.setdefault('activation_function', 'gelu_new')
            return out
        if kind == 'mistral':
            out.update(architectures=['MistralForCausalLM'], model_type='mistral',
                       sliding_window=int(m.get('sliding_window', 0) or 0) or None)
        else:
            out.update(architectures=['LlamaForCausalLM'], model_type='llama')
        out.update(vocab_size=m['vocab_size'], num_hidden_layers=m['num_layers'],
                   hidden_size=m['d_model'], num_attention_heads=m['num_heads'],
                   num_key_value_heads=m['num_kv_heads'], head_dim=m['head_dim'],
                   intermediate_size=m['mlp_dim'], max_position_embeddings=m['max_seq_len'],
                   rms_norm_eps=m['norm_eps'], tie_word_embeddings=m['tie_embeddings'],
                   hidden_act='silu', attention_bias=False, mlp_bias=False)
        out.pop('rope_theta', None)
        out.pop('rope_scaling', None)
        out['rope_parameters'] = self._hf_rope(m)
        return out

    def _hf_rope(self, m: dict[str, Any]) -> dict[str, Any]:
        """transformers' `rope_parameters` for the RoPE fields of `m`."""
        rope = {'rope_theta': float(m['rope_theta']), 'rope_type': 'default'}
        rs = dict(m.get('rope_scaling') or {})
        if rs.get('kind', 'none') != 'none':
            rope.update(rope_type=rs['kind'], factor=float(rs['factor']))
            if rs['kind'] == 'llama3':
                rope.update(low_freq_factor=float(rs['low_freq_factor']),
                            high_freq_factor=float(rs['high_freq_factor']),
                            original_max_position_embeddings=int(rs['original_max_seq_len']))
        return rope


FAMILY = DecoderFamily()
