"""Conversations and chat templates: validated messages, rendered as transformers renders them,
tokenized with a mask of the tokens a completion-only loss trains (the assistant's).

Messages come in the OpenAI shape ({'role', 'content'}) or FastChat's ({'from': 'human' | 'gpt'
| 'system', 'value'}); `conversation` normalises and checks them: an optional system message,
then user and assistant turns alternating, starting with the user. Templates are Jinja, rendered
in a sandbox with transformers' settings (`trim_blocks`, `lstrip_blocks`, `raise_exception`,
`tojson`), so a converted Hugging Face model's `chat_template` gives the same text (and token
ids) as `tokenizer.apply_chat_template`. `DEFAULT_TEMPLATE` (ChatML) serves jaxlm's own
tokenizers.

The assistant mask works for any template, without knowing its markers: each assistant turn's
tokens are where the full rendering first differs from the rendering that stops before the turn
(with the generation prompt) up to where it first differs from the rendering that stops after
the turn; after the last turn, from a rendering with one more user turn. Text a template puts
after every conversation (a footer) is therefore never trained, while the end-of-turn marker
that follows each answer is.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jinja2
import jinja2.sandbox
import numpy as np

from jaxlm.data.sources import DataError

ROLES = ('system', 'user', 'assistant')
_FASTCHAT_ROLES = {'human': 'user', 'user': 'user', 'gpt': 'assistant', 'assistant': 'assistant',
                   'system': 'system', 'chatgpt': 'assistant', 'bard': 'assistant'}
# ChatML, as Qwen and many chat fine-tunes use it.
DEFAULT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


class ChatFormatError(DataError):
    """A conversation that cannot be trained on; the message names the turn and the problem."""


@dataclasses.dataclass(frozen=True)
class Message:
    role: str
    content: str


def conversation(messages: Sequence[Mapping[str, Any]], where: str = 'conversation'
                 ) -> list[Message]:
    """Validated messages (OpenAI or FastChat shape); `where` names the conversation in errors."""
    if not messages:
        raise ChatFormatError(f'{where}: no messages')
    out = [_message(m, f'{where}, message {i}') for i, m in enumerate(messages)]
    turns = out[1:] if out[0].role == 'system' else out
    for i, m in enumerate(turns):
        expected = ('user', 'assistant')[i % 2]
        if m.role != expected:
            raise ChatFormatError(
                f'{where}, message {out.index(m)}: expected a {expected!r} turn, got {m.role!r} '
                '(an optional system message, then user and assistant turns alternating, '
                'starting with the user)')
    return out


def _message(m: Mapping[str, Any], where: str) -> Message:
    if 'role' in m:
        role, content = m['role'], m.get('content')
    elif 'from' in m:
        role, content = _FASTCHAT_ROLES.get(str(m['from']).lower(), m['from']), m.get('value')
    else:
        raise ChatFormatError(f'{where}: no role (expected "role"/"content" or "from"/"value")')
    if role not in ROLES:
        raise ChatFormatError(f'{where}: unknown role {role!r} (known: {ROLES})')
    if not isinstance(content, str):
        raise ChatFormatError(f'{where}: content must be a string, got {type(content).__name__}')
    return Message(role, content)


def _raise(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


@functools.lru_cache(maxsize=8)
def _compiled(source: str) -> jinja2.Template:
    """Compiled once per template: a dataset renders every conversation three times."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters['tojson'] = _tojson
    env.globals['raise_exception'] = _raise
    return env.from_string(source)


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """A Jinja chat template and the special-token strings it may refer to."""

    source: str = DEFAULT_TEMPLATE
    special_tokens: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        return _compiled(self.source).render(
            messages=[dataclasses.asdict(m) for m in messages],
            add_generation_prompt=add_generation_prompt, **self.special_tokens)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    differs = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differs[0]) if differs.size else n


def tokenize_with_mask(messages: Sequence[Message], template: ChatTemplate,
                       encode: Callable[[str], list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(token ids [T] int32, mask [T] bool of the assistant turns' tokens) of the rendered
    conversation. Raises ChatFormatError when an assistant turn renders to no token."""
    full = encode(template.render(messages))
    mask = np.zeros(len(full), bool)
    for k, m in enumerate(messages):
        if m.role != 'assistant':
            continue
        before = encode(template.render(messages[:k], add_generation_prompt=True))
        after = messages[:k + 1]
        if k + 1 == len(messages):  # what follows the last answer is the template's, not its
            after = [*after, Message('user', '\x00')]
        start = _common_prefix(before, full)
        end = _common_prefix(encode(template.render(after)), full)
        if end <= start:
            raise ChatFormatError(f'assistant message {k} renders to no token of its own')
        mask[start:end] = True
    return np.asarray(full, np.int32), mask
