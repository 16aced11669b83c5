"""Training from pre-tokenized token shards (`config.data.source = 'shards'`)."""

import itertools
import json

import grain
import jax
import numpy as np
import pytest
from conftest import small_config, train_losses

from data_pipelines.document import Document
from data_pipelines.tokenize import train_tokenizer, write_token_shards
from jaxlm import config as config_lib
from jaxlm.data import pipeline, shards, sources
from jaxlm.data.chunking import ChunkSource
from jaxlm.data.documents import FlatDocuments, tokenizer_only
from jaxlm.inference.load import load_run
from jaxlm.objectives.lm import LanguageModeling
from jaxlm.trainer.loop import train

VOCAB = 384
SEQ_LEN = 32


def serial_map(fn, items):
    return list(map(fn, items))


@pytest.fixture(scope='module')
def documents(shared_data_dir):
    path = sources.resolve_corpus('tiny_shakespeare', str(shared_data_dir))
    return list(itertools.islice(sources.read_documents(path), 1500))


def build_shards(kind, documents, root):
    inputs = []
    for s in range(2):
        inputs.append(str(root / f'in{s}.jsonl'))
        with open(inputs[-1], 'w') as f:
            for i, text in enumerate(documents[s::2]):
                f.write(json.dumps(Document(f'{s}:{i}', text).to_json()) + '\n')
    tok = train_tokenizer(documents, str(root / 'tok'), kind, VOCAB)
    write_token_shards(inputs, tok, str(root / 'shards'), 3, 0, serial_map)
    return str(root / 'shards')


@pytest.fixture(scope='module', params=['sentencepiece', 'hf_bpe'])
def shards_dir(request, documents, tmp_path_factory):
    return build_shards(request.param, documents, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope='module')
def spm_shards_dir(documents, tmp_path_factory):
    """For tests whose subject does not depend on the tokenizer kind."""
    return build_shards('sentencepiece', documents, tmp_path_factory.mktemp('spm'))


def _build(data_cfg, **kwargs):
    return pipeline.build_pipeline(data_cfg, LanguageModeling(), **kwargs)


def shards_config(data_dir, shards_dir, **mesh):
    cfg = small_config(data_dir, **mesh)
    cfg.data.update(source='shards', shards_dir=shards_dir, corpus='')
    cfg.model.vocab_size = VOCAB
    return cfg


def test_curated_shards_experiment_reads_the_shards_vocabulary(spm_shards_dir):
    from experiments import curated_shards

    cfg = curated_shards.get_config(spm_shards_dir)
    assert (cfg.data.source, cfg.data.shards_dir, cfg.model.vocab_size) == (
        'shards', spm_shards_dir, VOCAB)
    config_lib.validate(cfg, 8)


def test_chunks_are_the_corpus_pipelines_chunks_of_the_shard_documents(shards_dir):
    """Train and eval chunks together are exactly what the corpus path cuts from the same
    documents, and stitched back together they decode to the documents."""
    split = shards.open_shards(shards_dir, 0.05)
    tok, stats = split.tokenizer, split.stats
    train_src, eval_src = (ChunkSource(d, tok.bos_id, SEQ_LEN) for d in (split.train, split.eval))
    index = shards.read_index(shards_dir)
    records = [shards.decode_record(r) for r in grain.sources.ArrayRecordDataSource(
        [f'{shards_dir}/{s["file"]}' for s in index['shards']])]
    texts = [tok.decode(r[:-1].tolist()) for r in records]
    ref = ChunkSource(FlatDocuments.encode(texts, tok), tok.bos_id, SEQ_LEN)

    def chunks(src):
        return [tuple(src[i]['inputs'].tolist()) + (int(src[i]['targets'][-1]),)
                for i in range(len(src))]
    assert sorted(chunks(train_src) + chunks(eval_src)) == sorted(chunks(ref))
    assert stats['train_documents'] + stats['eval_documents'] == len(records) == 1500
    assert 0 < stats['eval_documents'] < 150
    # Stitch each document's chunks (they overlap by one token) and decode.
    by_record = {}
    for src in (train_src, eval_src):
        for i in range(len(src)):
            chunk = src[i]
            by_record.setdefault(int(src.docs.records[src.doc[i]]), []).append(
                (int(src.begins[i]), chunk['inputs'].tolist() + [int(chunk['targets'][-1])]))
    decoded = {}
    for record, parts in by_record.items():
        ids = [t for _, part in sorted(parts) for t in part[:-1]] + [sorted(parts)[-1][1][-1]]
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        decoded[record] = tok.decode(ids)
    assert [decoded[r] for r in sorted(decoded)] == texts


def test_pipeline_batches_resume_and_shard_across_processes(spm_shards_dir, shared_data_dir):
    data_cfg = shards_config(shared_data_dir, spm_shards_dir).data
    pipe = _build(data_cfg, seed=0)
    first = [next(pipe.train_iter) for _ in range(2)]
    assert {k: (v.shape, v.dtype) for k, v in first[0].items()} == {
        k: ((16, SEQ_LEN), np.dtype(t)) for k, t in (
            ('inputs', 'int32'), ('targets', 'int32'), ('segment_ids', 'int32'),
            ('positions', 'int32'), ('loss_mask', 'float32'))}
    state = pipe.train_iter.get_state()
    expected = [next(pipe.train_iter) for _ in range(2)]
    resumed = _build(data_cfg, seed=0).train_iter
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        assert all(np.array_equal(got[k], want[k]) for k in want)
    halves = [_build(data_cfg, seed=0, process_index=p, process_count=2)
              for p in range(2)]
    rows = [next(h.train_iter)['inputs'] for h in halves]
    assert rows[0].shape == (8, SEQ_LEN) and not np.array_equal(rows[0], rows[1])
    # Eval batches are global batches; process p holds rows p::2.
    eval_rows = pipe.eval_batches[0]['inputs']
    for p, h in enumerate(halves):
        np.testing.assert_array_equal(h.eval_batches[0]['inputs'], eval_rows[p::2])


def test_worker_processes_read_the_shards_and_resume_exactly(spm_shards_dir, shared_data_dir):
    """The chunk source pickles to grain's worker processes, which reopen the ArrayRecord files."""
    data_cfg = shards_config(shared_data_dir, spm_shards_dir).data
    data_cfg.num_workers = 2
    it = _build(data_cfg, seed=0).train_iter
    next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(2)]
    resumed = _build(data_cfg, seed=0).train_iter
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        assert all(np.array_equal(got[k], want[k]) for k in want)
    assert expected[0]['loss_mask'].sum() > 0


def test_trains_from_shards_and_the_run_carries_their_tokenizer(shards_dir, shared_data_dir,
                                                                tmp_path):
    cfg = shards_config(shared_data_dir, shards_dir)
    cfg.num_train_steps = 6
    train(cfg, str(tmp_path), devices=jax.devices()[:1])
    losses = train_losses(tmp_path)
    assert sorted(losses) == list(range(1, 7)) and all(np.isfinite(list(losses.values())))
    assert losses[6] < losses[1]
    tok_file = shards.read_index(shards_dir)['tokenizer']['file']
    assert (tmp_path / tok_file).read_bytes() == open(f'{shards_dir}/{tok_file}', 'rb').read()
    run_tok, shard_tok = load_run(str(tmp_path)).tokenizer, shards.load_tokenizer(shards_dir)
    text = 'KING RICHARD III: Now is the winter of our discontent, 1592.'
    assert run_tok.encode(text) == shard_tok.encode(text)
    assert tokenizer_only(cfg.data).encode(text) == shard_tok.encode(text)


def test_bad_shards_config_is_named(shared_data_dir, tmp_path):
    cfg = small_config(shared_data_dir)
    cfg.data.source = 'shards'
    with pytest.raises(config_lib.ConfigError, match='data.shards_dir'):
        config_lib.validate(cfg, 1)
    cfg.data.source = 'parquet'
    with pytest.raises(config_lib.ConfigError, match='data.source'):
        config_lib.validate(cfg, 1)
    with pytest.raises(FileNotFoundError, match='has no index.json'):
        shards.open_shards(str(tmp_path), 0.05)
