"""Tokenizers: a byte-level fallback and a cached, deterministic SentencePiece BPE."""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import sentencepiece as spm

from jaxlm.data import sources
from jaxlm.errors import ConfigError

# A run's own copy of its SentencePiece model, beside config.json: sampling and evaluation read
# it, never the corpus.
TOKENIZER_FILE = 'tokenizer.model'

PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3
# Bump whenever the trainer options below change, so cached models are not reused.
_SPM_VERSION = "spm-bpe-v1"
_SPM_MODEL_TYPE = "bpe"
# Shared with data_pipelines.tokenize, which trains the curated corpus's tokenizer the same way.
SPM_TRAINER_OPTIONS = dict(
    model_type=_SPM_MODEL_TYPE,
    byte_fallback=True,
    split_digits=True,
    character_coverage=1.0,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,  # keep text round-trippable
    pad_id=PAD_ID,
    eos_id=EOS_ID,
    bos_id=BOS_ID,
    unk_id=UNK_ID,
    max_sentence_length=1 << 16,
    # Checked: with num_threads=1 two trainings give identical bytes; with
    # 4 threads the model differed from the 1-thread one. Training is < 1 s/MB.
    num_threads=1,
    minloglevel=2,
)


@runtime_checkable
class Tokenizer(Protocol):
    """What the pipeline and the sampler need from a tokenizer."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def pad_id(self) -> int: ...

    @property
    def eos_id(self) -> int: ...

    @property
    def bos_id(self) -> int: ...


class ByteTokenizer:
    """UTF-8 bytes shifted by 3: ids 0/1/2 are pad/eos/bos, byte b is b + 3."""

    _OFFSET = 3

    vocab_size = 256 + _OFFSET
    pad_id, eos_id, bos_id = PAD_ID, EOS_ID, BOS_ID

    def encode(self, text: str) -> list[int]:
        # numpy instead of a per-byte Python loop: corpora are tens of MB.
        return (np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)
                + self._OFFSET).tolist()

    def decode(self, ids: Sequence[int]) -> str:
        # Special ids are dropped; ids past 258 are dropped too because a model's
        # embedding table may be padded beyond the tokenizer's vocabulary.
        data = bytes(i - self._OFFSET for i in ids if self._OFFSET <= i < self.vocab_size)
        return data.decode("utf-8", errors="replace")


class SentencePieceTokenizer:
    """Wraps a SentencePiece model; special ids come from the model itself."""

    def __init__(self, model_path: str | os.PathLike):
        self.model_path = pathlib.Path(model_path)
        self._sp = spm.SentencePieceProcessor(model_file=str(self.model_path))

    @property
    def vocab_size(self) -> int:
        return self._sp.vocab_size()

    @property
    def pad_id(self) -> int:
        return self._sp.pad_id()

    @property
    def eos_id(self) -> int:
        return self._sp.eos_id()

    @property
    def bos_id(self) -> int:
        return self._sp.bos_id()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        special = {self.pad_id, self.eos_id, self.bos_id}
        return self._sp.decode([int(i) for i in ids if int(i) not in special])


def training_sentences(documents: Iterable[str]) -> Iterator[str]:
    # One line per training sentence: whole documents would exceed SentencePiece's
    # sentence length limit and be dropped. Newlines are then covered by byte fallback.
    for doc in documents:
        for line in doc.split("\n"):
            if line:
                yield line


def train_sentencepiece(
    documents: Iterable[str], vocab_size: int, cache_dir: str | os.PathLike | None,
    user_defined_symbols: Sequence[str] = (),
) -> pathlib.Path:
    """Trains (or reuses) a BPE model; returns `<cache>/tokenizers/spm-<hash16>.model`.
    `user_defined_symbols` (e.g. a chat template's markers) are single pieces wherever they occur.

    The cache key hashes every document, the vocab size, the model type, the symbols and a
    version string, so any change to the training data retrains.
    """
    docs = list(documents)  # two passes (hash, then train); corpora are small
    h = hashlib.sha256(f"{_SPM_VERSION}\0{_SPM_MODEL_TYPE}\0{vocab_size}\0".encode())
    if user_defined_symbols:  # only then: the keys of models trained without stay the same
        h.update("\0".join(["symbols", *user_defined_symbols]).encode() + b"\0")
    for doc in docs:
        data = doc.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))  # length prefix: unambiguous boundaries
        h.update(data)
    out_dir = sources.default_cache_dir(cache_dir) / "tokenizers"
    path = out_dir / f"spm-{h.hexdigest()[:16]}.model"
    if path.exists():
        return path

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=training_sentences(docs),
        model_writer=model,
        vocab_size=vocab_size,
        input_sentence_size=0,  # use every sentence: no sampling
        user_defined_symbols=list(user_defined_symbols),
        **SPM_TRAINER_OPTIONS,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    # Temp file + rename: concurrent trainers (several hosts, one shared cache)
    # never observe a half-written model; they write identical bytes anyway.
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".spm-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.getvalue())
        os.replace(tmp, path)
    finally:
        pathlib.Path(tmp).unlink(missing_ok=True)
    return path


def build_tokenizer(
    kind: str,
    vocab_size: int,
    documents_fn: Callable[[], Iterable[str]],
    cache_dir: str | os.PathLike | None,
    path: str = "",
) -> Tokenizer:
    """'byte', 'sentencepiece' (loaded from `path`, else trained on `documents_fn()`) or 'hf'
    (an HF `tokenizer.json` at `path`, e.g. a converted checkpoint's).

    `documents_fn` is only called for a trained SentencePiece model (to train it or
    to compute its cache key), so 'byte' and explicit model paths never read the corpus.
    """
    if kind == "byte":
        return ByteTokenizer()
    if path and not os.path.exists(path):
        raise ConfigError(f"data.tokenizer.path {path!r} does not exist (kind {kind!r})")
    if kind == "sentencepiece":
        if path:
            return SentencePieceTokenizer(path)
        return SentencePieceTokenizer(train_sentencepiece(documents_fn(), vocab_size, cache_dir))
    if kind == "hf":
        if not path:
            raise ValueError(
                "data.tokenizer.kind 'hf' needs data.tokenizer.path (a tokenizer.json)"
            )
        from jaxlm.data.hf_tokenizer import HFTokenizer

        return HFTokenizer(path)
    raise ValueError(
        f"unknown data.tokenizer.kind {kind!r}; expected 'byte', 'sentencepiece' or 'hf'"
    )
