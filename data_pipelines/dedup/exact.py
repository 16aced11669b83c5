"""Exact dedup: documents whose normalised text has the same 128-bit hash are one cluster."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re

import numpy as np

from data_pipelines.dedup.bucket_job import MapFn, run_bucket_dedup
from data_pipelines.dedup.result import DedupResult
from data_pipelines.document import Document

_WHITESPACE = re.compile(r'\s+')


@dataclasses.dataclass(frozen=True)
class ExactDedupConfig:
    lowercase: bool = True
    collapse_whitespace: bool = True  # runs of whitespace -> one space, ends stripped
    num_partitions: int = 16


def normalise(text: str, cfg: ExactDedupConfig) -> str:
    if cfg.lowercase:
        text = text.lower()
    if cfg.collapse_whitespace:
        text = _WHITESPACE.sub(' ', text).strip()
    return text


def _text_keys(docs: list[Document], cfg: ExactDedupConfig
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    digests = b''.join(hashlib.blake2b(normalise(d.text, cfg).encode('utf-8', 'surrogatepass'),
                                       digest_size=16).digest() for d in docs)
    halves = np.frombuffer(digests, '<u8').reshape(-1, 2)
    return halves[:, 0], halves[:, 1], np.arange(len(docs), dtype=np.int64)


def run_exact_dedup(shard_paths: list[str], cfg: ExactDedupConfig, work_dir: str,
                    map_fn: MapFn) -> dict[str, DedupResult]:
    """Drops all but the first (shard index, position) document of each identical-text group."""
    return run_bucket_dedup(shard_paths, work_dir, map_fn,
                            functools.partial(_text_keys, cfg=cfg), cfg.num_partitions)
