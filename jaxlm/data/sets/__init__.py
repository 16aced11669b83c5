"""Post-training datasets, one module each, read from `$JAXLM_DATA_DIR` (the files named in the
SOURCE.md of each dataset's folder) and checked against their pinned sha256, as the pre-training
corpora are (jaxlm/data/sources.py): a run never trains on different bytes silently."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from jaxlm.data.sources import DATA_DIR_ENV, CorpusNotFoundError, DataError, sha256_file


def verified(data_dir: str, path: str, sha256: str) -> pathlib.Path:
    """`data_dir/path` (data_dir '' = $JAXLM_DATA_DIR), after checking its sha256."""
    root = data_dir or os.environ.get(DATA_DIR_ENV, '')
    full = pathlib.Path(root).expanduser() / path
    if not root or not full.is_file():
        raise CorpusNotFoundError(
            f'{path} not found under {root or f"${DATA_DIR_ENV} (unset)"}; set {DATA_DIR_ENV} '
            f'(or data.data_dir) to a directory containing {path}')
    actual = sha256_file(full)
    if actual != sha256:
        raise DataError(f'sha256 mismatch for {full}: expected {sha256}, got {actual}. The file '
                        'is corrupt or a different version; replace it.')
    return full


def read_json(path: pathlib.Path) -> Any:
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f if line.strip()]
