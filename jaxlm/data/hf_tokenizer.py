"""A Hugging Face `tokenizers` tokenizer.json behind jaxlm's Tokenizer protocol.

`encode` never adds special tokens (jaxlm adds bos/eos itself, as for SentencePiece); the special
ids come from tokenizer_config.json / special_tokens_map.json beside the file, else from the HF
model config (config.json or a converted run's hf_config.json), else from well-known token
strings. A tokenizer without a BOS token (GPT-2) uses its EOS (<|endoftext|>) as BOS, as GPT-2
itself does between documents.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import tokenizers

TOKENIZER_JSON = 'tokenizer.json'
_KNOWN = {'bos': ('<s>', '<|begin_of_text|>', '<bos>', '<|endoftext|>'),
          'eos': ('</s>', '<|end_of_text|>', '<eos>', '<|endoftext|>'),
          'pad': ('<pad>', '<|pad|>', '[PAD]')}


def _read_json(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


class HFTokenizer:
    def __init__(self, path: str | os.PathLike, *, bos_id: int | None = None,
                 eos_id: int | None = None, pad_id: int | None = None) -> None:
        # Deliberately not `model_path`: the trainer copies a `model_path` to tokenizer.model.
        self.path = pathlib.Path(path)
        self._tok = tokenizers.Tokenizer.from_file(str(self.path))
        directory = str(self.path.parent)
        ids = {'bos': bos_id, 'eos': eos_id, 'pad': pad_id}
        sources = [_read_json(os.path.join(directory, n))
                   for n in ('tokenizer_config.json', 'special_tokens_map.json')]
        model_cfgs = [_read_json(os.path.join(directory, n))
                      for n in ('hf_config.json', 'config.json')]
        for kind in ids:
            if ids[kind] is None:
                ids[kind] = self._lookup(kind, sources, model_cfgs)
        if ids['eos'] is None:
            raise ValueError(f'{self.path}: cannot tell the EOS token; pass eos_id')
        self._bos = ids['bos'] if ids['bos'] is not None else ids['eos']
        self._eos = ids['eos']
        self._pad = ids['pad'] if ids['pad'] is not None else ids['eos']

    def _lookup(self, kind: str, sources: list[dict], model_cfgs: list[dict]) -> int | None:
        for src in sources:
            token = src.get(f'{kind}_token')
            if isinstance(token, dict):
                token = token.get('content')
            if isinstance(token, str) and self._tok.token_to_id(token) is not None:
                return self._tok.token_to_id(token)
        for cfg in model_cfgs:
            value = cfg.get(f'{kind}_token_id')
            if isinstance(value, list):
                value = value[0] if value else None
            if isinstance(value, int):
                return value
        for token in _KNOWN[kind]:
            if self._tok.token_to_id(token) is not None:
                return self._tok.token_to_id(token)
        return None

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return self._pad

    @property
    def eos_id(self) -> int:
        return self._eos

    @property
    def bos_id(self) -> int:
        return self._bos

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)
