"""Post-training records: what a post-training dataset yields and a post-training objective reads.

A `Conversation` is trained on by supervised fine-tuning (its assistant turns) and prompts the RL
recipes (all but its last assistant turn); its `answer` is the reference final answer that a
programmatic reward or an evaluation checks (GSM8K's number). A `Preference` is a prompt with a
chosen and a rejected completion (reward models, DPO). `origin` names the record in errors
('gsm8k:17': dataset and index), so a bad record is found without searching.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from jaxlm.data.chat import Message


@dataclasses.dataclass(frozen=True)
class Conversation:
    messages: tuple[Message, ...]
    answer: str = ''
    origin: str = ''


@dataclasses.dataclass(frozen=True)
class Preference:
    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    origin: str = ''


def texts(record: Any) -> Iterator[str]:
    """Every text of a record (e.g. to train a tokenizer on)."""
    messages = record.messages if isinstance(record, Conversation) else record.prompt
    yield from (m.content for m in messages)
    if isinstance(record, Preference):
        yield record.chosen
        yield record.rejected
