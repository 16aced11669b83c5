"""Atomic JSONL(.gz) writing of documents: a file exists only once it is complete."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable
from typing import Any

from data_pipelines.document import Document


def write_jsonl(path: str, records: Iterable[dict[str, Any]]) -> int:
    """Writes `records` to `path` (gzip if it ends in .gz) via a temporary file; returns the count.
    `ensure_ascii` keeps any stray surrogate of a rejected record writable."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp-{os.getpid()}'
    opener = gzip.open if path.endswith('.gz') else open
    n = 0
    with opener(tmp, 'wt', encoding='utf-8') as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=True) + '\n')
            n += 1
    os.replace(tmp, path)
    return n


def write_documents(path: str, docs: Iterable[Document]) -> int:
    return write_jsonl(path, (d.to_json() for d in docs))


def write_json(path: str, value: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(value, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    with open(path, encoding='utf-8') as f:
        return json.load(f)
