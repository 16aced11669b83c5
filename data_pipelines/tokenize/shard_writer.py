"""Writes curated documents as token shards that jaxlm reads with `data.source = 'shards'`.

Pass 1 (one task per input shard) encodes every document to `tokens + [eos]` in a temporary flat
array. The driver draws one seeded permutation of all documents and cuts it into
`num_output_shards` contiguous runs. Pass 2 (one task per output shard) writes its run as
ArrayRecord records, one document each, with the record lengths beside it. Same inputs, tokenizer
and seed give byte-identical shards whatever the executor.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from typing import Any

import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

from data_pipelines.dedup.bucket_job import MapFn
from data_pipelines.dedup.shard_reader import read_shard
from jaxlm.data import shards, tokenizers

# One record per group: a training chunk is one random read (grain's recommendation).
_WRITER_OPTIONS = 'group_size:1'


def tokenizer_kind(tokenizer_path: str) -> str:
    for kind, name in shards.TOKENIZER_FILES.items():
        if os.path.basename(tokenizer_path) == name:
            return kind
    raise ValueError(f'{tokenizer_path}: expected a tokenizer file named one of '
                     f'{sorted(shards.TOKENIZER_FILES.values())} (from train_tokenizer)')


def _load_tokenizer(tokenizer_path: str) -> tokenizers.Tokenizer:
    return tokenizers.build_tokenizer(tokenizer_kind(tokenizer_path), 0, list, None,
                                      tokenizer_path)


def _encoded_paths(tmp_dir: str, shard: int) -> tuple[str, str]:
    return (os.path.join(tmp_dir, f'tokens-{shard:06d}.npy'),
            os.path.join(tmp_dir, f'offsets-{shard:06d}.npy'))


def _encode_shard(task: tuple[int, str], *, tokenizer_path: str, tmp_dir: str
                  ) -> dict[str, int]:
    shard, path = task
    tok = _load_tokenizer(tokenizer_path)
    pieces, text_bytes = [], 0
    for doc in read_shard(path):
        pieces.append(np.asarray([*tok.encode(doc.text), tok.eos_id], shards.TOKEN_DTYPE))
        text_bytes += len(doc.text.encode('utf-8'))
    lengths = np.array([len(p) for p in pieces], np.int64)
    tokens_path, offsets_path = _encoded_paths(tmp_dir, shard)
    np.save(tokens_path, np.concatenate(pieces) if pieces else np.zeros(0, shards.TOKEN_DTYPE))
    np.save(offsets_path, np.concatenate([[0], np.cumsum(lengths)]))
    return {'documents': len(pieces), 'tokens': int(lengths.sum()), 'bytes': text_bytes}


def _write_output_shard(task: tuple[int, np.ndarray, np.ndarray], *, tmp_dir: str,
                        out_dir: str, num_output_shards: int) -> dict[str, Any]:
    index, src_shards, src_positions = task
    name = shards.shard_file_name(index, num_output_shards)
    loaded: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    writer = ArrayRecordWriter(os.path.join(out_dir, name), _WRITER_OPTIONS)
    lengths = np.zeros(len(src_shards), np.int64)
    for i, (shard, pos) in enumerate(zip(src_shards.tolist(), src_positions.tolist(),
                                         strict=True)):
        if shard not in loaded:  # memory-mapped: only the documents written are read
            loaded[shard] = tuple(np.load(p, mmap_mode='r') for p in _encoded_paths(tmp_dir, shard))
        tokens, offsets = loaded[shard]
        record = np.ascontiguousarray(tokens[offsets[pos]:offsets[pos + 1]])
        writer.write(record.tobytes())
        lengths[i] = len(record)
    writer.close()
    np.save(os.path.join(out_dir, name + shards.LENGTHS_SUFFIX), lengths)
    return {'file': name, 'documents': len(lengths), 'tokens': int(lengths.sum())}


def write_token_shards(shard_paths: list[str], tokenizer_path: str, out_dir: str,
                       num_output_shards: int, seed: int, map_fn: MapFn) -> dict[str, Any]:
    """Tokenizes the documents of `shard_paths` into `out_dir`; returns the statistics that are
    also stored in `out_dir/index.json`."""
    if num_output_shards < 1:
        raise ValueError(f'num_output_shards must be >= 1, got {num_output_shards}')
    kind = tokenizer_kind(tokenizer_path)
    tok = _load_tokenizer(tokenizer_path)
    os.makedirs(out_dir, exist_ok=True)
    tmp_dir = os.path.join(out_dir, '_encoded')
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    start = time.perf_counter()

    encoded = map_fn(functools.partial(_encode_shard, tokenizer_path=tokenizer_path,
                                       tmp_dir=tmp_dir), list(enumerate(shard_paths)))
    encode_s = time.perf_counter() - start
    counts = np.array([e['documents'] for e in encoded], np.int64)
    src_shards = np.repeat(np.arange(len(shard_paths)), counts)
    src_positions = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    order = np.random.default_rng(seed).permutation(int(counts.sum()))
    runs = np.array_split(order, num_output_shards)
    written = map_fn(functools.partial(_write_output_shard, tmp_dir=tmp_dir, out_dir=out_dir,
                                       num_output_shards=num_output_shards),
                     [(i, src_shards[run], src_positions[run]) for i, run in enumerate(runs)])
    shutil.rmtree(tmp_dir)
    shards.copy_tokenizer_files(kind, os.path.dirname(tokenizer_path), out_dir)

    documents = int(counts.sum())
    tokens = sum(e['tokens'] for e in encoded)
    text_bytes = sum(e['bytes'] for e in encoded)
    content_tokens = tokens - documents  # without the eos of each document
    stats = {
        'format': shards.FORMAT, 'seed': seed, 'shards': written,
        'tokenizer': {'kind': kind, 'file': shards.TOKENIZER_FILES[kind],
                      'vocab_size': tok.vocab_size, 'bos_id': tok.bos_id, 'eos_id': tok.eos_id,
                      'pad_id': tok.pad_id},
        'documents': documents, 'tokens': tokens, 'text_bytes': text_bytes,
        'bytes_per_token': text_bytes / max(content_tokens, 1),
        'tokens_per_document': tokens / max(documents, 1),
    }
    with open(os.path.join(out_dir, shards.INDEX_FILE), 'w') as f:
        json.dump(stats, f, indent=2)  # no timings in it: same inputs, same bytes
    return {**stats, 'encode_seconds': encode_s,
            'encode_mb_per_s': text_bytes / 1e6 / max(encode_s, 1e-9)}
