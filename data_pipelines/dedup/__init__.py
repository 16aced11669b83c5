"""Exact and MinHash-LSH near-duplicate removal over the pipeline's shard files."""

from data_pipelines.dedup.exact import ExactDedupConfig, run_exact_dedup
from data_pipelines.dedup.minhash import MinHashConfig, run_minhash_dedup
from data_pipelines.dedup.result import DedupResult

__all__ = ['DedupResult', 'ExactDedupConfig', 'MinHashConfig', 'run_exact_dedup',
           'run_minhash_dedup']
