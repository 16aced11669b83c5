"""Pre-tokenized token shards (as written by `data_pipelines.tokenize.write_token_shards`).

A shards directory holds ArrayRecord files whose records are whole documents (little-endian int32
token ids ending with EOS, in a seeded shuffled order), a `<shard>.lengths.npy` of record lengths
beside each, the tokenizer the tokens were made with, and `index.json` tying them together. The
training pipeline reads them with `config.data.source = 'shards'` and `config.data.shards_dir`.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import grain
import numpy as np

from jaxlm.data import tokenizers
from jaxlm.data.chunking import chunk_spans

INDEX_FILE = 'index.json'
FORMAT = 'jaxlm-token-shards-v1'
TOKEN_DTYPE = np.dtype('<i4')
LENGTHS_SUFFIX = '.lengths.npy'
TOKENIZER_FILES = {'sentencepiece': 'tokenizer.model', 'hf': 'tokenizer.json'}


def copy_tokenizer_files(kind: str, src_dir: str, dest_dir: str) -> None:
    """Copies a tokenizer file and, for 'hf', the tokenizer_config.json naming its special
    tokens (when there is one), so that the copy encodes and decodes exactly as the original."""
    names = [TOKENIZER_FILES[kind]] + (['tokenizer_config.json'] if kind == 'hf' else [])
    for name in names:
        src, dest = os.path.join(src_dir, name), os.path.join(dest_dir, name)
        if os.path.exists(src) and os.path.abspath(src) != os.path.abspath(dest):
            shutil.copyfile(src, dest)


def shard_file_name(index: int, count: int) -> str:
    return f'tokens-{index:05d}-of-{count:05d}.array_record'


def read_index(shards_dir: str) -> dict[str, Any]:
    path = os.path.join(shards_dir, INDEX_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f'data.shards_dir {shards_dir!r} has no {INDEX_FILE}; write shards with '
            'data_pipelines.tokenize.write_token_shards (python -m data_pipelines.curate)')
    with open(path) as f:
        index = json.load(f)
    if index.get('format') != FORMAT:
        raise ValueError(f'{path}: format {index.get("format")!r}, expected {FORMAT!r}')
    return index


def load_tokenizer(shards_dir: str) -> tokenizers.Tokenizer:
    """The tokenizer the shards were written with (a copy kept inside the shards directory)."""
    tok = read_index(shards_dir)['tokenizer']
    return tokenizers.build_tokenizer(tok['kind'], 0, list, None,
                                      os.path.join(shards_dir, tok['file']))


def decode_record(record: bytes) -> np.ndarray:
    return np.frombuffer(record, TOKEN_DTYPE)


class ShardChunkSource:
    """Random-access training chunks read lazily from the ArrayRecord shards.

    Chunk i is tokens [begins[i], ends[i]) of `[bos] + record[records[i]]`; only the small chunk
    table lives in memory, and it pickles cheaply to grain workers.
    """

    def __init__(self, paths: list[str], records: np.ndarray, begins: np.ndarray,
                 ends: np.ndarray, bos_id: int):
        self.paths, self.records, self.begins, self.ends = paths, records, begins, ends
        self.bos_id = bos_id
        self._source = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, '_source': None}  # file handles are reopened in each worker

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if self._source is None:
            self._source = grain.sources.ArrayRecordDataSource(self.paths)
        tokens = decode_record(self._source[int(self.records[index])])
        begin, end = int(self.begins[index]), int(self.ends[index])
        # begin is 0 for a document's first chunk, which starts with bos.
        body = tokens[max(begin - 1, 0):end - 1]
        chunk = np.concatenate([[self.bos_id], body]).astype(np.int32) if begin == 0 else body
        return {'inputs': chunk[:-1], 'targets': chunk[1:]}


def _held_out(num_records: int, eval_fraction: float) -> np.ndarray:
    """Stable pseudo-random eval membership per record (independent of the seed, like the corpus
    split); at least one record on each side."""
    x = np.arange(num_records, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(31))) * np.uint64(0xBF58476D1CE4E5B9)
    score = (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    held = score < eval_fraction
    if not held.any():
        held[np.argmin(score)] = True
    if held.all():
        held[np.argmax(score)] = False
    return held


def load_sources(shards_dir: str, seq_len: int, eval_fraction: float
                 ) -> tuple[tokenizers.Tokenizer, ShardChunkSource, ShardChunkSource, dict]:
    """(tokenizer, train chunks, eval chunks, stats) over the shards; records are split into
    train and eval by `eval_fraction`."""
    index = read_index(shards_dir)
    paths = [os.path.join(shards_dir, s['file']) for s in index['shards']]
    lengths = np.concatenate([np.load(p + LENGTHS_SUFFIX) for p in paths]).astype(np.int64)
    if len(lengths) < 2:
        raise ValueError(f'{shards_dir}: {len(lengths)} document(s); need 2 for a train/eval split')
    tokenizer = load_tokenizer(shards_dir)
    held = _held_out(len(lengths), eval_fraction)
    stats = {'shards_dir': shards_dir, 'files': paths, 'documents': len(lengths),
             'tokenizer': index['tokenizer']}
    sources = []
    for name, mask in (('train', ~held), ('eval', held)):
        records = np.flatnonzero(mask)
        doc, begin, end = chunk_spans(lengths[records] + 1, seq_len)  # + 1: the bos
        sources.append(ShardChunkSource(paths, records[doc], begin, end, tokenizer.bos_id))
        stats[f'{name}_documents'] = len(records)
        stats[f'{name}_tokens'] = int(lengths[records].sum() + len(records))
    return tokenizer, sources[0], sources[1], stats
