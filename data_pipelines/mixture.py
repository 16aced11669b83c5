"""Mixture weights: each source is up- or down-sampled by its weight, deterministically.

A document of a source with weight w appears floor(w) times, plus once more when a hash of its
id (and the seed) falls below frac(w). Weight 0.5 keeps about half the documents; weight 2.5
emits every document twice and half of them three times. Copies get ids `<id>#<k>`
(`document.copy_id`); `#` is escaped in read ids, so a copy never takes a real document's id.
"""

from __future__ import annotations

import hashlib
import math

from data_pipelines.document import Document, copy_id


def unit_hash(doc_id: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by (id, seed)."""
    key = f'{seed}:{doc_id}'.encode('utf-8', 'surrogatepass')
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, 'little') / 2.0 ** 64


def copies(doc_id: str, weight: float, seed: int) -> int:
    if weight < 0 or not math.isfinite(weight):
        raise ValueError(f'mixture weight must be a finite number >= 0, got {weight}')
    whole = math.floor(weight)
    return whole + (unit_hash(doc_id, seed) < weight - whole)


def sample(doc: Document, weight: float, seed: int) -> list[Document]:
    n = copies(doc.id, weight, seed)
    return [doc if k == 0 else
            Document(copy_id(doc.id, k), doc.text, {**doc.metadata, 'copy_of': doc.id})
            for k in range(n)]
