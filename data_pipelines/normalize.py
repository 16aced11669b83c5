"""Unicode and whitespace normalisation, and repair of invalid UTF-8.

Readers decode with `surrogateescape`, so each undecodable byte arrives as a lone surrogate
(U+DC80..U+DCFF); JSON escapes can carry lone surrogates too. A document with a few of them is
repaired (they are dropped and counted in `metadata['invalid_utf8_removed']`); one with more than
`max_invalid_utf8_fraction` of its characters is rejected as `invalid_utf8`.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata

from data_pipelines.document import Document

_SURROGATES = re.compile('[\ud800-\udfff]')
# C0/C1 controls except tab and newline, the byte-order mark, and the non-characters U+FFFE/U+FFFF.
_CONTROLS = re.compile('[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\ufffe\uffff]')
# Unicode space separators (no-break, em, ideographic, ...) become a plain space.
_SPACES = re.compile('[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]')
_TRAILING_SPACE = re.compile('[ \t]+\n')
_BLANK_LINES = re.compile('\n{3,}')


@dataclasses.dataclass(frozen=True)
class Normalizer:
    """NFC, control characters removed, CRLF/CR to LF, trailing spaces stripped from lines, at
    most one blank line in a row, and no leading/trailing whitespace."""

    form: str = 'NFC'
    max_invalid_utf8_fraction: float = 0.01
    max_chars: int = 10_000_000  # longer documents are rejected as `too_long`

    def __call__(self, doc: Document) -> Document | str:
        text = doc.text
        invalid = len(_SURROGATES.findall(text))
        if invalid and invalid > self.max_invalid_utf8_fraction * len(text):
            return 'invalid_utf8'
        if invalid:
            text = _SURROGATES.sub('', text)
        text = unicodedata.normalize(self.form, text)
        text = text.replace('\r\n', '\n').replace('\r', '\n')
        text = _CONTROLS.sub('', text)
        text = _SPACES.sub(' ', text)
        text = _BLANK_LINES.sub('\n\n', _TRAILING_SPACE.sub('\n', text)).strip()
        if not text:
            return 'empty'
        if len(text) > self.max_chars:
            return 'too_long'
        metadata = {**doc.metadata, 'invalid_utf8_removed': invalid} if invalid else doc.metadata
        return Document(doc.id, text, metadata)
