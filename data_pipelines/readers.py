"""Input readers: plain text, JSONL (plain, gzip or zstd) and Parquet, with provenance.

A reader never raises on bad input: every record it meets comes out either as a Document or as
a rejection `(Document, reason)`, so the read stage accounts for it. Text is decoded with
`surrogateescape`, so invalid UTF-8 bytes survive as lone surrogates for the normalisation stage
to repair or reject with a reason. A truncated or unreadable file yields one placeholder rejection
(no record: it says where reading stopped and why), under a reason of `FILE_REJECTIONS`.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from collections.abc import Iterator
from typing import Any

from data_pipelines.document import Document, escape_record_id
from jaxlm.errors import UserError

FORMATS = ('text', 'jsonl', 'parquet')
TEXT_SPLITS = ('file', 'line', 'paragraph', 'chunk')
# The keyword options of `read_file` a config's source may set.
READER_OPTIONS = ('text_field', 'id_field', 'text_split', 'chunk_chars', 'gutenberg_body',
                  'unwrap_lines')
Rejection = tuple[Document, str]
# Reasons of the placeholder a damaged file yields where its reading stopped: not a record.
FILE_REJECTIONS = ('truncated_or_corrupt_stream', 'unreadable_file')
# Damage a decompressor reports mid-stream (a truncated gzip raises EOFError).
_STREAM_ERRORS: tuple[type[Exception], ...] = (EOFError, gzip.BadGzipFile, zlib.error)
_SNIPPET = 2000  # characters of a bad record kept with its rejection


def _zstd_chunks(path: str) -> Iterator[bytes]:
    """Decompressed chunks of a zstd file; raises EOFError when it ends inside a frame (the
    library's stream reader would end silently and lose the rest of the file unreported)."""
    import zstandard

    decompressor = zstandard.ZstdDecompressor()
    dobj = decompressor.decompressobj()
    with open(path, 'rb') as f:
        while chunk := f.read(1 << 20):
            while chunk:
                yield dobj.decompress(chunk)
                chunk = dobj.unused_data if dobj.eof else b''
                if chunk:  # a following frame
                    dobj = decompressor.decompressobj()
    if not dobj.eof:
        raise EOFError(f'{path}: zstd stream ends inside a frame (truncated)')


def _zstd_lines(path: str) -> Iterator[bytes]:
    pending = b''
    for chunk in _zstd_chunks(path):
        *lines, pending = (pending + chunk).split(b'\n')
        yield from (line + b'\n' for line in lines)
    if pending:
        yield pending


def _raw_lines(path: str) -> Iterator[bytes]:
    if path.endswith(('.zst', '.zstd')):
        yield from _zstd_lines(path)
        return
    with (gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')) as f:
        yield from f


def _read_bytes(path: str) -> bytes:
    if path.endswith(('.zst', '.zstd')):
        return b''.join(_zstd_chunks(path))
    with (gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')) as f:
        return f.read()


def _decode(raw: bytes) -> str:
    return raw.decode('utf-8', errors='surrogateescape')


def read_file(path: str, *, source: str, licence: str, fmt: str, rel_path: str,
              text_field: str = 'text', id_field: str = '', text_split: str = 'file',
              chunk_chars: int = 0, gutenberg_body: bool = False, unwrap_lines: bool = False,
              part: int = 0, num_parts: int = 1) -> Iterator[Document | Rejection]:
    """Yields the documents of one input file, in order; ids are `<source>/<rel_path>:<index>`,
    or `record_id_prefix(source, rel_path) + <id>` when `id_field` names a field that holds one.
    `unwrap_lines` joins hard-wrapped lines into paragraphs (`unwrap_paragraphs`). With
    `num_parts` > 1 only records whose index is `part` modulo `num_parts` are parsed, so one large
    file makes several shards."""
    if fmt not in FORMATS:
        raise ValueError(f'reader format {fmt!r} is not one of {FORMATS}')
    base = {'source': source, 'licence': licence, 'path': rel_path}

    def make(index: int, text: str, extra: dict[str, Any] | None = None,
             record_id: str = '') -> Document:
        doc_id = (record_id_prefix(source, rel_path) + escape_record_id(record_id) if record_id
                  else f'{source}/{rel_path}:{index}')
        return Document(doc_id, text, {**base, 'index': index, **(extra or {})})

    seen = 0  # records met so far in the file (all parts): where a stream failure is reported
    try:
        if fmt == 'parquet':
            records = _parquet_records(path)
        elif fmt == 'jsonl':
            records = _lines(path)
        else:
            records = _text_records(path, text_split, chunk_chars, gutenberg_body)
        for index, record in records:
            seen = index + 1
            if index % num_parts != part:
                continue
            if fmt == 'jsonl':
                out = _parse_json_line(record, index, text_field, id_field, make)
            elif fmt == 'parquet':
                out = _parse_row(record, index, text_field, id_field, make)
            else:
                out = make(index, record)
            if unwrap_lines and isinstance(out, Document):
                out.text = unwrap_paragraphs(out.text)
            yield out
    except _STREAM_ERRORS as e:
        # A truncated or corrupt stream loses the rest of the file: one rejection says where.
        if seen % num_parts == part:
            error = {'error': f'{type(e).__name__}: {e}'}
            yield make(seen, '', error), 'truncated_or_corrupt_stream'
    except Exception as e:  # unreadable file: wrong format, permissions, bad Parquet footer
        if seen % num_parts == part:
            yield make(seen, '', {'error': f'{type(e).__name__}: {e}'}), 'unreadable_file'


def record_id_prefix(source: str, rel_path: str) -> str:
    """What the id of a record with an id field starts with; the (escaped) id follows."""
    return f'{source}/{rel_path}/'


def _lines(path: str) -> Iterator[tuple[int, bytes]]:
    yield from enumerate(_raw_lines(path))


_GUTENBERG_START = re.compile(r'^\*\*\* ?START OF (?:THE|THIS) PROJECT GUTENBERG.*$', re.M | re.I)
_GUTENBERG_END = re.compile(r'^\*\*\* ?END OF (?:THE|THIS) PROJECT GUTENBERG.*$', re.M | re.I)


def gutenberg_body(text: str) -> str:
    """The text between Project Gutenberg's START and END marker lines (all of it without them)."""
    start = _GUTENBERG_START.search(text)
    end = _GUTENBERG_END.search(text, start.end() if start else 0)
    return text[start.end() if start else 0:end.start() if end else len(text)]


# A line break inside a paragraph: text on both sides (a blank line or a text end stops it).
_WRAPPED_BREAK = re.compile(r'(?<=\S)[ \t]*\r?\n[ \t]*(?=\S)')


def unwrap_paragraphs(text: str) -> str:
    """Joins the lines of each hard-wrapped paragraph with a space; blank-line breaks between
    paragraphs stay. C4's and FineWeb's rules judge lines, and a book's 70-character lines mostly
    end without punctuation: as lines they are dropped, as paragraphs they are judged whole."""
    return _WRAPPED_BREAK.sub(' ', text)


def _text_records(path: str, how: str, chunk_chars: int, body_only: bool
                  ) -> Iterator[tuple[int, str]]:
    text = _decode(_read_bytes(path))
    if body_only:
        text = gutenberg_body(text)
    yield from enumerate(_split_text(text, how, chunk_chars))


def _split_text(text: str, how: str, chunk_chars: int = 0) -> list[str]:
    """'file': one document; 'line' or 'paragraph': one per non-blank line or paragraph; 'chunk':
    consecutive paragraphs packed into documents of at most `chunk_chars` characters."""
    if how not in TEXT_SPLITS:
        raise ValueError(f'text_split {how!r} is not one of {TEXT_SPLITS}')
    if how == 'file':
        return [text]
    text = text.replace('\r\n', '\n')  # Windows line ends would hide the paragraph breaks
    parts = [p for p in (text.split('\n') if how == 'line' else text.split('\n\n')) if p.strip()]
    if how != 'chunk':
        return parts
    if chunk_chars < 1:
        raise ValueError(f"text_split 'chunk' needs chunk_chars >= 1, got {chunk_chars}")
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for p in parts:
        if current and size + len(p) + 2 > chunk_chars:
            chunks.append('\n\n'.join(current))
            current, size = [], 0
        current.append(p)
        size += len(p) + 2
    if current:
        chunks.append('\n\n'.join(current))
    return chunks


def _parse_json_line(raw: bytes, index: int, text_field: str, id_field: str, make
                     ) -> Document | Rejection:
    line = _decode(raw)
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        return make(index, line[:_SNIPPET], {'error': str(e)}), 'malformed_json'
    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
        return make(index, line[:_SNIPPET], _no_text(record, text_field)), 'missing_text_field'
    record_id = str(record[id_field]) if id_field and record.get(id_field) is not None else ''
    return make(index, record[text_field], _scalars(record, (text_field, id_field)), record_id)


def _parquet_records(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    index = 0
    for batch in pq.ParquetFile(path).iter_batches():
        for row in batch.to_pylist():
            yield index, row
            index += 1


def _no_text(record: Any, text_field: str) -> dict[str, Any]:
    """Why a record has no text, and its fields, so that the rejection can be found and fixed."""
    if not isinstance(record, dict):
        return {'error': f'a JSON {type(record).__name__}, not an object'}
    value = record.get(text_field)
    found = 'missing' if text_field not in record else f'{type(value).__name__}, not a string'
    return {'error': f'field {text_field!r} is {found}', 'columns': sorted(record)}


def _scalars(record: dict[str, Any], skip: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in record.items()
            if k not in skip and isinstance(v, (str, int, float, bool))}


def _parse_row(row: dict[str, Any], index: int, text_field: str, id_field: str, make
               ) -> Document | Rejection:
    text = row.get(text_field)
    if not isinstance(text, str):
        row_json = json.dumps(row, default=str, ensure_ascii=False)[:_SNIPPET]
        return make(index, row_json, _no_text(row, text_field)), 'missing_text_field'
    record_id = str(row[id_field]) if id_field and row.get(id_field) is not None else ''
    return make(index, text, _scalars(row, (text_field, id_field)), record_id)


class InputNotFound(UserError, FileNotFoundError):
    """An input pattern of the config matches no file."""


def input_files(root: str, patterns: list[str], field: str = 'input pattern') -> list[str]:
    """The sorted files under `root` matching any glob pattern; a pattern matching nothing is an
    error naming it and `field`, the config field that holds it (a typo would otherwise silently
    drop a source)."""
    import glob

    files = set()
    for pattern in patterns:
        found = [p for p in glob.glob(os.path.join(root, pattern), recursive=True)
                 if os.path.isfile(p)]
        if not found:
            where = root if os.path.isdir(root) else f'{root}, which does not exist'
            raise InputNotFound(f'{field}: {pattern!r} matches no file under {where}; fix the '
                                'path, or JAXLM_DATA_DIR / config.data_dir')
        files.update(found)
    return sorted(files)
