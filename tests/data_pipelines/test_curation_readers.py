"""Readers: formats, compression, provenance, sharding of one file, and bad input as rejections."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from data_pipelines.configs import source, text_corpus_mix
from data_pipelines.document import Document
from data_pipelines.filters.c4 import C4QualityFilter
from data_pipelines.normalize import Normalizer
from data_pipelines.readers import input_files, read_file, unwrap_paragraphs

RECORDS = [{'text': f'document number {i}', 'url': f'http://x/{i}', 'nested': {'a': 1}}
           for i in range(7)]


def _read(path, fmt='jsonl', **kw):
    return list(read_file(str(path), source='src', licence='CC0', fmt=fmt, rel_path='f', **kw))


@pytest.mark.parametrize('suffix', ['.jsonl', '.jsonl.gz', '.jsonl.zst'])
def test_jsonl_in_every_compression_keeps_provenance(tmp_path, suffix):
    payload = b''.join(json.dumps(r).encode() + b'\n' for r in RECORDS)
    path = tmp_path / f'data{suffix}'
    if suffix.endswith('.gz'):
        payload = gzip.compress(payload)
    elif suffix.endswith('.zst'):
        payload = zstandard.ZstdCompressor().compress(payload)
    path.write_bytes(payload)
    docs = _read(path)
    assert [d.text for d in docs] == [r['text'] for r in RECORDS]
    assert docs[3] == Document('src/f:3', 'document number 3', {
        'source': 'src', 'licence': 'CC0', 'path': 'f', 'index': 3, 'url': 'http://x/3'})


def test_text_field_id_field_and_round_robin_parts(tmp_path):
    path = tmp_path / 'd.jsonl'
    path.write_text(''.join(json.dumps({'body': f't{i}', 'key': f'k{i}'}) + '\n' for i in range(7)))
    parts = [_read(path, text_field='body', id_field='key', part=k, num_parts=3) for k in range(3)]
    assert [[d.id for d in p] for p in parts] == [
        ['src/f/k0', 'src/f/k3', 'src/f/k6'], ['src/f/k1', 'src/f/k4'], ['src/f/k2', 'src/f/k5']]


def test_parquet_and_text_splits(tmp_path):
    pq.write_table(pa.table({'text': ['a', None, 'c'], 'n': [1, 2, 3]}), tmp_path / 't.parquet')
    docs = _read(tmp_path / 't.parquet', fmt='parquet')
    assert docs[0].text == 'a' and docs[0].metadata['n'] == 1
    assert docs[1][1] == 'missing_text_field' and docs[2].id == 'src/f:2'
    (tmp_path / 'b.txt').write_bytes(b'para one\r\nline two\r\n\r\npara two\r\n\r\n\r\nthree')
    assert [d.text for d in _read(tmp_path / 'b.txt', fmt='text', text_split='paragraph')] == [
        'para one\nline two', 'para two', '\nthree']
    chunks = _read(tmp_path / 'b.txt', fmt='text', text_split='chunk', chunk_chars=30)
    assert [d.text for d in chunks] == ['para one\nline two\n\npara two', '\nthree']
    assert len(_read(tmp_path / 'b.txt', fmt='text', text_split='line')) == 4
    assert _read(tmp_path / 'b.txt', fmt='text')[0].text.startswith('para one\r\n')


def test_bad_input_becomes_rejections_with_reasons(tmp_path):
    lines = [json.dumps(r).encode() + b'\n' for r in RECORDS[:3]]
    blob = gzip.compress(b''.join(lines), compresslevel=0)
    (tmp_path / 'cut.jsonl.gz').write_bytes(blob[:10 + len(lines[0]) + 5])
    out = _read(tmp_path / 'cut.jsonl.gz')
    assert out[0].id == 'src/f:0' and out[1][0].id == 'src/f:1'
    assert out[1][1] == 'truncated_or_corrupt_stream' and 'EOFError' in out[1][0].metadata['error']
    z = zstandard.ZstdCompressor().compress(b''.join(lines))
    (tmp_path / 'cut.jsonl.zst').write_bytes(z[:-4])
    assert [r[1] for r in _read(tmp_path / 'cut.jsonl.zst')] == ['truncated_or_corrupt_stream']
    (tmp_path / 'bad.jsonl').write_bytes(b'{"text": 1}\n[1]\n{oops\n{"text": "ok \xff"}\n')
    out = _read(tmp_path / 'bad.jsonl')
    assert [r[1] for r in out[:3]] == ['missing_text_field', 'missing_text_field', 'malformed_json']
    assert out[3].text == 'ok \udcff'  # the invalid byte reaches normalisation as a surrogate
    assert [r[1] for r in _read(tmp_path / 'missing.jsonl')] == ['unreadable_file']


def test_input_files_names_a_pattern_that_matches_nothing(tmp_path):
    (tmp_path / 'a.jsonl').write_text('')
    assert input_files(str(tmp_path), ['*.jsonl']) == [str(tmp_path / 'a.jsonl')]
    with pytest.raises(FileNotFoundError, match="input pattern: 'typo-\\*.jsonl'"):
        input_files(str(tmp_path), ['*.jsonl', 'typo-*.jsonl'])


def test_unwrap_joins_the_lines_of_a_paragraph_and_keeps_paragraph_breaks(tmp_path):
    text = ('It was the best of times, it was\n  the worst of times, it was   \r\nthe age of '
            'wisdom.\n\n\nA second\nparagraph.\n \nThird.\n')
    assert unwrap_paragraphs(text) == ('It was the best of times, it was the worst of times, it '
                                       'was the age of wisdom.\n\n\nA second paragraph.\n \n'
                                       'Third.\n')
    (tmp_path / 'b.txt').write_text(text)
    assert _read(tmp_path / 'b.txt', fmt='text', unwrap_lines=True)[0].text == (
        unwrap_paragraphs(text))
    assert _read(tmp_path / 'b.txt', fmt='text')[0].text == text
    assert source(['*.txt'], 'text', 'PD', gutenberg_body=True).unwrap_lines  # books: on
    assert 'unwrap_lines' not in source(['*.txt'], 'text', 'PD')
    assert not source(['*.txt'], 'text', 'PD', gutenberg_body=True, unwrap_lines=False).unwrap_lines
    assert text_corpus_mix.get_config().sources.books.unwrap_lines


def test_c4_keeps_a_hard_wrapped_book_only_once_unwrapped(shared_data_dir):
    # C4 drops every line without terminal punctuation: a book's 70-character lines mostly are.
    path = shared_data_dir / 'text_corpus_mix' / 'gutenberg' / 'pg84_frankenstein.txt'
    kept = {}
    for unwrap in (False, True):
        docs = [Normalizer()(d) for d in _read(path, fmt='text', gutenberg_body=True,
                                               text_split='chunk', chunk_chars=20_000,
                                               unwrap_lines=unwrap)]
        out = [C4QualityFilter()(d) for d in docs]
        kept[unwrap] = (sum(len(o.text) for o in out if not isinstance(o, str))
                        / sum(len(d.text) for d in docs))
    assert kept[False] < 0.2 and kept[True] > 0.6, kept


def test_a_rejected_row_keeps_its_index_columns_and_why(tmp_path):
    pq.write_table(pa.table({'text': ['a', None], 'url': ['u0', 'u1']}), tmp_path / 't.parquet')
    doc, reason = _read(tmp_path / 't.parquet', fmt='parquet')[1]
    assert (doc.id, reason, doc.text) == ('src/f:1', 'missing_text_field',
                                          '{"text": null, "url": "u1"}')
    assert doc.metadata['index'] == 1 and doc.metadata['columns'] == ['text', 'url']
    assert doc.metadata['error'] == "field 'text' is NoneType, not a string"
