"""Language identification with py3langid, whose model ships inside the package (no download)."""

from __future__ import annotations

import dataclasses
import functools

from data_pipelines.document import Document


@functools.cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the most likely of py3langid's 97 languages."""
    lang, prob = _identifier().classify(text)
    return lang, float(prob)


@dataclasses.dataclass(frozen=True)
class LanguageFilter:
    """Keeps documents in `languages` identified with probability >= `min_score` (FineWeb: 0.65);
    records `language` and `language_score` in the metadata of every kept document."""

    languages: tuple[str, ...] = ('en',)
    min_score: float = 0.65

    def __call__(self, doc: Document) -> Document | str:
        lang, score = identify(doc.text)
        if self.languages and lang not in self.languages:
            return f'language_{lang}'
        if score < self.min_score:
            return 'language_low_score'
        metadata = {**doc.metadata, 'language': lang, 'language_score': score}
        return Document(doc.id, doc.text, metadata)
