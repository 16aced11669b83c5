"""Gopher repetition rules (Rae et al. 2021, table A1): datatrove's defaults and reason codes."""

from __future__ import annotations

import collections
import dataclasses
import re

from data_pipelines.document import Document
from data_pipelines.filters.words import split_words

_PARAGRAPHS = re.compile(r'\n{2,}')
_LINES = re.compile('\n+')


def duplicates(elements: list[str]) -> tuple[int, int]:
    """(number of repeated elements, characters in them), counting every repeat after the first."""
    seen: set[str] = set()
    count = chars = 0
    for element in elements:
        if element in seen:
            count += 1
            chars += len(element)
        else:
            seen.add(element)
    return count, chars


def _top_ngram_chars(words: tuple[str, ...], n: int) -> int:
    counts = collections.Counter(' '.join(words[i:i + n]) for i in range(len(words) - n + 1))
    if not counts:
        return 0
    gram, count = counts.most_common(1)[0]
    return len(gram) * count


def _duplicated_ngram_chars(words: tuple[str, ...], n: int) -> int:
    # Characters of n-grams seen before; a match skips its n words so overlaps count once.
    seen: set[str] = set()
    chars = i = 0
    while i < len(words) - n + 1:
        gram = ''.join(words[i:i + n])
        if gram in seen:
            chars += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


@dataclasses.dataclass(frozen=True)
class GopherRepetitionFilter:
    """Drops documents with too much repeated text; each threshold None switches its rule off."""

    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.2), (3, 0.18), (4, 0.16))
    dup_n_grams: tuple[tuple[int, float], ...] = (
        (5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))

    def __call__(self, doc: Document) -> Document | str:
        text = doc.text
        if not text:
            return 'empty'
        paragraphs = _PARAGRAPHS.split(text.strip())
        count, chars = duplicates(paragraphs)
        if self.dup_para_frac and count / len(paragraphs) > self.dup_para_frac:
            return 'dup_para_frac'
        if self.dup_para_char_frac and chars / len(text) > self.dup_para_char_frac:
            return 'dup_para_char_frac'
        lines = _LINES.split(text)
        count, chars = duplicates(lines)
        if self.dup_line_frac and count / len(lines) > self.dup_line_frac:
            return 'dup_line_frac'
        if self.dup_line_char_frac and chars / len(text) > self.dup_line_char_frac:
            return 'dup_line_char_frac'
        words = split_words(text)
        for n, frac in self.top_n_grams:
            if _top_ngram_chars(words, n) / len(text) > frac:
                return f'top_{n}_gram'
        for n, frac in self.dup_n_grams:
            if _duplicated_ngram_chars(words, n) / len(text) > frac:
                return f'duplicated_{n}_n_grams'
        return doc
