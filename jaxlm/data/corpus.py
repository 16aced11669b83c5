"""The corpus source (`data.source = 'corpus'`): a corpus of `jaxlm.data.sources` read into
documents, split by document into train and eval, and tokenized eagerly in the main process with
the tokenizer trained on the train documents only (corpora here are at most ~25 MB)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxlm.data import sources, tokenizers
from jaxlm.data.documents import FlatDocuments, Split

_SKIP_REASONS = ('empty', 'invalid_utf8', 'malformed_json', 'missing_field')


def _holdout_score(index: int, doc: str) -> float:
    """Stable pseudo-random number in [0, 1) from a document's index and content."""
    digest = hashlib.sha256(f'{index}\0{doc}'.encode()).digest()
    return int.from_bytes(digest[:8], 'little') / 2.0**64


def _held_out(docs: list[str], eval_fraction: float) -> set[int]:
    """The eval documents: at least one, and at least one left for training."""
    scores = [_holdout_score(i, doc) for i, doc in enumerate(docs)]
    held_out = {i for i, s in enumerate(scores) if s < eval_fraction}
    if not held_out:
        held_out = {int(np.argmin(scores))}
    if len(held_out) == len(docs):
        held_out.discard(int(np.argmax(scores)))
    return held_out


def load_documents(data_cfg: Any) -> tuple[list[str], list[str], dict]:
    """Reads the corpus and splits it by document into (train, eval, stats)."""
    paths = sources.resolve_corpus(
        data_cfg.corpus, data_cfg.data_dir or None, data_cfg.cache_dir or None
    )
    read_stats: dict = {}
    docs = list(sources.read_documents(paths, data_cfg.text_field, read_stats))
    skipped = {reason: read_stats[reason] for reason in _SKIP_REASONS}
    if len(docs) < 2:
        raise sources.DataError(
            f'corpus {data_cfg.corpus!r} has {len(docs)} usable document(s) after '
            f'filtering ({len(paths)} file(s); skipped: {skipped}; '
            f"first problems: {read_stats['examples']}); need at least 2 for a "
            'train/eval split'
        )
    if not 0.0 <= data_cfg.eval_fraction < 1.0:
        raise ValueError(f'data.eval_fraction must be in [0, 1), got {data_cfg.eval_fraction}')
    # The split ignores the seed: eval losses stay comparable across runs.
    held_out = _held_out(docs, data_cfg.eval_fraction)
    train = [d for i, d in enumerate(docs) if i not in held_out]
    held = [d for i, d in enumerate(docs) if i in held_out]
    stats = {
        'corpus': data_cfg.corpus,
        'files': [str(p) for p in paths],
        'documents': len(docs),
        'skipped': skipped,
        'skip_examples': read_stats['examples'],
        'train_documents': len(train),
        'eval_documents': len(held),
    }
    return train, held, stats


def make_tokenizer(data_cfg: Any,
                   train_docs_fn: Callable[[], list[str]]) -> tokenizers.Tokenizer:
    """`data.tokenizer`, trained (or read from the cache) on `train_docs_fn()` if it needs it."""
    tok_cfg = data_cfg.tokenizer
    return tokenizers.build_tokenizer(
        tok_cfg.kind, tok_cfg.vocab_size, train_docs_fn, data_cfg.cache_dir or None,
        tok_cfg.path,
    )


def _train_documents(data_cfg: Any) -> list[str]:
    return load_documents(data_cfg)[0]


def tokenizer(data_cfg: Any) -> tokenizers.Tokenizer:
    """The tokenizer `open_corpus(data_cfg)` uses; the corpus is read only to train one."""
    return make_tokenizer(data_cfg, functools.partial(_train_documents, data_cfg))


def open_corpus(data_cfg: Any) -> Split:
    """The corpus' train and eval documents, tokenized, each ending with EOS."""
    train_docs, eval_docs, stats = load_documents(data_cfg)
    tok = make_tokenizer(data_cfg, functools.partial(list, train_docs))
    return Split(tok, FlatDocuments.encode(train_docs, tok), FlatDocuments.encode(eval_docs, tok),
                 stats)
