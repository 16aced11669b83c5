"""C4's line and document rules (Raffel et al. 2020; TFDS `c4_utils.py`) as datatrove has them.

Lines failing a line rule are removed from the text; a document-level rule drops the document.
"""

from __future__ import annotations

import dataclasses
import re

from data_pipelines.document import Document
from data_pipelines.filters.words import count_sentences

_CITATION = re.compile(r'\[\d*]|\[edit]|\[citation needed]')
_END_PUNCTUATION = ('.', '?', '!', '"', "'")
_POLICY = ('terms of use', 'privacy policy', 'cookie policy', 'uses cookies', 'use of cookies',
           'use cookies')


@dataclasses.dataclass(frozen=True)
class C4QualityFilter:
    """`datatrove.pipeline.filters.C4QualityFilter` with line splitting on newlines (C4's default).

    -1 switches off a numeric rule, False a boolean one. FineWeb ran it with
    `filter_no_terminal_punct=False`.
    """

    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = 5
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True

    def __call__(self, doc: Document) -> Document | str:
        num_sentences = 0
        kept = []
        for line in doc.text.splitlines():
            line = line.strip()
            words = line.split()
            if self.max_word_length != -1 and any(len(w) > self.max_word_length for w in words):
                continue
            if self.remove_citations:
                line = _CITATION.sub('', line)
            if self.filter_no_terminal_punct and (not line.endswith(_END_PUNCTUATION)
                                                  or line.endswith('...')):
                continue
            if len(words) < self.min_words_per_line:
                continue
            lower = line.lower()
            if self.filter_lorem_ipsum and 'lorem ipsum' in lower:
                return 'lorem_ipsum'
            if self.filter_javascript and 'javascript' in lower:
                continue
            if self.filter_curly_bracket and '{' in line:
                return 'curly_bracket'
            if self.filter_policy and any(p in lower for p in _POLICY):
                continue
            if self.min_num_sentences != -1:
                num_sentences += count_sentences(line)
            kept.append(line)
        if num_sentences < self.min_num_sentences:
            return 'too_few_sentences'
        return dataclasses.replace(doc, text='\n'.join(kept).strip())
