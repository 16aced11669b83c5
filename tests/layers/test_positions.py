"""Each positional encoding has its defining property, and every one of them runs in the
decoder-only model selected by `model.positions`."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.layers.positions import (
    RelativePositionBias,
    alibi_bias,
    alibi_slopes,
    relative_position_bucket,
    rope,
    sinusoidal,
)
from jaxlm.models.config import ModelConfig
from jaxlm.models.decoder import Transformer, count_params

CFG = ModelConfig(vocab_size=64, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                        head_dim=8, mlp_dim=64, max_seq_len=32, dtype=jnp.float32)


def test_rope_scores_depend_only_on_relative_offset():
    q, k = jax.random.normal(jax.random.PRNGKey(0), (2, 1, 1, 1, 16))

    def score(i, j):
        qi = rope(q, jnp.array([[i]]), 10000.0)
        kj = rope(k, jnp.array([[j]]), 10000.0)
        return float(jnp.sum(qi * kj))

    for offset in (0, 3, 17):
        scores = [score(p + offset, p) for p in (0, 5, 40, 1000)]
        np.testing.assert_allclose(scores, scores[0], rtol=2e-4)
    assert abs(score(3, 0) - score(9, 0)) > 1e-3  # and it does depend on the offset


def test_alibi_is_linear_in_distance_with_the_papers_slopes():
    np.testing.assert_allclose(alibi_slopes(8), [2.0 ** -(i + 1) for i in range(8)])
    # Not a power of two: the 4-head slopes, then every other 8-head slope (reference code).
    np.testing.assert_allclose(alibi_slopes(6), [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8,
                                                 2 ** -1, 2 ** -3])
    pos = jnp.arange(12)[None]
    bias = np.asarray(alibi_bias(pos, pos, 8))[0]
    i, j = np.meshgrid(np.arange(12), np.arange(12), indexing='ij')
    np.testing.assert_allclose(bias, -alibi_slopes(8)[:, None, None] * np.abs(i - j)[None],
                               rtol=1e-6)
    # Shifting every position changes nothing: only distances matter.
    np.testing.assert_array_equal(alibi_bias(pos + 7, pos + 7, 8), alibi_bias(pos, pos, 8))


def test_sinusoidal_matches_the_closed_form():
    d = 16
    pe = np.asarray(sinusoidal(jnp.arange(50)[None], d))[0]
    p = np.arange(50)[:, None]
    i = np.arange(d // 2)[None]
    np.testing.assert_allclose(pe[:, 0::2], np.sin(p / 10000 ** (2 * i / d)), atol=2e-5)
    np.testing.assert_allclose(pe[:, 1::2], np.cos(p / 10000 ** (2 * i / d)), atol=2e-5)


@pytest.mark.parametrize('bidirectional', [True, False])
def test_t5_buckets_match_transformers(bidirectional):
    torch = pytest.importorskip('torch')
    from transformers.models.t5.modeling_t5 import T5Attention

    relative = np.arange(-300, 300)
    expected = T5Attention._relative_position_bucket(
        torch.tensor(relative), bidirectional=bidirectional, num_buckets=32, max_distance=128)
    got = relative_position_bucket(jnp.asarray(relative), bidirectional, 32, 128)
    np.testing.assert_array_equal(np.asarray(got), expected.numpy())


def test_t5_relative_bias_depends_only_on_offset():
    module = RelativePositionBias(num_heads=3, bidirectional=True, num_buckets=32,
                                  max_distance=128)
    pos = jnp.arange(20)[None]
    params = module.init(jax.random.PRNGKey(0), pos, pos)
    bias = np.asarray(module.apply(params, pos, pos))[0]
    shifted = np.asarray(module.apply(params, pos + 50, pos + 50))[0]
    np.testing.assert_array_equal(bias, shifted)
    for h in range(3):  # Toeplitz: constant along each diagonal
        for off in range(-19, 20):
            diagonal = np.diagonal(bias[h], offset=off)
            np.testing.assert_array_equal(diagonal, diagonal[0])


def test_learned_positions_train_one_vector_per_position():
    cfg = dataclasses.replace(CFG, positions='learned')
    model = Transformer(cfg)
    tokens = jnp.ones((1, 10), jnp.int32)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), tokens)['params'])
    grads = jax.jit(jax.grad(lambda p: model.apply({'params': p}, tokens).sum()))(params)
    g = np.abs(np.asarray(grads['position_embed']['embedding'])).sum(-1)
    assert (g[:10] > 0).all() and (g[10:] == 0).all()


@pytest.mark.parametrize('positions', ['learned', 'sinusoidal', 'rope', 'alibi', 't5_relative'])
def test_every_position_kind_runs_in_the_decoder(positions):
    cfg = dataclasses.replace(CFG, positions=positions)
    model = Transformer(cfg)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, 64)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), tokens)['params'])
    assert sum(x.size for x in jax.tree.leaves(params)) == count_params(cfg)
    apply = jax.jit(model.apply)
    logits = apply({'params': params}, tokens)
    assert logits.shape == (2, 12, 64) and bool(jnp.isfinite(logits).all())
    # Causal whatever the encoding: changing the last token leaves earlier logits alone.
    changed = apply({'params': params}, tokens.at[:, -1].set(5))
    np.testing.assert_allclose(changed[:, :-1], logits[:, :-1], atol=1e-6)
