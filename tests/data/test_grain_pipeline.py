"""Tests for the packed, resumable grain pipeline (jaxlm/data/pipeline.py) on the corpus source
with the language-modelling objective."""

import gc
import json
import random

import numpy as np
import pytest
from ml_collections import ConfigDict

from jaxlm.data import corpus, documents, pipeline
from jaxlm.data.chunking import ChunkSource
from jaxlm.data.tokenizers import ByteTokenizer
from jaxlm.objectives.lm import LanguageModeling

SEQ_LEN = 32
KEYS = {"inputs": np.int32, "targets": np.int32, "segment_ids": np.int32,
        "positions": np.int32, "loss_mask": np.float32}


def _write_corpus(path, n_docs=120):
    """JSONL docs whose words are '<3-digit doc id><3 letters>': any window of >= 9
    characters names exactly one document."""
    rng = random.Random(0)
    with open(path, "w") as f:
        for i in range(n_docs):
            words = [f"{i:03d}" + "".join(rng.choices("abcdefgh", k=3))
                     for _ in range(rng.randint(1, 25))]
            f.write(json.dumps({"text": " ".join(words)}) + "\n")
    return path


def _cfg(corpus_file, tmp_path, **overrides):
    cfg = ConfigDict({
        "corpus": str(corpus_file), "text_field": "text", "seq_len": SEQ_LEN,
        "global_batch_size": 4, "eval_fraction": 0.1, "num_eval_batches": 3,
        "tokenizer": {"kind": "byte", "vocab_size": 259, "path": ""},
        "data_dir": "", "cache_dir": str(tmp_path / "cache"), "num_workers": 0,
    })
    cfg.update(overrides)
    return cfg


def _build(data_cfg, **kwargs):
    return pipeline.build_pipeline(data_cfg, LanguageModeling(), **kwargs)


@pytest.fixture
def corpus_file(tmp_path):
    return _write_corpus(tmp_path / "corpus.jsonl")


def _doc_tokens(cfg):
    """Token strings ',2,...,1,' of the train and eval documents."""
    train, held, _ = corpus.load_documents(cfg)
    tok = ByteTokenizer()

    def as_str(doc):
        return "," + ",".join(map(str, [2, *tok.encode(doc), 1])) + ","
    return [as_str(d) for d in train], [as_str(d) for d in held]


def _segments(batch):
    """Yields each packed segment's token string (inputs plus its last target)."""
    for row in range(batch["inputs"].shape[0]):
        seg = batch["segment_ids"][row]
        for s in np.unique(seg[seg > 0]):
            idx = np.flatnonzero(seg == s)
            toks = [*batch["inputs"][row, idx], batch["targets"][row, idx[-1]]]
            yield "," + ",".join(map(str, toks)) + ","


def _check_batch(batch, rows):
    assert set(batch) == set(KEYS)
    for key, dtype in KEYS.items():
        assert batch[key].shape == (rows, SEQ_LEN) and batch[key].dtype == dtype, key
    seg, pos = batch["segment_ids"], batch["positions"]
    np.testing.assert_array_equal(batch["loss_mask"], (seg != 0).astype(np.float32))
    for r in range(rows):
        n = int((seg[r] > 0).sum())
        assert n > 0 and (seg[r, n:] == 0).all(), "padding only at the end"
        assert (batch["inputs"][r, n:] == 0).all()
        ids = seg[r, :n]
        # Segments are contiguous runs numbered 1, 2, ... and positions restart at 0.
        assert ids[0] == 1 and set(np.diff(ids)) <= {0, 1}
        for s in np.unique(ids):
            idx = np.flatnonzero(ids == s)
            np.testing.assert_array_equal(pos[r, idx], np.arange(len(idx)))
            # Next-token targets within the segment.
            np.testing.assert_array_equal(batch["targets"][r, idx[:-1]],
                                          batch["inputs"][r, idx[1:]])


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_batches_are_well_formed_and_from_single_documents(corpus_file, tmp_path):
    cfg = _cfg(corpus_file, tmp_path)
    pipe = _build(cfg, seed=0)
    train_docs, eval_docs = _doc_tokens(cfg)
    train_seen, eval_seen = set(), set()
    for batch in _take(pipe.train_iter, 20):
        _check_batch(batch, 4)
        for seg in _segments(batch):
            owners = [i for i, d in enumerate(train_docs) if seg in d]
            assert owners, f"segment {seg} is not a slice of one train document"
            train_seen.update(owners)
            assert not any(seg in d for d in eval_docs) or len(seg.split(",")) < 12
    for batch in pipe.eval_batches:
        _check_batch(batch, 4)
        for seg in _segments(batch):
            owners = [i for i, d in enumerate(eval_docs) if seg in d]
            assert owners, f"eval segment {seg} is not from a held-out document"
            eval_seen.update(owners)
    assert len(train_seen) > 20 and len(eval_seen) >= 2

    stats = pipe.stats
    assert stats["documents"] == 120 == stats["train_documents"] + stats["eval_documents"]
    assert 3 <= stats["eval_documents"] <= 25
    assert stats["train_tokens"] == sum(len(d.split(",")) - 2 for d in train_docs)
    assert stats["eval_tokens"] == sum(len(d.split(",")) - 2 for d in eval_docs)


def test_eval_is_identical_across_builds_and_seeds(corpus_file, tmp_path):
    a = _build(_cfg(corpus_file, tmp_path), seed=0)
    b = _build(_cfg(corpus_file, tmp_path), seed=123)
    assert len(a.eval_batches) == 3
    for x, y in zip(a.eval_batches, b.eval_batches, strict=True):
        for key in KEYS:
            np.testing.assert_array_equal(x[key], y[key])
    # Different seeds shuffle training differently.
    assert not np.array_equal(next(a.train_iter)["inputs"], next(b.train_iter)["inputs"])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_train_iterator_resumes_exactly(corpus_file, tmp_path, num_workers):
    cfg = _cfg(corpus_file, tmp_path, num_workers=num_workers)
    first = _build(cfg, seed=7)
    _take(first.train_iter, 5)
    state = json.loads(json.dumps(first.train_iter.get_state()))  # must be JSON-able
    expected = _take(first.train_iter, 6)
    resumed = _build(cfg, seed=7)
    resumed.train_iter.set_state(state)
    for want, got in zip(expected, _take(resumed.train_iter, 6), strict=True):
        for key in KEYS:
            np.testing.assert_array_equal(want[key], got[key])
    del first, resumed
    gc.collect()  # shut mp workers down before the next test


def test_process_shards_are_disjoint_halves(corpus_file, tmp_path):
    cfg = _cfg(corpus_file, tmp_path)
    single = _build(cfg, seed=0)
    shards = [_build(cfg, seed=0, process_index=i, process_count=2)
              for i in range(2)]
    seen = []
    for shard in shards:
        segs = set()
        for batch in _take(shard.train_iter, 30):  # > 1 epoch of each half
            _check_batch(batch, 2)
            segs.update(s for s in _segments(batch) if len(s.split(",")) >= 12)
        seen.append(segs)
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    # Eval: the two processes' rows interleave back into the global eval batch.
    for i, full in enumerate(single.eval_batches):
        for key in KEYS:
            np.testing.assert_array_equal(shards[0].eval_batches[i][key], full[key][0::2])
            np.testing.assert_array_equal(shards[1].eval_batches[i][key], full[key][1::2])


def test_at_least_one_eval_document(corpus_file, tmp_path):
    pipe = _build(_cfg(corpus_file, tmp_path, eval_fraction=0.0), seed=0)
    assert pipe.stats["eval_documents"] == 1 and len(pipe.eval_batches) == 3


def test_config_errors(corpus_file, tmp_path):
    with pytest.raises(ValueError, match="global_batch_size"):
        _build(_cfg(corpus_file, tmp_path), seed=0, process_count=3)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"{not json\n" + b'{"x": 1}\n' + b"\xff\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl.*'malformed_json': 1.*'missing_field': 1"):
        _build(_cfg(bad, tmp_path), seed=0)


def test_tokenizer_only_matches_pipeline(corpus_file, tmp_path):
    cfg = _cfg(corpus_file, tmp_path, tokenizer={"kind": "sentencepiece", "vocab_size": 300,
                                           "path": ""})
    pipe = _build(cfg, seed=0)
    tok = documents.tokenizer_only(cfg)
    assert tok.model_path == pipe.tokenizer.model_path
    assert tok.model_path.is_relative_to(tmp_path / "cache")


def test_tiny_shakespeare_sentencepiece(shared_data_dir, tmp_path):
    cfg = _cfg("tiny_shakespeare", tmp_path, data_dir=str(shared_data_dir), seq_len=128,
               global_batch_size=8, eval_fraction=0.05, num_eval_batches=2,
               tokenizer={"kind": "sentencepiece", "vocab_size": 512, "path": ""})
    pipe = _build(cfg, seed=0)
    stats = pipe.stats
    assert stats["documents"] == 7222 and sum(stats["skipped"].values()) == 0
    assert 0.03 < stats["eval_documents"] / stats["documents"] < 0.07
    assert pipe.tokenizer.vocab_size == 512
    batch = next(pipe.train_iter)
    assert batch["inputs"].shape == (8, 128) and batch["loss_mask"].mean() > 0.8
    text = pipe.tokenizer.decode(batch["inputs"][0])
    assert text.count(" ") > 10 and "\n" in text  # real lines of verse


def test_chunks_cover_every_target_once():
    docs = documents.FlatDocuments.encode(["abcdefghij", "xy"], ByteTokenizer())
    source, n_tokens = ChunkSource(docs, ByteTokenizer().bos_id, 4), int(docs.lengths.sum()) + 2
    tokens = [2, *ByteTokenizer().encode("abcdefghij"), 1]
    chunks = [source[i] for i in range(len(source))]
    assert n_tokens == len(tokens) + 4 and len(chunks) == 4
    assert all(len(c["inputs"]) <= 4 for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c["targets"] for c in chunks[:3]]), tokens[1:])
    np.testing.assert_array_equal(chunks[3]["inputs"], [2, *ByteTokenizer().encode("xy")])
