"""Tokenizer training on curated text and ArrayRecord token shards (data_pipelines.tokenize)."""

import gzip
import json
import os

import grain
import numpy as np
import pytest
from sentencepiece import sentencepiece_model_pb2

from data_pipelines.document import Document
from data_pipelines.tokenize import train_tokenizer, write_token_shards
from jaxlm.data import shards

EDGE_CASES = ['  leading spaces and trailing  ', 'digits 1234567890 and 3.14\n\ttabbed\n\n',
              'ünïcödé, 中文, emoji 🎉 and \u00a0nbsp', '', 'x', '\n\nnewlines only\n']
UNSEEN = '𝔘𝔫𝔰𝔢𝔢𝔫 Ꙭ'  # characters that are in no training text: byte fallback


def serial_map(fn, items):
    return list(map(fn, items))


@pytest.fixture(scope='module')
def corpus(shared_data_dir, tmp_path_factory):
    """(documents in input order, three input shards, one gzipped)."""
    path = shared_data_dir / 'text_corpus_mix' / 'reviews' / 'movie_reviews.jsonl'
    with open(path) as f:
        texts = [json.loads(f.readline())['text'] for _ in range(150)] + EDGE_CASES
    root = tmp_path_factory.mktemp('tokenize')
    paths, docs = [], []
    for s, name in enumerate(['a.jsonl', 'b.jsonl.gz', 'c.jsonl']):
        opener = gzip.open if name.endswith('.gz') else open
        with opener(root / name, 'wt', encoding='utf-8') as f:
            for i, text in enumerate(texts[s::3]):
                f.write(json.dumps(Document(f'{name}:{i}', text).to_json()) + '\n')
                docs.append(text)
        paths.append(str(root / name))
    return docs, paths


@pytest.fixture(scope='module')
def tokenizer_paths(corpus, tmp_path_factory):
    docs, _ = corpus
    root = tmp_path_factory.mktemp('tokenizers')
    return {kind: train_tokenizer(iter(docs), str(root / kind), kind, vocab_size=700)
            for kind in ('sentencepiece', 'hf_bpe')}


def read_records(out_dir):
    index = shards.read_index(str(out_dir))
    files = [os.path.join(out_dir, s['file']) for s in index['shards']]
    source = grain.sources.ArrayRecordDataSource(files)
    lengths = np.concatenate([np.load(f + shards.LENGTHS_SUFFIX) for f in files])
    return index, [shards.decode_record(source[i]) for i in range(len(source))], lengths


def test_sentencepiece_is_bpe_with_byte_fallback_and_split_digits(tokenizer_paths):
    proto = sentencepiece_model_pb2.ModelProto()
    with open(tokenizer_paths['sentencepiece'], 'rb') as f:
        proto.ParseFromString(f.read())
    spec = proto.trainer_spec
    assert (spec.model_type, spec.byte_fallback, spec.split_digits, spec.vocab_size) == (
        sentencepiece_model_pb2.TrainerSpec.BPE, True, True, 700)
    tok = shards.tokenizers.SentencePieceTokenizer(tokenizer_paths['sentencepiece'])
    pieces = [tok._sp.id_to_piece(i) for i in tok.encode('year 1999')]
    assert pieces[-4:] == ['1', '9', '9', '9']
    assert any(p.startswith('<0x') for p in map(tok._sp.id_to_piece, tok.encode(UNSEEN)))
    assert tok.decode(tok.encode(UNSEEN)) == UNSEEN


def test_hf_bpe_splits_digits_and_round_trips_any_text(tokenizer_paths):
    from jaxlm.data.hf_tokenizer import HFTokenizer

    tok = HFTokenizer(tokenizer_paths['hf_bpe'])
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.vocab_size) == (0, 1, 2, 700)
    ids = tok.encode('year 1999')
    assert [tok._tok.id_to_token(i) for i in ids[-4:]] == ['1', '9', '9', '9']
    assert tok.decode(tok.encode(UNSEEN)) == UNSEEN


def test_bad_tokenizer_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="'sentencepiece' or 'hf_bpe'"):
        train_tokenizer(['a'], str(tmp_path), kind='wordpiece')
    with pytest.raises(ValueError, match='vocab_size 100 is too small'):
        train_tokenizer(['a'], str(tmp_path), vocab_size=100)
    with pytest.raises(ValueError, match='tokenizer file named'):
        write_token_shards([], str(tmp_path / 'vocab.txt'), str(tmp_path), 1, 0, serial_map)


@pytest.mark.parametrize('kind', ['sentencepiece', 'hf_bpe'])
def test_shards_decode_back_to_the_documents_in_seeded_order(corpus, tokenizer_paths, kind,
                                                             tmp_path):
    docs, paths = corpus
    stats = write_token_shards(paths, tokenizer_paths[kind], str(tmp_path), 3, 7, serial_map)
    index, records, lengths = read_records(tmp_path)
    tok = shards.load_tokenizer(str(tmp_path))
    order = np.random.default_rng(7).permutation(len(docs))
    assert [len(r) for r in records] == lengths.tolist()
    assert all(r[-1] == tok.eos_id and tok.eos_id not in r[:-1] for r in records)
    assert [tok.decode(r[:-1].tolist()) for r in records] == [docs[i] for i in order]
    assert [s['documents'] for s in index['shards']] == [52, 52, 52]
    n_tokens = int(lengths.sum())
    text_bytes = sum(len(d.encode()) for d in docs)
    assert (stats['documents'], stats['tokens'], stats['text_bytes']) == (
        len(docs), n_tokens, text_bytes)
    assert stats['bytes_per_token'] == pytest.approx(text_bytes / (n_tokens - len(docs)))
    assert 2.0 < stats['bytes_per_token'] < 5.0 and stats['encode_mb_per_s'] > 0
    assert not os.path.exists(tmp_path / '_encoded')


def test_writing_is_deterministic_and_seeded(corpus, tokenizer_paths, tmp_path):
    _, paths = corpus
    tok_path = tokenizer_paths['sentencepiece']
    for name, seed in (('a', 0), ('b', 0), ('c', 1)):
        write_token_shards(paths, tok_path, str(tmp_path / name), 2, seed, serial_map)

    def contents(name):
        return {f: (tmp_path / name / f).read_bytes() for f in sorted(os.listdir(tmp_path / name))}
    assert contents('a') == contents('b')
    records_a, records_c = read_records(tmp_path / 'a')[1], read_records(tmp_path / 'c')[1]
    as_bytes = [r.tobytes() for r in records_a]
    assert as_bytes != [r.tobytes() for r in records_c]
    assert sorted(as_bytes) == sorted(r.tobytes() for r in records_c)
