"""Trains the curated corpus's tokenizer: SentencePiece BPE (byte fallback, split digits, the
same options as jaxlm's own) or Hugging Face `tokenizers` byte-level BPE."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable

import sentencepiece as spm
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from jaxlm.data import shards
from jaxlm.data.tokenizers import SPM_TRAINER_OPTIONS, training_sentences

KINDS = tuple(shards.TOKENIZER_FILES)
# Same ids as jaxlm's SentencePiece models (pad 0, eos 1, bos 2, unk 3); HFTokenizer finds them
# by these well-known strings.
HF_SPECIAL_TOKENS = ('<pad>', '</s>', '<s>', '<unk>')


def _train_sentencepiece(texts: Iterable[str], path: str, vocab_size: int,
                         max_sentences: int) -> None:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=training_sentences(texts), model_writer=model, vocab_size=vocab_size,
        # 0 = every sentence; else a uniform sample, which bounds memory on large corpora.
        input_sentence_size=max_sentences, shuffle_input_sentence=max_sentences > 0,
        **SPM_TRAINER_OPTIONS)
    with open(path, 'wb') as f:
        f.write(model.getvalue())


def _train_hf_bpe(texts: Iterable[str], path: str, vocab_size: int) -> None:
    tok = tokenizers.Tokenizer(models.BPE())
    # Digits one by one (as SentencePiece's split_digits), then GPT-2's byte-level split: every
    # byte is in the base alphabet, so any text round-trips without an unknown token.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(HF_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.save(path)
    pad, eos, bos, unk = HF_SPECIAL_TOKENS
    with open(os.path.join(os.path.dirname(path), 'tokenizer_config.json'), 'w') as f:
        json.dump({'bos_token': bos, 'eos_token': eos, 'pad_token': pad, 'unk_token': unk}, f)


def train_tokenizer(texts: Iterable[str], out_dir: str, kind: str = 'sentencepiece',
                    vocab_size: int = 8192, *, max_sentences: int = 0) -> str:
    """Trains a tokenizer on `texts`; returns its file (`out_dir/tokenizer.model` for
    'sentencepiece', `out_dir/tokenizer.json` for 'hf_bpe')."""
    if kind == 'hf_bpe':
        kind = 'hf'
    if kind not in KINDS:
        raise ValueError(f"tokenizer kind must be 'sentencepiece' or 'hf_bpe', got {kind!r}")
    if vocab_size < 260 + len(HF_SPECIAL_TOKENS):
        raise ValueError(f'vocab_size {vocab_size} is too small: byte fallback alone needs 256 '
                         'ids plus the special tokens')
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, shards.TOKENIZER_FILES[kind])
    if kind == 'sentencepiece':
        _train_sentencepiece(texts, path, vocab_size, max_sentences)
    else:
        _train_hf_bpe(texts, path, vocab_size)
    return path
