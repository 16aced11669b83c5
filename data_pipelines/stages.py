"""The per-document stages a config can list, built from their config sections.

A stage maps a Document to the Document to keep (possibly rewritten) or to a removal reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import ml_collections

from data_pipelines.decontamination import Decontaminator
from data_pipelines.document import Document
from data_pipelines.filters.bad_words import BadWordsFilter
from data_pipelines.filters.c4 import C4QualityFilter
from data_pipelines.filters.fineweb import FineWebQualityFilter
from data_pipelines.filters.gopher_quality import GopherQualityFilter
from data_pipelines.filters.gopher_repetition import GopherRepetitionFilter
from data_pipelines.filters.toxicity import ToxicityFilter
from data_pipelines.language_id import LanguageFilter
from data_pipelines.normalize import Normalizer
from data_pipelines.pii import PIIRedactor

Stage = Callable[[Document], 'Document | str']


def _tuples(value):
    # ConfigDict turns tuples into lists; the frozen filter dataclasses want hashable tuples.
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def _kwargs(section: ml_collections.ConfigDict) -> dict:
    return {k: _tuples(v) for k, v in section.to_dict().items()}


def _bad_words(c: ml_collections.ConfigDict, data_dir: str, work_dir: str) -> Stage:
    kw = _kwargs(c)
    kw['wordlist_dir'] = os.path.join(data_dir, kw['wordlist_dir'])
    return BadWordsFilter(**kw)


def _decontamination(c: ml_collections.ConfigDict, data_dir: str, work_dir: str) -> Stage:
    return Decontaminator(index_path=decontamination_index_path(work_dir), ngram_size=c.ngram_size)


def decontamination_index_path(work_dir: str) -> str:
    return os.path.join(work_dir, 'decontamination_index.npz')


# name -> builder(config section, data dir, work dir)
_BUILDERS: dict[str, Callable[[ml_collections.ConfigDict, str, str], Stage]] = {
    'normalize': lambda c, d, w: Normalizer(**_kwargs(c)),
    'language': lambda c, d, w: LanguageFilter(**_kwargs(c)),
    'gopher_repetition': lambda c, d, w: GopherRepetitionFilter(**_kwargs(c)),
    'gopher_quality': lambda c, d, w: GopherQualityFilter(**_kwargs(c)),
    'c4': lambda c, d, w: C4QualityFilter(**_kwargs(c)),
    'fineweb': lambda c, d, w: FineWebQualityFilter(**_kwargs(c)),
    'bad_words': _bad_words,
    'toxicity': lambda c, d, w: ToxicityFilter(**_kwargs(c)),
    'pii': lambda c, d, w: PIIRedactor(**_kwargs(c)),
    'decontamination': _decontamination,
}
STAGE_NAMES = tuple(_BUILDERS)


def build_stage(name: str, config: ml_collections.ConfigDict, data_dir: str, work_dir: str
                ) -> Stage:
    if name not in _BUILDERS:
        raise ValueError(f'config.stages: unknown stage {name!r}; known: {list(STAGE_NAMES)}')
    if name not in config:
        raise ValueError(f'config.stages lists {name!r} but its settings config.{name} are '
                         'missing')
    try:
        return _BUILDERS[name](config[name], data_dir, work_dir)
    except TypeError as e:  # an unknown or misspelt setting
        raise ValueError(f'config.{name}: {e}') from e
