"""Vectorised MinHash signatures.

Each token (word or character) is hashed once; n-gram shingles are combined from token hashes
with a polynomial over uint64 and mixed down to 32 bits. The k permutations are the universal
hashes h_i(x) = (a_i x + b_i) mod (2^61 - 1), evaluated as one [k, shingles] matrix for a batch
of documents, with the per-document minimum taken by `np.minimum.reduceat`.
"""

from __future__ import annotations

import functools
import hashlib
import re

import numpy as np

MERSENNE_61 = np.uint64((1 << 61) - 1)
MAX_HASH = np.uint32(0xFFFFFFFF)
_MUL = np.uint64(0x100000001B3)  # FNV-1a 64-bit prime: the polynomial base for n-grams
_WORD = re.compile(r"[a-z0-9']+")  # the tokens of near_duplicates/pairs.tsv's jaccard_word5gram
_COLUMNS_PER_BLOCK = 1 << 14  # bounds the [k, columns] matrix to k * 128 KiB


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mixer (SplitMix64's finaliser); spreads structured keys uniformly."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@functools.lru_cache(maxsize=1 << 20)
def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode('utf-8'), digest_size=8).digest(), 'little')


def token_hashes(text: str, shingle: str) -> np.ndarray:
    """uint64 hash per token: lower-cased `[a-z0-9']+` words, or lower-cased characters."""
    text = text.lower()
    if shingle == 'word':
        words = _WORD.findall(text)
        return np.fromiter((_word_hash(w) for w in words), np.uint64, len(words))
    if shingle == 'char':
        codepoints = np.frombuffer(text.encode('utf-32-le'), '<u4').astype(np.uint64)
        return _splitmix64(codepoints)
    raise ValueError(f"shingle must be 'word' or 'char', got {shingle!r}")


def shingle_hashes(text: str, shingle: str, ngram_size: int) -> np.ndarray:
    """Sorted unique 32-bit hashes (as uint64) of the document's n-gram shingle set.

    A document shorter than `ngram_size` tokens is one shingle; one without tokens has none.
    """
    tokens = token_hashes(text, shingle)
    n = min(ngram_size, len(tokens))
    if n == 0:
        return np.zeros(0, np.uint64)
    count = len(tokens) - n + 1
    combined = np.zeros(count, np.uint64)
    for j in range(n):
        combined = combined * _MUL + tokens[j:j + count]
    return np.unique(_splitmix64(combined) >> np.uint64(32))


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of the universal hashes, below 2^32 so that a*x + b never overflows uint64."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 1 << 32, num_perm, dtype=np.uint64)
    b = rng.integers(0, 1 << 32, num_perm, dtype=np.uint64)
    return a, b


def _mod_mersenne61(y: np.ndarray) -> np.ndarray:
    y = (y & MERSENNE_61) + (y >> np.uint64(61))
    return np.where(y >= MERSENNE_61, y - MERSENNE_61, y)


def signatures(shingle_sets: list[np.ndarray], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[documents, k] uint32 MinHash signatures; an empty shingle set gives all MAX_HASH."""
    out = np.full((len(shingle_sets), len(a)), MAX_HASH, np.uint32)
    lengths = np.array([len(s) for s in shingle_sets], np.int64)
    if not lengths.sum():
        return out
    values = np.concatenate(shingle_sets)
    owner = np.repeat(np.arange(len(shingle_sets)), lengths)
    for start in range(0, len(values), _COLUMNS_PER_BLOCK):
        x, docs = values[start:start + _COLUMNS_PER_BLOCK], owner[start:start + _COLUMNS_PER_BLOCK]
        hashed = (_mod_mersenne61(a[:, None] * x[None, :] + b[:, None]) & np.uint64(MAX_HASH))
        seg_starts = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])
        block_min = np.minimum.reduceat(hashed, seg_starts, axis=1).T.astype(np.uint32)
        seg_docs = docs[seg_starts]  # distinct within a block: owners are contiguous
        out[seg_docs] = np.minimum(out[seg_docs], block_min)
    return out


def band_hashes(sigs: np.ndarray, num_bands: int, rows_per_band: int) -> np.ndarray:
    """[documents, bands] uint64 hashes of each band's rows (first bands * rows permutations)."""
    bands = sigs[:, :num_bands * rows_per_band].reshape(len(sigs), num_bands, rows_per_band)
    h = np.zeros(bands.shape[:2], np.uint64)
    for r in range(rows_per_band):
        h = _splitmix64(h * _MUL + bands[:, :, r].astype(np.uint64))
    return h


def candidate_probability(jaccard: float, num_bands: int, rows_per_band: int) -> float:
    """The LSH S-curve: P(two documents share a band) = 1 - (1 - J^r)^b."""
    return 1.0 - (1.0 - jaccard ** rows_per_band) ** num_bands
