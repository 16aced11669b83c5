"""Reads the pipeline's intermediate shards: JSONL of `Document.to_json()`, optionally gzipped."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

from data_pipelines.document import Document


def read_shard(path: str) -> Iterator[Document]:
    """Yields the documents of one shard in file order (their position is their index)."""
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rt', encoding='utf-8') as f:
        for line_no, line in enumerate(f, start=1):
            try:
                yield Document.from_json(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                # Shards are written by the pipeline itself, so a bad line is a bug, not input.
                raise ValueError(f'{path}:{line_no}: not a Document JSON line ({e})') from e
