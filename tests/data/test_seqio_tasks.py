"""seqio tasks feed the same trainer: the span-corruption task gives the grain path's batch
layout and trains the encoder-decoder; the LM task feeds the decoder; the mixture samples both
corpora; the train iterator checkpoints and replays."""

import numpy as np
import pytest
from conftest import small_config, train_losses

seqio = pytest.importorskip('seqio')

from jaxlm.data import seqio_tasks  # noqa: E402
from jaxlm.objectives import registry as objectives  # noqa: E402
from jaxlm.trainer.loop import batch_shapes, train  # noqa: E402


def _build(cfg):
    return seqio_tasks.build_seqio_pipeline(cfg.data, objectives.build(cfg), seed=cfg.seed)


def _cfg(data_dir, architecture='encoder_decoder'):
    c = small_config(data_dir)
    c.data.tokenizer.update(kind='sentencepiece', vocab_size=512)
    c.data.update(source='seqio', extra_ids=20, global_batch_size=8)
    if architecture == 'encoder_decoder':
        c.model.update(architecture='encoder_decoder', positions='t5_relative', mlp='geglu',
                       vocab_size=536, max_seq_len=64)
        c.data.update(objective='span_corruption', inputs_len=64, seq_len=16,
                      task=seqio_tasks.SPAN_PREFIX + 'tiny_shakespeare')
    else:
        c.model.vocab_size = 536
        c.data.task = seqio_tasks.LM_PREFIX + 'tiny_shakespeare'
    return c


def test_span_corruption_task_gives_the_grain_layout(shared_data_dir):
    cfg = _cfg(shared_data_dir)
    pipe = _build(cfg)
    batch = next(pipe.train_iter)
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        k: (shape, np.dtype(dtype)) for k, (shape, dtype) in batch_shapes(cfg).items()}
    vocab = pipe.tokenizer.vocab_size + cfg.data.extra_ids
    for row in range(8):
        seg = batch['segment_ids'][row]
        np.testing.assert_array_equal(batch['loss_mask'][row], seg != 0)
        for s in set(np.unique(seg)) - {0}:
            tgt = batch['targets'][row][seg == s]
            np.testing.assert_array_equal(batch['inputs'][row][seg == s],
                                          np.concatenate([[0], tgt[:-1]]))
            assert tgt[0] == vocab - 1 and tgt[-1] == pipe.tokenizer.eos_id
            enc = batch['encoder_inputs'][row][batch['encoder_segment_ids'][row] == s]
            assert enc[-1] == pipe.tokenizer.eos_id and (enc == vocab - 1).sum() == 1

    # The iterator's checkpoint replays the stream.
    state = pipe.train_iter.get_state()
    expected = next(pipe.train_iter)
    pipe.train_iter.set_state(state)
    for k, v in next(pipe.train_iter).items():
        np.testing.assert_array_equal(v, expected[k])


def test_encoder_decoder_trains_through_seqio(shared_data_dir, tmp_path):
    import jax

    cfg = _cfg(shared_data_dir)
    cfg.num_train_steps = 4
    cfg.optimizer.learning_rate = 3e-2
    summary = train(cfg, str(tmp_path), devices=jax.devices()[:1])
    losses = train_losses(tmp_path)
    assert sorted(losses) == [1, 2, 3, 4] and losses[4] < losses[1]
    assert np.isfinite(summary['eval_loss'])


def test_lm_task_and_mixture(shared_data_dir):
    cfg = _cfg(shared_data_dir, architecture='decoder')
    batch = next(_build(cfg).train_iter)
    assert batch['inputs'].shape == (8, 32) and batch['loss_mask'].sum() > 0
    np.testing.assert_array_equal(batch['loss_mask'], batch['segment_ids'] != 0)
    mixture = seqio.get_mixture_or_task(seqio_tasks.MIXTURE)
    assert sorted(t.name for t in mixture.tasks) == sorted(
        seqio_tasks.LM_PREFIX + c for c in seqio_tasks.MIXTURE_RATES)
    assert mixture.get_rate(mixture.tasks[0]) in seqio_tasks.MIXTURE_RATES.values()


def test_task_must_fit_the_model(shared_data_dir):
    cfg = _cfg(shared_data_dir, architecture='decoder')
    cfg.data.task = seqio_tasks.SPAN_PREFIX + 'tiny_shakespeare'
    with pytest.raises(ValueError, match='does not fit data.objective'):
        _build(cfg)
