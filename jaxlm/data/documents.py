"""Sources of token documents: the one interface between where text comes from and what an
objective makes of it (no grain, no TensorFlow: the sampler imports `tokenizer_only`).

A source splits its documents by document into train and eval (seed-independent, so eval losses
stay comparable across runs) and gives each split as `TokenDocuments`: random access to documents
of token ids, each ending with EOS and without BOS (the format of jaxlm/data/shards.py's records).
Sources, by `data.source`: 'corpus' (jaxlm/data/corpus.py: text read and tokenized eagerly) and
'shards' (jaxlm/data/shards.py: pre-tokenized ArrayRecords read lazily). 'seqio' tasks tokenize
and pack inside seqio and are built by jaxlm/data/seqio_tasks.py instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np

from jaxlm.data import tokenizers


class TokenDocuments(Protocol):
    """Documents of token ids, each ending with EOS; picklable cheaply (to grain workers)."""

    lengths: np.ndarray  # [num_documents] int64 token counts, EOS included

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


class FlatDocuments:
    """`TokenDocuments` over one flat token array: one array plus offsets (instead of a list of
    small arrays) keeps pickling to grain worker processes cheap."""

    def __init__(self, tokens: np.ndarray, lengths: np.ndarray):
        self.tokens, self.lengths = tokens, np.asarray(lengths, np.int64)
        self.offsets = np.cumsum(self.lengths) - self.lengths

    @classmethod
    def encode(cls, texts: list[str], tokenizer: tokenizers.Tokenizer) -> FlatDocuments:
        pieces = [np.asarray([*tokenizer.encode(text), tokenizer.eos_id], np.int32)
                  for text in texts]
        tokens = np.concatenate(pieces) if pieces else np.zeros([0], np.int32)
        return cls(tokens, np.array([len(p) for p in pieces], np.int64))

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> np.ndarray:
        begin = self.offsets[index]
        return self.tokens[begin:begin + self.lengths[index]]


@dataclasses.dataclass
class Split:
    """A source's tokenizer, its train and eval documents, and what it reports about them."""

    tokenizer: tokenizers.Tokenizer
    train: TokenDocuments
    eval: TokenDocuments
    stats: dict


def open_source(data_cfg: Any, seed: int = 0) -> Split:
    """The documents of `data.source` ('corpus' or 'shards'), split into train and eval; for
    'mixture' (jaxlm/data/mixture.py) lists of post-training records instead, the train records
    drawn by `seed`."""
    from jaxlm.data import corpus, mixture, shards  # here: they import this module

    if data_cfg.get('source') == 'mixture':
        return mixture.open_mixture(data_cfg, seed)
    if data_cfg.get('source', 'corpus') == 'shards':
        return shards.open_shards(data_cfg.shards_dir, data_cfg.eval_fraction)
    return corpus.open_corpus(data_cfg)


def tokenizer_only(data_cfg: Any) -> tokenizers.Tokenizer:
    """The tokenizer `open_source(data_cfg)` gives, without tokenizing the documents."""
    from jaxlm.data import corpus, mixture, shards

    if data_cfg.get('source') == 'mixture':
        return mixture.tokenizer(data_cfg)
    if data_cfg.get('source') == 'shards':
        return shards.load_tokenizer(data_cfg.shards_dir)
    return corpus.tokenizer(data_cfg)
