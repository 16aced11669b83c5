"""The T5-style encoder-decoder: parameter counts (closed form, T5.1.1 published sizes), the
encoder's padding mask, packing equivalence and decoder causality."""

import dataclasses
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.models.config import ModelConfig
from jaxlm.models.encoder_decoder import EncoderDecoder, count_params

CFG = ModelConfig(vocab_size=64, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                        head_dim=8, mlp_dim=64, max_seq_len=32, architecture='encoder_decoder',
                        norm_eps=1e-6, mlp='geglu', positions='t5_relative', dtype=jnp.float32)
MODEL = EncoderDecoder(CFG)
_APPLY = jax.jit(MODEL.apply)  # compiled: op-by-op scans are slow on CPU


@pytest.fixture(scope='module')
def params():
    tokens = jnp.zeros((1, 8), jnp.int32)
    return nn.unbox(jax.jit(MODEL.init)(jax.random.PRNGKey(0), tokens, tokens)['params'])


def _logits(params, enc, dec, enc_seg=None, dec_seg=None, enc_pos=None, dec_pos=None):
    def as_array(x):
        return None if x is None else jnp.asarray(x)

    return np.asarray(_APPLY({'params': params}, jnp.asarray(enc), jnp.asarray(dec),
                             as_array(enc_seg), as_array(dec_seg), as_array(enc_pos),
                             as_array(dec_pos)))


def test_count_params_matches_init(params):
    assert sum(x.size for x in jax.tree.leaves(params)) == count_params(CFG)
    assert set(params) == {'token_embed', 'encoder', 'decoder', 'lm_head'}
    assert params['encoder']['layers']['mlp']['gate']['kernel'].shape == (2, 32, 64)


@pytest.mark.parametrize('name,expected', [
    ('t5_small', 76_961_152),   # google/t5-v1_1-small
    ('t5_base', 247_577_856),   # google/t5-v1_1-base
])
def test_public_parameter_counts(name, expected):
    cfg = ModelConfig.from_config(
        importlib.import_module(f'experiments.{name}').get_config().model)
    tokens = jnp.zeros((1, 8), jnp.int32)
    shapes = jax.eval_shape(lambda: EncoderDecoder(cfg).init(jax.random.PRNGKey(0), tokens,
                                                             tokens))
    assert sum(x.size for x in jax.tree.leaves(shapes)) == expected == count_params(cfg)


def test_encoder_padding_is_invisible(params):
    enc = np.array([[5, 6, 7, 8, 0, 0]])
    seg = np.array([[1, 1, 1, 1, 0, 0]])
    dec = np.array([[0, 9, 10]])
    ref = _logits(params, enc, dec, seg)
    other = _logits(params, np.array([[5, 6, 7, 8, 33, 41]]), dec, seg)
    np.testing.assert_allclose(other, ref, atol=1e-6)
    # ... while the real encoder tokens matter.
    assert np.abs(_logits(params, np.array([[5, 6, 7, 9, 0, 0]]), dec, seg) - ref).max() > 1e-4


def test_packed_examples_equal_separate_ones(params):
    enc_a, dec_a = [3, 4, 5], [0, 11, 12, 13]
    enc_b, dec_b = [20, 21, 22, 23], [0, 30, 31]
    alone_a = _logits(params, [enc_a], [dec_a])
    alone_b = _logits(params, [enc_b], [dec_b])
    packed = _logits(params, [enc_a + enc_b + [0]], [dec_a + dec_b + [0]],
                     [[1] * 3 + [2] * 4 + [0]], [[1] * 4 + [2] * 3 + [0]],
                     [[0, 1, 2, 0, 1, 2, 3, 0]], [[0, 1, 2, 3, 0, 1, 2, 0]])
    np.testing.assert_allclose(packed[0, :4], alone_a[0], atol=1e-5)
    np.testing.assert_allclose(packed[0, 4:7], alone_b[0], atol=1e-5)


def test_decoder_is_causal_and_encoder_bidirectional(params):
    enc = np.array([[5, 6, 7, 8, 9]])
    dec = np.array([[0, 9, 10, 11]])
    ref = _logits(params, enc, dec)
    changed = _logits(params, enc, np.array([[0, 9, 40, 11]]))
    np.testing.assert_allclose(changed[0, :2], ref[0, :2], atol=1e-6)
    assert np.abs(changed[0, 2:] - ref[0, 2:]).max() > 1e-4
    # Every decoder position sees the whole encoder, including its last token.
    last = _logits(params, np.array([[5, 6, 7, 8, 50]]), dec)
    assert (np.abs(last - ref).max(axis=-1) > 1e-5).all()


def test_tied_embeddings_share_the_table():
    cfg = dataclasses.replace(CFG, tie_embeddings=True)
    tokens = jnp.zeros((1, 4), jnp.int32)
    shapes = jax.eval_shape(EncoderDecoder(cfg).init, jax.random.PRNGKey(0), tokens, tokens)
    p = nn.unbox(shapes['params'])
    assert 'lm_head' not in p
    assert sum(x.size for x in jax.tree.leaves(p)) == count_params(cfg)
