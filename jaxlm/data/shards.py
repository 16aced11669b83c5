"""Pre-tokenized token shards (as written by `data_pipelines.tokenize.write_token_shards`).

A shards directory holds ArrayRecord files whose records are whole documents (little-endian int32
token ids ending with EOS, in a seeded shuffled order), a `<shard>.lengths.npy` of record lengths
beside each, the tokenizer the tokens were made with, and `index.json` tying them together. The
training pipeline reads them with `config.data.source = 'shards'` and `config.data.shards_dir`, as
`TokenDocuments` (jaxlm/data/documents.py) that the objective cuts into examples.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np

from jaxlm.data import tokenizers
from jaxlm.data.documents import Split

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


class ShardDocuments:
    """`TokenDocuments` (jaxlm/data/documents.py) read lazily from the ArrayRecord shards: document
    i is record `records[i]`; only the record table lives in memory, and it pickles cheaply to
    grain workers, which reopen the files."""

    def __init__(self, paths: list[str], records: np.ndarray, lengths: np.ndarray):
        self.paths, self.records, self.lengths = paths, records, lengths
        self._source = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, '_source': None}  # file handles are reopened in each worker

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> np.ndarray:
        if self._source is None:
            import grain  # here: reading the shard tokenizer must not need grain

            self._source = grain.sources.ArrayRecordDataSource(self.paths)
        return decode_record(self._source[int(self.records[index])])


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


def open_shards(shards_dir: str, eval_fraction: float) -> Split:
    """The shards' records split into train and eval documents by `eval_fraction`."""
    index = read_index(shards_dir)
    paths = [os.path.join(shards_dir, s['file']) for s in index['shards']]
    lengths = np.concatenate([np.load(p + LENGTHS_SUFFIX) for p in paths]).astype(np.int64)
    if len(lengths) < 2:
        raise ValueError(f'{shards_dir}: {len(lengths)} document(s); need 2 for a train/eval split')
    held = _held_out(len(lengths), eval_fraction)
    stats = {'shards_dir': shards_dir, 'files': paths, 'documents': len(lengths),
             'tokenizer': index['tokenizer']}
    splits = []
    for name, mask in (('train', ~held), ('eval', held)):
        records = np.flatnonzero(mask)
        splits.append(ShardDocuments(paths, records, lengths[records]))
        stats[f'{name}_documents'] = len(records)
    return Split(load_tokenizer(shards_dir), splits[0], splits[1], stats)
