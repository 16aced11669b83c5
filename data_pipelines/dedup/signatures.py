"""Vectorised MinHash signatures.

Each token (word or character) is hashed once; n-gram shingles are combined from token hashes
with a polynomial over uint64 and mixed down to 32 bits. The k permutations are Dietzfelbinger's
multiply-add-shift hashes h_i(x) = ((a_i x + b_i) mod 2^64) >> 32 with random 64-bit a_i, b_i
(strongly universal from 32-bit keys to 32-bit values), evaluated as one [k, shingles] matrix for
a batch of documents. The shift is monotone, so the per-document minimum is taken first (by
`np.minimum.reduceat`) and only the [documents, k] minima are shifted: two uint64 passes over
the matrix plus the minimum.
"""

from __future__ import annotations

import numpy as np

MAX_HASH = np.uint32(0xFFFFFFFF)
_MUL = np.uint64(0x100000001B3)  # FNV-1a 64-bit prime: the polynomial base for n-grams
_COLUMNS_PER_BLOCK = 1 << 14  # bounds the [k, columns] matrix to k * 128 KiB


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mixer (SplitMix64's finaliser); spreads structured keys uniformly."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _word_table() -> np.ndarray:
    table = np.zeros(256, bool)
    for c in b"abcdefghijklmnopqrstuvwxyz0123456789'":
        table[c] = True
    return table


# `[a-z0-9']+` on the lower-cased text: the tokens of near_duplicates/pairs.tsv's jaccard. They are
# ASCII, so on UTF-8 bytes they are the same runs (multi-byte sequences never match).
_IS_WORD_BYTE = _word_table()
_INV_MUL = np.uint64(pow(int(_MUL), -1, 1 << 64))


def _word_hashes(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hash, start offset) of every `[a-z0-9']+` run of the uint8 array, without a
    Python loop.

    A run's hash is the polynomial sum(byte_k * MUL^(k - start)) mod 2^64, read off prefix sums
    of byte_k * MUL^k (MUL is odd, hence invertible mod 2^64), then mixed with its length.
    """
    is_word = _IS_WORD_BYTE[data]
    edges = np.diff(np.concatenate([[False], is_word, [False]]).astype(np.int8))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    powers = np.empty(len(data) + 1, np.uint64)
    powers[0] = 1
    np.cumprod(np.full(len(data), _MUL), out=powers[1:])
    inverse = np.empty(len(data) + 1, np.uint64)
    inverse[0] = 1
    np.cumprod(np.full(len(data), _INV_MUL), out=inverse[1:])
    prefix = np.zeros(len(data) + 1, np.uint64)
    np.cumsum(data.astype(np.uint64) * powers[:-1], out=prefix[1:])
    poly = (prefix[ends] - prefix[starts]) * inverse[starts]
    return _splitmix64(poly ^ (ends - starts).astype(np.uint64)), starts


def token_hashes(texts: list[str], shingle: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hash, document index) of every token of the documents, in order: lower-cased
    `[a-z0-9']+` words, or lower-cased characters. One pass over the batch, not one per text."""
    lowered = [t.lower() for t in texts]
    if shingle == 'word':
        # A newline between documents ends every word at its document's end. surrogatepass:
        # a lone surrogate (from a JSON escape) is hashed as is instead of failing the shard.
        encoded = [t.encode('utf-8', 'surrogatepass') for t in lowered]
        hashes, starts = _word_hashes(np.frombuffer(b'\n'.join(encoded), np.uint8))
        doc_starts = np.cumsum([0] + [len(e) + 1 for e in encoded[:-1]])
        return hashes, np.searchsorted(doc_starts, starts, side='right') - 1
    if shingle == 'char':
        data = ''.join(lowered).encode('utf-32-le', 'surrogatepass')
        codepoints = np.frombuffer(data, '<u4').astype(np.uint64)
        return _splitmix64(codepoints), np.repeat(np.arange(len(texts)), [len(t) for t in lowered])
    raise ValueError(f"shingle must be 'word' or 'char', got {shingle!r}")


def _ngrams(tokens: np.ndarray, n: int) -> np.ndarray:
    """Polynomial hash of every run of n consecutive tokens."""
    count = len(tokens) - n + 1
    combined = np.zeros(max(count, 0), np.uint64)
    if count <= 0:
        return combined
    for j in range(n):
        combined = combined * _MUL + tokens[j:j + count]
    return combined


def shingle_hashes(texts: list[str], shingle: str, ngram_size: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(32-bit hash as uint64, document index) of the documents' n-gram shingles, grouped by
    document. Repeats are kept: a repeat never changes a minimum, and removing it costs a sort.

    A document shorter than `ngram_size` tokens is one shingle; one without tokens has none.
    """
    tokens, owner = token_hashes(texts, shingle)
    combined = _ngrams(tokens, ngram_size)
    within = owner[:len(combined)] == owner[ngram_size - 1:]  # no n-gram spans two documents
    values, owners = [combined[within]], [owner[:len(combined)][within]]
    counts = np.bincount(owner, minlength=len(texts))
    doc_starts = np.cumsum(counts) - counts
    for doc in np.flatnonzero((counts > 0) & (counts < ngram_size)):  # rare: short documents
        start, count = doc_starts[doc], counts[doc]
        values.append(_ngrams(tokens[start:start + count], count))
        owners.append(np.array([doc]))
    values, owners = np.concatenate(values), np.concatenate(owners)
    order = np.argsort(owners, kind='stable')
    return _splitmix64(values[order]) >> np.uint64(32), owners[order]


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of the k hash functions: a odd, both uniform 64-bit."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 << 64, num_perm, dtype=np.uint64, endpoint=False) | np.uint64(1)
    b = rng.integers(0, 1 << 64, num_perm, dtype=np.uint64, endpoint=False)
    return a, b


def signatures(values: np.ndarray, owner: np.ndarray, num_docs: int, a: np.ndarray,
               b: np.ndarray) -> np.ndarray:
    """[documents, k] uint32 MinHash signatures of shingles `values` grouped by `owner`
    (as `shingle_hashes` returns them); a document without shingles gets all MAX_HASH."""
    out = np.full((num_docs, len(a)), MAX_HASH, np.uint32)
    hashed = np.empty((len(a), _COLUMNS_PER_BLOCK), np.uint64)
    for start in range(0, len(values), _COLUMNS_PER_BLOCK):
        x, docs = values[start:start + _COLUMNS_PER_BLOCK], owner[start:start + _COLUMNS_PER_BLOCK]
        block = hashed[:, :len(x)]
        np.multiply(a[:, None], x[None, :], out=block)  # wraps mod 2^64, as intended
        block += b[:, None]
        seg_starts = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])
        block_min = (np.minimum.reduceat(block, seg_starts, axis=1).T >> np.uint64(32))
        seg_docs = docs[seg_starts]  # distinct within a block: owners are contiguous
        out[seg_docs] = np.minimum(out[seg_docs], block_min.astype(np.uint32))
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
