"""Curation configs: `base_config()` holds every setting with its default; a config file's
`get_config()` starts from it and names its sources and stages. `validate` names the bad field."""

from __future__ import annotations

import ml_collections

from data_pipelines.decontamination import BENCHMARKS
from data_pipelines.readers import FORMATS, TEXT_SPLITS
from data_pipelines.stages import STAGE_NAMES

# FineWeb's order (`examples/fineweb.py`): language, Gopher repetition, Gopher quality, C4,
# FineWeb; then safety, PII and decontamination, which see only text that will be kept.
DEFAULT_STAGES = ('normalize', 'language', 'gopher_repetition', 'gopher_quality', 'c4', 'fineweb',
                  'bad_words', 'pii', 'decontamination')


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = 'curated'
    c.description = ''  # the datasheet's motivation paragraph
    c.data_dir = ''  # inputs, eval sets and word lists; '' = $JAXLM_DATA_DIR or ../shared/data
    # name -> {paths: globs under data_dir/root, format, text_field, id_field, text_split,
    #          licence, weight, description}
    c.sources = ml_collections.ConfigDict()
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
           **options) -> ml_collections.ConfigDict:
    """One input source: `paths` are globs under the data dir (or under `root=` there)."""
    return ml_collections.ConfigDict(dict(paths=tuple(paths), format=fmt, licence=licence,
                                          weight=weight, description=description, **options))


def validate(c: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first bad field."""
    if not c.sources:
        raise ValueError('config.sources: at least one source is needed')
    for name, s in c.sources.items():
        if s.format not in FORMATS:
            raise ValueError(f'config.sources.{name}.format: {s.format!r} is not one of {FORMATS}')
        if s.get('text_split', 'file') not in TEXT_SPLITS:
            raise ValueError(f'config.sources.{name}.text_split: {s.text_split!r} is not one of '
                             f'{TEXT_SPLITS}')
        if not s.paths:
            raise ValueError(f'config.sources.{name}.paths: empty')
        if not (s.weight >= 0):
            raise ValueError(f'config.sources.{name}.weight: must be >= 0, got {s.weight}')
        if not s.licence:
            raise ValueError(f'config.sources.{name}.licence: every source needs its licence')
    for stage in c.stages:
        if stage not in STAGE_NAMES:
            raise ValueError(f'config.stages: unknown stage {stage!r}; known: {list(STAGE_NAMES)}')
    if len(set(c.stages)) != len(c.stages):
        raise ValueError(f'config.stages: a stage is listed twice: {list(c.stages)}')
    if 'toxicity' in c.stages and not c.toxicity.classifier:
        raise ValueError("config.toxicity.classifier: the toxicity stage needs 'module:function'")
    if not 0 <= c.language.min_score <= 1:
        raise ValueError(f'config.language.min_score: must be in [0, 1], got '
                         f'{c.language.min_score}')
    for b in c.decontamination.benchmarks:
        if b not in BENCHMARKS:
            raise ValueError(f'config.decontamination.benchmarks: unknown {b!r}; known: '
                             f'{sorted(BENCHMARKS)}')
    if c.decontamination.ngram_size < 1:
        raise ValueError('config.decontamination.ngram_size: must be >= 1')
    if c.tokenizer.kind not in ('sentencepiece', 'hf_bpe'):
        raise ValueError(f"config.tokenizer.kind: {c.tokenizer.kind!r} is not 'sentencepiece' "
                         f"or 'hf_bpe'")
    if c.shards.num_output_shards < 1:
        raise ValueError('config.shards.num_output_shards: must be >= 1')
