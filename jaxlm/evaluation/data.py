"""Reading benchmark files under the data dir, with per-record validation.

A malformed record (bad JSON, a missing or mistyped field, a label out of range) is skipped and
reported by `file:line`, so one bad line does not cost a whole evaluation; a missing file is an
error that names the path and `JAXLM_DATA_DIR`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

DATA_DIR_ENV = 'JAXLM_DATA_DIR'
_SHOWN = 5  # malformed records quoted in the warning; the rest are only counted

Check = Callable[[dict[str, Any]], str | None]  # a record -> why it is malformed, or None


class Malformed(list):
    """`file:line: reason` of each skipped record."""

    def add(self, path: pathlib.Path, line: int, reason: str) -> None:
        self.append(f'{path}:{line}: {reason}')

    def report(self, path: pathlib.Path) -> None:
        if self:
            logging.warning('%s: skipped %d malformed record(s); first: %s', path, len(self),
                            '; '.join(self[:_SHOWN]))


def resolve_data_dir(data_dir: str | os.PathLike | None) -> pathlib.Path:
    root = data_dir or os.environ.get(DATA_DIR_ENV)
    if not root:
        raise FileNotFoundError(f'no data dir: pass data_dir or set {DATA_DIR_ENV}')
    return pathlib.Path(root).expanduser()


def require(path: pathlib.Path) -> pathlib.Path:
    if not path.exists():
        raise FileNotFoundError(f'{path} not found; is {DATA_DIR_ENV} (or --data_dir) the shared '
                                f'data dir? ({DATA_DIR_ENV}={os.environ.get(DATA_DIR_ENV)!r})')
    return path


def field_check(fields: dict[str, type | tuple[type, ...]], extra: Check | None = None) -> Check:
    """A check that every field is present with its type, then `extra`."""
    def check(rec: dict[str, Any]) -> str | None:
        for name, kind in fields.items():
            if name not in rec:
                return f'missing field {name!r}'
            # bool is an int in Python but never a valid label or text
            if isinstance(rec[name], bool) or not isinstance(rec[name], kind):
                return f'field {name!r} is {type(rec[name]).__name__}, not {kind}'
        return extra(rec) if extra else None
    return check


def label_in_range(label: str, choices: str) -> Check:
    def check(rec: dict[str, Any]) -> str | None:
        n = len(rec[choices])
        if not 0 <= rec[label] < n:
            return f'{label}={rec[label]} out of range for {n} choices'
        return None
    return check


def _validated(path: pathlib.Path, records: Iterable[tuple[int, Any]], check: Check,
               malformed: Malformed) -> Iterator[dict[str, Any]]:
    for line, rec in records:
        reason = 'not a JSON object' if not isinstance(rec, dict) else check(rec)
        if reason:
            malformed.add(path, line, reason)
        else:
            yield rec


def read_jsonl(path: pathlib.Path, check: Check) -> list[dict[str, Any]]:
    """Valid records of a JSON-lines file, in file order."""
    malformed = Malformed()

    def parsed() -> Iterator[tuple[int, Any]]:
        with open(require(path), encoding='utf-8', errors='replace') as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    malformed.add(path, line_no, 'empty line')
                    continue
                try:
                    yield line_no, json.loads(line)
                except json.JSONDecodeError as e:
                    malformed.add(path, line_no, f'bad JSON ({e.msg})')

    records = list(_validated(path, parsed(), check, malformed))
    malformed.report(path)
    return records


def read_csv(path: pathlib.Path, columns: list[str], check: Check) -> list[dict[str, Any]]:
    """Valid rows of a header-less CSV file as dicts; a row is reported by its first line (fields
    may span lines)."""
    malformed = Malformed()

    def parsed() -> Iterator[tuple[int, Any]]:
        with open(require(path), encoding='utf-8', errors='replace', newline='') as f:
            reader = csv.reader(f)
            start = 1
            for row in reader:
                if len(row) != len(columns):
                    malformed.add(path, start, f'{len(row)} columns, expected {len(columns)}')
                else:
                    yield start, dict(zip(columns, row, strict=True))
                start = reader.line_num + 1

    records = list(_validated(path, parsed(), check, malformed))
    malformed.report(path)
    return records
