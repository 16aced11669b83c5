"""T5 span corruption in NumPy: T5's lengths and noise-mask semantics, sentinels that undo
exactly, and the grain pipeline's packed encoder-decoder batches (deterministic, resumable)."""

import numpy as np
import pytest
from conftest import small_config

from jaxlm.data.pipeline import build_pipeline
from jaxlm.data.span_corruption import (
    corrupt_spans,
    random_spans_helper,
    random_spans_noise_mask,
)
from jaxlm.objectives.span_corruption import SpanCorruption

VOCAB = 1000


def build_span_corruption_pipeline(data_cfg, **kwargs):
    return build_pipeline(data_cfg, SpanCorruption(), **kwargs)


def test_random_spans_helper_matches_t5():
    # T5's span_corruption: inputs 512 -> 568 raw tokens and 114 targets.
    assert random_spans_helper(512, 0.15, 3.0) == (568, 114)
    assert random_spans_helper(128, 0.15, 3.0) == (141, 29)


@pytest.mark.parametrize('length', [2, 10, 141, 568])
def test_noise_mask_has_t5s_counts_and_layout(length):
    for seed in range(5):
        mask = random_spans_noise_mask(length, 0.15, 3.0, np.random.default_rng(seed))
        num_noise = min(max(round(length * 0.15), 1), length - 1)
        num_spans = max(round(num_noise / 3.0), 1)
        assert mask.shape == (length,) and mask.sum() == num_noise
        starts = np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))
        assert len(starts) == num_spans
        assert not mask[0]  # T5 starts with a non-noise span
        assert mask[-1]  # ... and the interleaving ends with a noise span


def test_mean_span_length_is_three_over_many_examples():
    rng = np.random.default_rng(0)
    masks = [random_spans_noise_mask(568, 0.15, 3.0, rng) for _ in range(50)]
    spans = sum(int((m & ~np.concatenate([[False], m[:-1]])).sum()) for m in masks)
    assert sum(int(m.sum()) for m in masks) / spans == pytest.approx(3.0, rel=0.02)
    # Different examples get different masks.
    assert not np.array_equal(masks[0], masks[1])


def test_sentinels_count_down_from_the_top_and_undo_exactly():
    tokens = np.arange(10, 151, dtype=np.int32)
    inputs, targets = corrupt_spans(tokens, np.random.default_rng(3), 0.15, 3.0, VOCAB)
    in_sentinels = inputs[inputs >= 900]
    np.testing.assert_array_equal(in_sentinels, VOCAB - 1 - np.arange(len(in_sentinels)))
    np.testing.assert_array_equal(targets[targets >= 900], in_sentinels)
    # Replacing each input sentinel by the target span that follows it restores the chunk.
    spans, current = {}, None
    for t in targets:
        if t >= 900:
            current = int(t)
            spans[current] = []
        else:
            spans[current].append(int(t))
    restored = [x for t in inputs for x in (spans[int(t)] if t >= 900 else [int(t)])]
    np.testing.assert_array_equal(restored, tokens)
    assert len(inputs) + len(targets) == len(tokens) + 2 * len(in_sentinels)


@pytest.fixture(scope='module')
def data_cfg(shared_data_dir):
    cfg = small_config(shared_data_dir).data
    cfg.update(objective='span_corruption', inputs_len=64, seq_len=16, global_batch_size=4,
               num_eval_batches=2, extra_ids=20)
    return cfg


def test_pipeline_batches_are_packed_t5_examples(data_cfg):
    pipe = build_span_corruption_pipeline(data_cfg, seed=0)
    batch = next(pipe.train_iter)
    assert {k: v.shape for k, v in batch.items()} == {
        'encoder_inputs': (4, 64), 'encoder_segment_ids': (4, 64), 'encoder_positions': (4, 64),
        'inputs': (4, 16), 'targets': (4, 16), 'segment_ids': (4, 16), 'positions': (4, 16),
        'loss_mask': (4, 16)}
    vocab = pipe.tokenizer.vocab_size + data_cfg.extra_ids
    eos = pipe.tokenizer.eos_id
    for row in range(4):
        seg, dec_seg = batch['encoder_segment_ids'][row], batch['segment_ids'][row]
        assert set(np.unique(seg)) - {0} == set(np.unique(dec_seg)) - {0}
        np.testing.assert_array_equal(batch['loss_mask'][row], dec_seg != 0)
        for s in set(np.unique(dec_seg)) - {0}:
            enc = batch['encoder_inputs'][row][seg == s]
            tgt = batch['targets'][row][dec_seg == s]
            np.testing.assert_array_equal(batch['inputs'][row][dec_seg == s],
                                          np.concatenate([[0], tgt[:-1]]))
            np.testing.assert_array_equal(batch['positions'][row][dec_seg == s],
                                          np.arange(len(tgt)))
            assert enc[-1] == eos and tgt[-1] == eos and tgt[0] == vocab - 1
            assert ((enc >= vocab - data_cfg.extra_ids) & (enc < vocab)).sum() >= 1


def test_pipeline_is_deterministic_and_resumes(data_cfg):
    first = build_span_corruption_pipeline(data_cfg, seed=7)
    for _ in range(2):
        next(first.train_iter)
    state = first.train_iter.get_state()
    expected = next(first.train_iter)
    resumed = build_span_corruption_pipeline(data_cfg, seed=7)
    resumed.train_iter.set_state(state)
    for k, v in next(resumed.train_iter).items():
        np.testing.assert_array_equal(v, expected[k])
    again = build_span_corruption_pipeline(data_cfg, seed=7)
    for k, v in again.eval_batches[1].items():
        np.testing.assert_array_equal(v, first.eval_batches[1][k])


def test_too_short_decoder_is_rejected(data_cfg):
    cfg = data_cfg.copy_and_resolve_references()
    cfg.seq_len = 8
    with pytest.raises(ValueError, match='data.seq_len'):
        build_span_corruption_pipeline(cfg, seed=0)
