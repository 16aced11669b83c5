"""A run's chat format: its template, the tokens of a conversation, and its end-of-turn token.

Which template: `data.chat_template` (a Jinja file) when set; else a Hugging Face tokenizer's own
(`chat_template.jinja` or tokenizer_config.json's `chat_template` beside its tokenizer.json, as
transformers reads them, with its special-token strings); else `chat.DEFAULT_TEMPLATE` (ChatML),
whose markers `<|im_start|>` / `<|im_end|>` are real tokens of jaxlm's own tokenizers: symbols
of a SentencePiece model that jaxlm trains for a chat run (jaxlm/data/mixture.py), ids 259 and
260 after the byte tokenizer's 256 bytes and 3 specials (`ChatByteTokenizer`). An 'hf'
tokenizer without a template of its own reads ChatML's markers as plain text (several tokens;
replies then end at EOS): add them to its vocabulary, and grow the model's with
jaxlm/models/vocab.py, to make them single tokens. The format is
rebuilt from the run's config.json and its own tokenizer copy, so `jaxlm.sample --chat` renders
prompts exactly as training did.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxlm.data import chat
from jaxlm.data.tokenizers import ByteTokenizer, Tokenizer
from jaxlm.errors import ConfigError

CHAT_TOKENS = ('<|im_start|>', '<|im_end|>')
END_OF_TURN = '<|im_end|>'
_SPECIAL_KEYS = ('bos_token', 'eos_token', 'unk_token', 'pad_token', 'sep_token', 'cls_token',
                 'mask_token')


class ChatByteTokenizer(ByteTokenizer):
    """The byte tokenizer with the ChatML markers as two more ids (259, 260): a marker in the
    text is always its own id, and decodes back to its text."""

    vocab_size = ByteTokenizer.vocab_size + len(CHAT_TOKENS)
    _SPECIAL = {t: ByteTokenizer.vocab_size + i for i, t in enumerate(CHAT_TOKENS)}
    _SPLIT = re.compile('(' + '|'.join(map(re.escape, CHAT_TOKENS)) + ')')

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in self._SPLIT.split(text):
            ids += [self._SPECIAL[piece]] if piece in self._SPECIAL else super().encode(piece)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        names = {i: t for t, i in self._SPECIAL.items()}
        out, run = [], []
        for i in [int(i) for i in ids] + [-1]:
            if i in names or i == -1:
                out.append(super().decode(run))
                out.append(names.get(i, ''))
                run = []
            else:
                run.append(i)
        return ''.join(out)


def _hf_template(tokenizer_json: str) -> chat.ChatTemplate | None:
    directory = pathlib.Path(tokenizer_json).parent
    config_path = directory / 'tokenizer_config.json'
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    source = config.get('chat_template')
    if (directory / 'chat_template.jinja').exists():
        source = (directory / 'chat_template.jinja').read_text()
    if isinstance(source, list):  # named templates: transformers uses 'default'
        source = {t['name']: t['template'] for t in source}.get('default')
    if not source:
        return None
    special = {}
    for key in _SPECIAL_KEYS:
        value = config.get(key)
        value = value.get('content') if isinstance(value, dict) else value
        if isinstance(value, str):
            special[key] = value
    return chat.ChatTemplate(source, special)


def run_template(data_cfg: Any) -> chat.ChatTemplate:
    """The run's chat template (see the module docstring for which)."""
    path = data_cfg.get('chat_template', '')
    if path:
        if not os.path.isfile(path):
            raise ConfigError(f'data.chat_template {path!r} is not a file (a Jinja template)')
        return chat.ChatTemplate(pathlib.Path(path).read_text())
    if data_cfg.tokenizer.kind == 'hf':
        template = _hf_template(data_cfg.tokenizer.path)
        if template is not None:
            return template
    return chat.ChatTemplate()


def end_of_turn_id(tokenizer: Tokenizer) -> int:
    """`<|im_end|>` where the tokenizer has it as one token, else EOS (templates such as Llama
    2's close each answer with EOS)."""
    ids = tokenizer.encode(END_OF_TURN)  # SentencePiece may put its word-start piece first
    if len(ids) == 1 or (ids and tokenizer.decode(ids[-1:]) == END_OF_TURN):
        return ids[-1]
    return tokenizer.eos_id


def with_bos(ids: Sequence[int], bos_id: int) -> list[int]:
    """BOS first, as pre-training reads every document, unless the template wrote it already."""
    ids = [int(i) for i in ids]
    return ids if ids[:1] == [bos_id] else [bos_id, *ids]


def conversation_ids(messages: Sequence[chat.Message], template: chat.ChatTemplate,
                     tokenizer: Tokenizer, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(token ids with BOS, mask of the assistant tokens) of a conversation, checked first;
    ChatFormatError names `where` when it cannot be trained on."""
    checked = chat.conversation([{'role': m.role, 'content': m.content} for m in messages],
                                where)
    try:
        ids, mask = chat.tokenize_with_mask(checked, template, tokenizer.encode)
    except chat.ChatFormatError as e:
        raise chat.ChatFormatError(f'{where}: {e}') from None
    full = with_bos(ids, tokenizer.bos_id)
    if len(full) > len(ids):
        mask = np.concatenate([[False], mask])
    return np.asarray(full, np.int32), mask


def prompt_ids(messages: Sequence[chat.Message], template: chat.ChatTemplate,
               tokenizer: Tokenizer) -> list[int]:
    """The tokens that prompt the next assistant turn (the template's generation prompt)."""
    return with_bos(tokenizer.encode(template.render(messages, add_generation_prompt=True)),
                    tokenizer.bos_id)
