"""C4's bad-words rule: drop a document containing a word of the LDNOOBW list of its language.

As `datatrove.pipeline.filters.C4BadWordsFilter`, but the lists are read from a local folder of
`<lang>.txt` files (`../shared/data/profanity_wordlists`), so nothing is downloaded at run time.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re

from data_pipelines.document import Document

# Common subwords of languages written without spaces; each filtered >10% of its language in C4.
_ALLOWLIST = {'ja': {'sm', 'グロ', '女の子'}, 'zh': {'性'}}
_NO_WORD_BOUNDARIES = ('ja', 'th', 'zh')


@functools.lru_cache(maxsize=64)
def badwords_regex(wordlist_dir: str, lang: str) -> re.Pattern | None:
    """The matcher for `lang`, or None when the folder has no list for it."""
    path = os.path.join(wordlist_dir, f'{lang}.txt')
    if not os.path.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        words = {line.strip() for line in f}
    for allowed in _ALLOWLIST.values():
        words -= allowed
    alternatives = '|'.join(re.escape(w) for w in words)
    if lang in _NO_WORD_BOUNDARIES:
        return re.compile(alternatives)
    return re.compile(rf'(?:\W|^)({alternatives})(?:\W|$)')


@dataclasses.dataclass(frozen=True)
class BadWordsFilter:
    """Uses the document's `metadata['language']` (else `default_language`); a language without a
    list passes, or is an error when `fail_on_missing_language`."""

    wordlist_dir: str
    default_language: str = 'en'
    fail_on_missing_language: bool = False

    def __call__(self, doc: Document) -> Document | str:
        lang = doc.metadata.get('language', self.default_language)
        regex = badwords_regex(self.wordlist_dir, lang)
        if regex is None:
            if self.fail_on_missing_language:
                raise ValueError(f'no bad-words list for language {lang!r} in {self.wordlist_dir}')
            return doc
        if regex.search(doc.text.lower()):
            return 'document_removed_with_badwords'
        return doc
