"""The shard-parallel, hash-partitioned job behind exact and MinHash dedup.

Pass 1 (one task per input shard): `key_fn` turns the shard's documents into keys (key0, key1,
position); each key goes to bucket file `partition = key1 % num_partitions`. Pass 2 (one task per
partition): documents sharing a key in that partition become edges to the group's first document.
Pass 3 (driver): union-find over the edges; the smallest (shard index, position) of a cluster is
kept. No step holds all keys in memory at once: pass 2 holds one partition's, pass 3 only the
edges (at most one per duplicate document and key, e.g. per LSH band).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Callable
from typing import Any

import numpy as np

from data_pipelines.dedup.result import DedupResult
from data_pipelines.dedup.shard_reader import read_shard
from data_pipelines.dedup.union_find import min_representatives
from data_pipelines.document import Document

MapFn = Callable[[Callable[[Any], Any], list[Any]], list[Any]]
# key_fn(documents) -> (key0, key1, positions): uint64, uint64, int64 arrays of equal length.
KeyFn = Callable[[list[Document]], tuple[np.ndarray, np.ndarray, np.ndarray]]

_BUCKET_DTYPE = np.dtype([('key0', '<u8'), ('key1', '<u8'), ('shard', '<i4'), ('pos', '<i4')])
_POS_BITS = 32  # a node key is shard << 32 | position: int64 order = (shard, position) order


def _bucket_path(work_dir: str, partition: int, shard: int) -> str:
    return os.path.join(work_dir, 'buckets', f'p{partition:05d}', f's{shard:06d}.npy')


def _ids_path(work_dir: str, shard: int) -> str:
    return os.path.join(work_dir, 'ids', f's{shard:06d}.json')


def _edges_path(work_dir: str, partition: int) -> str:
    return os.path.join(work_dir, 'edges', f'p{partition:05d}.npy')


def _write_buckets(task: tuple[int, str], *, key_fn: KeyFn, work_dir: str,
                   num_partitions: int) -> int:
    shard, path = task
    docs = list(read_shard(path))
    if len(docs) >= 1 << _POS_BITS:
        raise ValueError(f'{path}: {len(docs)} documents; a shard holds at most 2**32')
    with open(_ids_path(work_dir, shard), 'w') as f:
        json.dump([d.id for d in docs], f)
    key0, key1, pos = key_fn(docs)
    records = np.empty(len(pos), _BUCKET_DTYPE)
    records['key0'], records['key1'], records['shard'], records['pos'] = key0, key1, shard, pos
    partition = records['key1'] % np.uint64(num_partitions)
    for p in range(num_partitions):
        np.save(_bucket_path(work_dir, p, shard), records[partition == p])
    return len(docs)


def _partition_edges(partition: int, *, work_dir: str, num_shards: int) -> int:
    records = np.concatenate([np.load(_bucket_path(work_dir, partition, s))
                              for s in range(num_shards)])
    order = np.lexsort((records['pos'], records['shard'], records['key1'], records['key0']))
    records = records[order]
    nodes = (records['shard'].astype(np.int64) << _POS_BITS) | records['pos'].astype(np.int64)
    same_as_prev = np.zeros(len(records), bool)
    same_as_prev[1:] = ((records['key0'][1:] == records['key0'][:-1])
                        & (records['key1'][1:] == records['key1'][:-1]))
    # Index of each record's group head: the last position at which a new group started.
    head = np.maximum.accumulate(np.where(same_as_prev, 0, np.arange(len(records))))
    edges = np.stack([nodes[head[same_as_prev]], nodes[same_as_prev]], axis=1)
    np.save(_edges_path(work_dir, partition), edges.astype(np.int64).reshape(-1, 2))
    return len(edges)


def run_bucket_dedup(shard_paths: list[str], work_dir: str, map_fn: MapFn, key_fn: KeyFn,
                     num_partitions: int) -> dict[str, DedupResult]:
    """Runs the three passes; returns {shard path: DedupResult} for every input shard."""
    if num_partitions < 1:
        raise ValueError(f'num_partitions must be >= 1, got {num_partitions}')
    if len(set(shard_paths)) != len(shard_paths):
        raise ValueError('shard_paths lists a shard twice')
    for sub in ('buckets', 'ids', 'edges'):  # a rerun must not read a previous run's files
        shutil.rmtree(os.path.join(work_dir, sub), ignore_errors=True)
    for p in range(num_partitions):
        os.makedirs(os.path.dirname(_bucket_path(work_dir, p, 0)), exist_ok=True)
    os.makedirs(os.path.join(work_dir, 'ids'), exist_ok=True)
    os.makedirs(os.path.join(work_dir, 'edges'), exist_ok=True)

    map_fn(functools.partial(_write_buckets, key_fn=key_fn, work_dir=work_dir,
                             num_partitions=num_partitions), list(enumerate(shard_paths)))
    map_fn(functools.partial(_partition_edges, work_dir=work_dir, num_shards=len(shard_paths)),
           list(range(num_partitions)))

    edges = np.concatenate([np.load(_edges_path(work_dir, p)) for p in range(num_partitions)])
    results = {path: DedupResult() for path in shard_paths}
    if not len(edges):
        return results
    nodes, reps = min_representatives(edges)
    dropped = nodes != reps
    ids: dict[int, list[str]] = {}

    def doc_id(node: int) -> str:
        shard = node >> _POS_BITS
        if shard not in ids:
            with open(_ids_path(work_dir, shard)) as f:
                ids[shard] = json.load(f)
        return ids[shard][node & ((1 << _POS_BITS) - 1)]

    for node, rep in zip(nodes[dropped].tolist(), reps[dropped].tolist(), strict=True):
        results[shard_paths[node >> _POS_BITS]].removed[doc_id(node)] = doc_id(rep)
    return results
