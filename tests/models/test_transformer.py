"""Defining properties of the decoder: causality, packed-document isolation, GQA, RoPE, dtypes."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.layers.positions import rope, sinusoidal
from jaxlm.models.config import ModelConfig
from jaxlm.models.decoder import Transformer, count_params

BASE = ModelConfig(vocab_size=97, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                         head_dim=8, mlp_dim=64, max_seq_len=32, dtype=jnp.float32)
VARIANTS = {
    'llama': {},
    'gpt2': dict(norm='layernorm', mlp='gelu', positions='learned', tie_embeddings=True,
                 use_bias=True, num_kv_heads=4),
    'mqa_qknorm_sinusoidal': dict(num_kv_heads=1, qk_norm=True, positions='sinusoidal'),
}


class _Jitted:
    """model.apply under jit: eager op-by-op dispatch of a scanned model is ~10x slower."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.module = Transformer(cfg)
        self._apply = jax.jit(self.module.apply, static_argnames='deterministic')

    def apply(self, variables, *args, **kwargs):
        return self._apply(variables, *args, **kwargs)


def _init(cfg, length=16):
    model = _Jitted(cfg)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, length), 0, cfg.vocab_size)
    params = nn.unbox(jax.jit(model.module.init)(jax.random.PRNGKey(0), tokens)['params'])
    return model, params, tokens


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_count_matches_init(variant):
    cfg = dataclasses.replace(BASE, **VARIANTS[variant])
    _, params, _ = _init(cfg)
    assert sum(x.size for x in jax.tree.leaves(params)) == count_params(cfg)


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_causal(variant):
    """Changing token t changes no logit before t."""
    cfg = dataclasses.replace(BASE, **VARIANTS[variant])
    model, params, tokens = _init(cfg)
    logits = model.apply({'params': params}, tokens)
    changed = tokens.at[:, 10].set((tokens[:, 10] + 1) % cfg.vocab_size)
    logits2 = model.apply({'params': params}, changed)
    np.testing.assert_array_equal(logits[:, :10], logits2[:, :10])
    assert not np.allclose(logits[:, 10:], logits2[:, 10:])


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_packed_documents_do_not_see_each_other(variant):
    """Two documents packed in one row (segment ids + reset positions) give the same logits as
    each document alone."""
    cfg = dataclasses.replace(BASE, **VARIANTS[variant])
    model, params, _ = _init(cfg)
    a = jax.random.randint(jax.random.PRNGKey(2), (1, 6), 0, cfg.vocab_size)
    b = jax.random.randint(jax.random.PRNGKey(3), (1, 10), 0, cfg.vocab_size)
    packed = jnp.concatenate([a, b], axis=1)
    seg = jnp.array([[1] * 6 + [2] * 10])
    pos = jnp.array([list(range(6)) + list(range(10))])
    out = model.apply({'params': params}, packed, seg, pos)
    np.testing.assert_allclose(out[:, :6], model.apply({'params': params}, a), atol=1e-5)
    np.testing.assert_allclose(out[:, 6:], model.apply({'params': params}, b), atol=1e-5)


def test_gqa_equals_mha_with_repeated_kv_heads():
    gqa_cfg = BASE
    mha_cfg = dataclasses.replace(BASE, num_kv_heads=BASE.num_heads)
    model, params, tokens = _init(gqa_cfg)
    mha_params = jax.tree.map(lambda x: x, params)
    group = BASE.num_heads // BASE.num_kv_heads
    for name in ('key', 'value'):
        k = params['layers']['attention'][name]['kernel']  # [layers, embed, kv_heads, head_dim]
        mha_params['layers']['attention'][name]['kernel'] = jnp.repeat(k, group, axis=2)
    np.testing.assert_allclose(model.apply({'params': params}, tokens),
                               _Jitted(mha_cfg).apply({'params': mha_params}, tokens),
                               atol=1e-5)


def test_rope_scores_depend_only_on_relative_offset():
    q = jax.random.normal(jax.random.PRNGKey(0), (1, 1, 1, 16))
    k = jax.random.normal(jax.random.PRNGKey(1), (1, 1, 1, 16))
    def score(pq, pk):
        return float(jnp.sum(rope(q, jnp.array([[pq]]), 1e4) * rope(k, jnp.array([[pk]]), 1e4)))
    assert score(3, 1) == pytest.approx(score(13, 11), rel=1e-5)
    assert score(3, 1) != pytest.approx(score(3, 2), rel=1e-3)


def test_sinusoidal_closed_form():
    pe = np.asarray(sinusoidal(jnp.array([[0, 5]]), 8))
    i = np.arange(4)
    np.testing.assert_allclose(pe[0, 1, 0::2], np.sin(5 / 10000 ** (2 * i / 8)), rtol=1e-6)
    np.testing.assert_allclose(pe[0, 1, 1::2], np.cos(5 / 10000 ** (2 * i / 8)), rtol=1e-6)


def test_bf16_compute_keeps_fp32_params_and_logits():
    cfg = dataclasses.replace(BASE, dtype=jnp.bfloat16)
    model, params, tokens = _init(cfg)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    logits = model.apply({'params': params}, tokens)
    assert logits.dtype == jnp.float32
    ref = _Jitted(BASE).apply({'params': params}, tokens)
    np.testing.assert_allclose(logits, ref, atol=0.1)  # bf16 rounding, not a different model


@pytest.mark.parametrize('policy', ['full', 'save_dots', 'save_dots_except_mlp', 'save_qkv_proj'])
def test_remat_changes_memory_not_math(policy):
    model, params, tokens = _init(BASE)
    remat = Transformer(dataclasses.replace(BASE, remat_policy=policy))
    model = model.module
    def loss(m, p):
        return jnp.mean(m.apply({'params': p}, tokens) ** 2)

    g_ref = jax.jit(jax.grad(functools.partial(loss, model)))(params)
    g = jax.jit(jax.grad(functools.partial(loss, remat)))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g_ref, g)


def test_dropout_is_active_only_when_not_deterministic():
    cfg = dataclasses.replace(BASE, dropout_rate=0.5)
    model, params, tokens = _init(cfg)
    det = model.apply({'params': params}, tokens)
    np.testing.assert_array_equal(det, model.apply({'params': params}, tokens))
    rng = {'dropout': jax.random.PRNGKey(0)}
    noisy = model.apply({'params': params}, tokens, deterministic=False, rngs=rng)
    assert not np.allclose(det, noisy)


def test_parameters_carry_logical_axes():
    model = Transformer(BASE)
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                              jnp.zeros((1, 8), jnp.int32)))['params']
    specs = nn.get_partition_spec(boxed)
    assert specs['layers']['attention']['query']['kernel'] == jax.sharding.PartitionSpec(
        'layers', 'embed', 'heads', 'head_dim')
    assert specs['layers']['mlp']['down']['kernel'] == jax.sharding.PartitionSpec(
        'layers', 'mlp', 'embed')
    assert specs['token_embed']['embedding'] == jax.sharding.PartitionSpec('vocab', 'embed')
    assert specs['lm_head'] == jax.sharding.PartitionSpec('embed', 'vocab')
