"""FineWeb's own quality rules (Penedo et al. 2024), with datatrove's defaults and reason codes."""

from __future__ import annotations

import dataclasses

from data_pipelines.document import Document
from data_pipelines.filters.gopher_repetition import duplicates
from data_pipelines.filters.words import TERMINAL_PUNCTUATION, split_words


@dataclasses.dataclass(frozen=True)
class FineWebQualityFilter:
    """`datatrove.pipeline.filters.FineWebQualityFilter`. Lines are not stripped before the
    terminal-punctuation test, as in datatrove (a trailing space fails it)."""

    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3

    def __call__(self, doc: Document) -> Document | str:
        lines = [line for line in doc.text.split('\n') if line.strip()]
        if not lines:
            return 'empty'
        stop_chars = tuple(TERMINAL_PUNCTUATION)
        ratio = sum(line.endswith(stop_chars) for line in lines) / len(lines)
        if ratio < self.line_punct_thr and not (ratio == 0 and self.line_punct_exclude_zero):
            return 'line_punct_ratio'
        ratio = sum(len(line) <= self.short_line_length for line in lines) / len(lines)
        if ratio > self.short_line_thr:
            return 'short_line_ratio'
        if duplicates(lines)[1] / len(doc.text.replace('\n', '')) > self.char_duplicates_ratio:
            return 'char_dup_ratio'
        if doc.text.count('\n') / len(split_words(doc.text)) > self.new_line_ratio:
            return 'list_ratio'
        return doc
