"""Exact resume of the train iterator for every (source, objective) pair the pipeline builds
(jaxlm/data/pipeline.py): k batches, save the iterator's state, restore it into a freshly built
pipeline, and the next batches are bitwise the same."""

import functools
import itertools

import numpy as np
import pytest
from conftest import small_config
from test_shards import VOCAB, build_shards

from jaxlm.data import pipeline, sources
from jaxlm.objectives import registry as objectives

PAIRS = [('corpus', 'lm'), ('shards', 'lm'), ('corpus', 'span_corruption'),
         ('seqio', 'lm'), ('seqio', 'span_corruption')]


@pytest.fixture(scope='module')
def shards_dir(shared_data_dir, tmp_path_factory):
    path = sources.resolve_corpus('tiny_shakespeare', str(shared_data_dir))
    docs = list(itertools.islice(sources.read_documents(path), 600))
    return build_shards('sentencepiece', docs, tmp_path_factory.mktemp('spm'))


def _config(source, objective, data_dir, shards_dir_fn):
    c = small_config(data_dir)
    c.seed = 3
    if objective == 'span_corruption':
        c.model.update(architecture='encoder_decoder', positions='t5_relative', mlp='geglu',
                       max_seq_len=64)
        c.data.update(objective=objective, inputs_len=64, seq_len=16, extra_ids=20,
                      global_batch_size=4)
    if source == 'shards':
        c.data.update(source=source, shards_dir=shards_dir_fn(), corpus='')
        c.model.vocab_size = VOCAB
    elif source == 'seqio':
        pytest.importorskip('seqio')
        c.data.tokenizer.update(kind='sentencepiece', vocab_size=512)
        prefix = 'jaxlm_span_corruption_' if objective == 'span_corruption' else 'jaxlm_lm_'
        c.data.update(source=source, task=prefix + 'tiny_shakespeare')
    return c


@pytest.mark.parametrize(('source', 'objective'), PAIRS)
def test_train_iterator_resumes_exactly(source, objective, shared_data_dir, request):
    cfg = _config(source, objective, shared_data_dir,
                  functools.partial(request.getfixturevalue, 'shards_dir'))
    first = pipeline.build_data(cfg, objectives.build(cfg))
    for _ in range(2):
        next(first.train_iter)
    state = first.train_iter.get_state()
    expected = [next(first.train_iter) for _ in range(2)]
    resumed = pipeline.build_data(cfg, objectives.build(cfg))
    resumed.train_iter.set_state(state)
    for want in expected:
        got = next(resumed.train_iter)
        assert sorted(got) == sorted(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].tobytes() == want[k].tobytes(), k
    for a, b in zip(first.eval_batches, resumed.eval_batches, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)
