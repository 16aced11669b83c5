"""Best-fit-decreasing packing: every example once, whole, in a row it fits; and packed rows give
every token the loss it has when its example runs alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxlm.data.packing import best_fit_decreasing, pack
from jaxlm.models.config import ModelConfig
from jaxlm.models.decoder import Transformer


def test_best_fit_decreasing_places_every_example_once_within_capacity():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 33, 200).tolist()
    bins = best_fit_decreasing(lengths, 32)
    assert sorted(i for b in bins for i in b) == list(range(200))
    assert all(sum(lengths[i] for i in b) <= 32 for b in bins)
    # Any-fit: no two rows are both at most half full (one would have taken the other's).
    assert sum(sum(lengths[i] for i in b) <= 16 for b in bins) <= 1
    assert best_fit_decreasing([5, 4, 3, 3], 8) == [[0, 2], [1, 3]]  # 5+3, 4+3: best fit
    with pytest.raises(ValueError, match=r'\[1, 8\]'):
        best_fit_decreasing([9], 8)


def test_packed_per_token_losses_equal_the_unpacked_ones():
    cfg = ModelConfig(vocab_size=50, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                      head_dim=8, mlp_dim=64, max_seq_len=32, dtype='float32')
    model = Transformer(cfg)
    params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))['params'])
    rng = np.random.default_rng(1)
    examples = []
    for n in rng.integers(3, 17, 12):
        tokens = rng.integers(1, 50, n).astype(np.int32)
        examples.append((tokens, np.arange(n) >= n // 2))  # the second half is the answer
    rows = pack(examples, 16)
    assert rows['inputs'].shape[0] < len(examples)  # rows hold several examples

    def token_losses(inputs, targets, segment_ids, positions):
        logits = model.apply({'params': params}, inputs, segment_ids, positions)
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]

    packed = np.asarray(token_losses(rows['inputs'], rows['targets'], rows['segment_ids'],
                                     rows['positions']))
    assert rows['loss_mask'].sum() == sum(int(m[1:].sum()) for _, m in examples)
    for tokens, mask in examples:
        alone = np.asarray(token_losses(tokens[None, :-1], tokens[None, 1:],
                                        np.ones((1, len(tokens) - 1), np.int32),
                                        np.arange(len(tokens) - 1)[None]))[0]
        # The same example in its packed row: find it by its segment and first inputs.
        r, start = _find(rows, tokens)
        n = len(tokens) - 1
        np.testing.assert_allclose(packed[r, start:start + n], alone, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(rows['loss_mask'][r, start:start + n], mask[1:])
    assert (rows['segment_ids'] == 0).sum() == rows['inputs'].size - sum(
        len(t) - 1 for t, _ in examples)  # everything else is padding


def _find(rows, tokens):
    n = len(tokens) - 1
    for r in range(rows['inputs'].shape[0]):
        for start in np.flatnonzero(rows['positions'][r] == 0):
            if np.array_equal(rows['inputs'][r, start:start + n], tokens[:-1]) and \
                    rows['positions'][r, start + n - 1] == n - 1:
                return r, start
    raise AssertionError('example not packed')
