"""Growing the vocabulary for new special tokens keeps every existing token's parameters and
logits."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import linen as nn

from jaxlm.models.config import ModelConfig
from jaxlm.models.decoder import Transformer
from jaxlm.models.vocab import grow_vocab

CFG = ModelConfig(vocab_size=40, num_layers=1, d_model=16, num_heads=2, num_kv_heads=1,
                  head_dim=8, mlp_dim=32, max_seq_len=8, dtype='float32')
TOKENS = np.array([[3, 7, 1, 39, 0]], np.int32)


@pytest.mark.parametrize('tied', [False, True])
def test_existing_rows_and_logits_are_unchanged(tied):
    cfg = dataclasses.replace(CFG, tie_embeddings=tied)
    params = jax.device_get(nn.unbox(Transformer(cfg).init(jax.random.key(0), TOKENS)['params']))
    grown = grow_vocab(params, 44)
    big = dataclasses.replace(cfg, vocab_size=44)
    shapes = jax.tree.map(np.shape, nn.unbox(Transformer(big).init(jax.random.key(0),
                                                                    TOKENS)['params']))
    assert jax.tree.map(np.shape, grown) == shapes  # loads into the grown model
    np.testing.assert_array_equal(grown['token_embed']['embedding'][:40],
                                  params['token_embed']['embedding'])
    new_rows = grown['token_embed']['embedding'][40:]
    np.testing.assert_allclose(new_rows, np.broadcast_to(
        params['token_embed']['embedding'].mean(0, keepdims=True), new_rows.shape), rtol=1e-6)
    if not tied:
        np.testing.assert_array_equal(grown['lm_head'][:, :40], params['lm_head'])
    old = Transformer(cfg).apply({'params': params}, TOKENS)
    new = Transformer(big).apply({'params': grown}, TOKENS)
    np.testing.assert_allclose(new[..., :40], old, rtol=1e-6, atol=1e-7)  # the old tokens'


def test_the_vocabulary_only_grows():
    params = {'token_embed': {'embedding': np.zeros((40, 16), np.float32)}}
    with pytest.raises(ValueError, match='only grow: 40 -> 39'):
        grow_vocab(params, 39)
