"""Curation configs: `base_config()` holds every setting with its default; a config file's
`get_config()` starts from it and names its sources and stages. `validate` names the bad field."""

from __future__ import annotations

import math

import ml_collections

from data_pipelines.decontamination import BENCHMARKS
from data_pipelines.readers import FORMATS, READER_OPTIONS, TEXT_SPLITS
from data_pipelines.stages import STAGE_NAMES
from jaxlm.config import ConfigError

# FineWeb's order (datatrove's `examples/fineweb.py`): language, Gopher repetition, Gopher
# quality, C4, FineWeb; then safety, PII and decontamination, which see only text that will be
# kept.
DEFAULT_STAGES = ('normalize', 'language', 'gopher_repetition', 'gopher_quality', 'c4', 'fineweb',
                  'bad_words', 'pii', 'decontamination')
# What a source may set (`source()`); the reader options are passed to `readers.read_file`.
SOURCE_KEYS = ('paths', 'format', 'licence', 'weight', 'description', 'creators', 'timeframe',
               'root', 'num_shards', 'id_scope', *READER_OPTIONS)
# Where an id field's value must be unique: a later record repeating it is removed.
ID_SCOPES = ('file', 'source')


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = 'curated'
    c.description = ''  # the datasheet's motivation paragraph
    c.data_dir = ''  # inputs, eval sets and word lists; '' = $JAXLM_DATA_DIR
    # name -> source(): {paths: globs under data_dir/root, format, licence, weight, ...SOURCE_KEYS}
    c.sources = ml_collections.ConfigDict()
    # The datasheet's answers that no statistic gives (Gebru et al.); '' is shown as N/A.
    c.datasheet = ml_collections.ConfigDict(dict(
        creators='',  # who built the dataset, for whom
        contact='',  # where to report a problem or ask for a removal
        offensive_content='',  # what offensive or toxic text may remain after the safety stages
        personal_information='',  # what personal data may remain after the pii stage
        uses='',  # what it is for
        not_for='',  # uses it is unfit for
        maintenance=''))  # who maintains it, how it is updated, how errors are corrected
    c.stages = DEFAULT_STAGES
    c.max_examples_per_reason = 3  # removed documents quoted per reason in stats and datasheet

    c.normalize = ml_collections.ConfigDict(dict(
        form='NFC', max_invalid_utf8_fraction=0.01, max_chars=10_000_000))
    c.language = ml_collections.ConfigDict(dict(languages=('en',), min_score=0.65))
    # datatrove's defaults, rule by rule; None (or -1/False for C4) switches a rule off.
    c.gopher_repetition = ml_collections.ConfigDict(dict(
        dup_line_frac=0.3, dup_para_frac=0.3, dup_line_char_frac=0.2, dup_para_char_frac=0.2,
        top_n_grams=((2, 0.2), (3, 0.18), (4, 0.16)),
        dup_n_grams=((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))))
    c.gopher_quality = ml_collections.ConfigDict(dict(
        min_doc_words=50, max_doc_words=100_000, min_avg_word_length=3, max_avg_word_length=10,
        max_symbol_word_ratio=0.1, max_bullet_lines_ratio=0.9, max_ellipsis_lines_ratio=0.3,
        max_non_alpha_words_ratio=0.8, min_stop_words=2), type_safe=False)
    c.c4 = ml_collections.ConfigDict(dict(
        remove_citations=True, filter_no_terminal_punct=True, min_num_sentences=5,
        min_words_per_line=3, max_word_length=1000, filter_lorem_ipsum=True,
        filter_javascript=True, filter_curly_bracket=True, filter_policy=True))
    c.fineweb = ml_collections.ConfigDict(dict(
        line_punct_thr=0.12, line_punct_exclude_zero=False, short_line_thr=0.67,
        short_line_length=30, char_duplicates_ratio=0.01, new_line_ratio=0.3))
    c.bad_words = ml_collections.ConfigDict(dict(
        wordlist_dir='profanity_wordlists', default_language='en', fail_on_missing_language=False))
    c.toxicity = ml_collections.ConfigDict(dict(classifier='', threshold=0.5))
    c.pii = ml_collections.ConfigDict(dict(
        email_placeholder='<EMAIL_ADDRESS>', phone_placeholder='<PHONE_NUMBER>',
        ip_placeholder='<IP_ADDRESS>', only_public_ips=True))
    c.decontamination = ml_collections.ConfigDict(dict(
        benchmarks=tuple(BENCHMARKS), ngram_size=13))
    c.dedup = ml_collections.ConfigDict(dict(
        exact=dict(enabled=True, lowercase=True, collapse_whitespace=True, num_partitions=16),
        minhash=dict(enabled=True, preset='fineweb', seed=1, num_partitions=16)))
    c.mixture = ml_collections.ConfigDict(dict(seed=0))
    c.tokenizer = ml_collections.ConfigDict(dict(
        enabled=True, kind='sentencepiece', vocab_size=8192, max_training_chars=20_000_000))
    c.shards = ml_collections.ConfigDict(dict(num_output_shards=8, seed=0))
    return c


def source(paths, fmt: str, licence: str, weight: float = 1.0, description: str = '',
           creators: str = '', timeframe: str = '', **options) -> ml_collections.ConfigDict:
    """One input source: `paths` are globs under the data dir (or under `root=` there);
    `creators` and `timeframe` (who wrote or collected it, and when) go to the datasheet.
    A book source (`gutenberg_body=True`) unwraps its hard-wrapped lines unless told not to."""
    if options.get('gutenberg_body'):
        options.setdefault('unwrap_lines', True)
    return ml_collections.ConfigDict(dict(paths=tuple(paths), format=fmt, licence=licence,
                                          weight=weight, description=description,
                                          creators=creators, timeframe=timeframe, **options))


def validate(c: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first bad field."""
    if not c.sources:
        raise ConfigError('config.sources: at least one source is needed')
    for name, s in c.sources.items():
        _validate_source(name, s)
    for stage in c.stages:
        if stage not in STAGE_NAMES:
            raise ConfigError(f'config.stages: unknown stage {stage!r}; known: {list(STAGE_NAMES)}')
    if len(set(c.stages)) != len(c.stages):
        raise ConfigError(f'config.stages: a stage is listed twice: {list(c.stages)}')
    if 'toxicity' in c.stages and not c.toxicity.classifier:
        raise ConfigError("config.toxicity.classifier: the toxicity stage needs 'module:function'")
    if not 0 <= c.language.min_score <= 1:
        raise ConfigError(f'config.language.min_score: must be in [0, 1], got '
                          f'{c.language.min_score}')
    for b in c.decontamination.benchmarks:
        if b not in BENCHMARKS:
            raise ConfigError(f'config.decontamination.benchmarks: unknown {b!r}; known: '
                              f'{sorted(BENCHMARKS)}')
    if c.decontamination.ngram_size < 1:
        raise ConfigError('config.decontamination.ngram_size: must be >= 1')
    if c.tokenizer.kind not in ('sentencepiece', 'hf_bpe'):
        raise ConfigError(f"config.tokenizer.kind: {c.tokenizer.kind!r} is not 'sentencepiece' "
                          f"or 'hf_bpe'")
    if c.shards.num_output_shards < 1:
        raise ConfigError('config.shards.num_output_shards: must be >= 1')


def _validate_source(name: str, s: ml_collections.ConfigDict) -> None:
    field = f'config.sources.{name}'
    unknown = sorted(set(s) - set(SOURCE_KEYS))
    if unknown:
        raise ConfigError(f'{field}: unknown setting(s) {unknown}; known: {list(SOURCE_KEYS)}')
    for key in ('paths', 'format', 'licence'):
        if not s.get(key):
            raise ConfigError(f'{field}.{key}: missing or empty; every source needs it (use '
                              'data_pipelines.configs.source())')
    if s.format not in FORMATS:
        raise ConfigError(f'{field}.format: {s.format!r} is not one of {FORMATS}')
    if s.get('text_split', 'file') not in TEXT_SPLITS:
        raise ConfigError(f'{field}.text_split: {s.text_split!r} is not one of {TEXT_SPLITS}')
    weight = s.get('weight', 1.0)
    if not (math.isfinite(weight) and weight >= 0):
        raise ConfigError(f'{field}.weight: must be a finite number >= 0, got {weight}')
    if s.get('id_scope', 'file') not in ID_SCOPES:
        raise ConfigError(f'{field}.id_scope: {s.id_scope!r} is not one of {ID_SCOPES}')
    if s.get('num_shards', 1) < 1:
        raise ConfigError(f'{field}.num_shards: must be >= 1, got {s.num_shards}')
