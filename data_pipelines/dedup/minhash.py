"""Near-duplicate dedup with MinHash LSH: bands of signature rows are hashed into bucket files,
documents sharing a band bucket are candidates, and candidates are clustered with union-find."""

from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np

from data_pipelines.dedup import signatures as sig_lib
from data_pipelines.dedup.bucket_job import MapFn, run_bucket_dedup
from data_pipelines.dedup.result import DedupResult
from data_pipelines.document import Document

log = logging.getLogger(__name__)
SHINGLES = ('word', 'char')
_SCURVE_POINTS = (0.5, 0.7, 0.8)
_BATCH_CHARS = 1 << 21


@dataclasses.dataclass(frozen=True)
class MinHashConfig:
    shingle: str = 'word'  # 'word' | 'char'
    ngram_size: int = 5
    num_bands: int = 14
    rows_per_band: int = 8
    seed: int = 1
    num_partitions: int = 16

    @classmethod
    def preset(cls, name: str, **overrides) -> MinHashConfig:
        """'fineweb': word 5-grams, 14 bands x 8 rows (FineWeb's and datatrove's default)."""
        presets = {'fineweb': dict(shingle='word', ngram_size=5, num_bands=14, rows_per_band=8)}
        if name not in presets:
            raise ValueError(f'unknown MinHash preset {name!r}; known: {sorted(presets)}')
        return cls(**{**presets[name], **overrides})

    @property
    def num_perm(self) -> int:
        return self.num_bands * self.rows_per_band

    def validate(self) -> None:
        if self.shingle not in SHINGLES:
            raise ValueError(f'MinHashConfig.shingle must be one of {SHINGLES}, got '
                             f'{self.shingle!r}')
        for field in ('ngram_size', 'num_bands', 'rows_per_band', 'num_partitions'):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'MinHashConfig.{field} must be a positive integer, got {value!r}')

    def s_curve(self) -> dict[float, float]:
        return {j: sig_lib.candidate_probability(j, self.num_bands, self.rows_per_band)
                for j in _SCURVE_POINTS}


def document_signatures(texts: list[str], cfg: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """([documents, num_perm] uint32 signatures, bool mask of documents with any shingle)."""
    a, b = sig_lib.permutations(cfg.num_perm, cfg.seed)
    sigs, has_shingles = [], []
    for start, stop in _batches([len(t) for t in texts]):
        values, owner = sig_lib.shingle_hashes(texts[start:stop], cfg.shingle, cfg.ngram_size)
        sigs.append(sig_lib.signatures(values, owner, stop - start, a, b))
        has_shingles.append(np.bincount(owner, minlength=stop - start) > 0)
    if not sigs:
        return np.zeros((0, cfg.num_perm), np.uint32), np.zeros(0, bool)
    return np.concatenate(sigs), np.concatenate(has_shingles)


def _batches(lengths: list[int]) -> list[tuple[int, int]]:
    """[start, stop) runs of documents of about _BATCH_CHARS characters in all: large enough to
    amortise NumPy's per-call cost, small enough to bound the per-byte work arrays."""
    bounds, total, start = [], 0, 0
    for i, n in enumerate(lengths):
        total += n
        if total >= _BATCH_CHARS:
            bounds.append((start, i + 1))
            start, total = i + 1, 0
    if start < len(lengths):
        bounds.append((start, len(lengths)))
    return bounds


def _band_keys(docs: list[Document], cfg: MinHashConfig
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sigs, has_shingles = document_signatures([d.text for d in docs], cfg)
    positions = np.flatnonzero(has_shingles)  # shingle-less documents would all collide
    bands = sig_lib.band_hashes(sigs[positions], cfg.num_bands, cfg.rows_per_band)
    band_index = np.broadcast_to(np.arange(cfg.num_bands, dtype=np.uint64), bands.shape)
    pos = np.broadcast_to(positions[:, None], bands.shape)
    return band_index.reshape(-1), bands.reshape(-1), pos.reshape(-1).astype(np.int64)


def run_minhash_dedup(shard_paths: list[str], cfg: MinHashConfig, work_dir: str,
                      map_fn: MapFn) -> dict[str, DedupResult]:
    """Keeps the first (shard index, position) document of each cluster of LSH candidates."""
    cfg.validate()
    curve = ', '.join(f'J={j:.1f}: {p:.3f}' for j, p in cfg.s_curve().items())
    log.info('MinHash LSH %s %d-grams, %d bands x %d rows; candidate probability %s',
             cfg.shingle, cfg.ngram_size, cfg.num_bands, cfg.rows_per_band, curve)
    results = run_bucket_dedup(shard_paths, work_dir, map_fn,
                               functools.partial(_band_keys, cfg=cfg), cfg.num_partitions)
    log.info('MinHash LSH removed %d of the documents in %d shard(s)',
             sum(len(r.removed) for r in results.values()), len(shard_paths))
    return results
