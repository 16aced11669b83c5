"""Anthropic HH-RLHF, harmless-base test split (2,312 pairs; MIT): human preference pairs about
harmlessness, as `Preference` records. Content warning: offensive text by design.

Each record's `chosen` and `rejected` are whole transcripts ('\\n\\nHuman: ...\\n\\nAssistant:
...') that share the dialogue and differ in the final assistant turn: the prompt is the shared
dialogue as messages, chosen / rejected the two final replies. Transcripts that do not parse
into alternating turns ending with a non-empty assistant reply, or whose two dialogues differ
before the final reply, are skipped and counted (`read` returns the counts; 13 of the file's
2,312 pairs do not parse); the mixture source splits the rest into train and held-out by a
fixed seed (`data.eval_fraction`).
"""

from __future__ import annotations

import gzip
import json
import re

from jaxlm.data.chat import ChatFormatError, Message, conversation
from jaxlm.data.records import Preference
from jaxlm.data.sets import verified

LICENSE = 'MIT'
FILE = 'hh_rlhf/harmless-base/test.jsonl.gz'
SHA256 = 'ebfaaed21162a4de120ae85366075b34425e2a6303fac59b99555002f7016f03'
_TURN = re.compile(r'\n\n(Human|Assistant):')
_ROLES = {'Human': 'user', 'Assistant': 'assistant'}
SKIP_REASONS = ('unparsed', 'different_prompts')


def parse_transcript(text: str, where: str) -> tuple[list[Message], str]:
    """(the dialogue before the final assistant turn, that turn's reply); ChatFormatError when
    the transcript is not alternating turns ending with a non-empty assistant reply."""
    parts = _TURN.split(text)
    if parts[0].strip():
        raise ChatFormatError(f'{where}: text before the first turn')
    turns = [{'role': _ROLES[role], 'content': content.strip()}
             for role, content in zip(parts[1::2], parts[2::2], strict=True)]
    messages = conversation(turns, where)
    if len(messages) < 2 or messages[-1].role != 'assistant' or not messages[-1].content:
        raise ChatFormatError(f'{where}: does not end with a non-empty assistant reply')
    return messages[:-1], messages[-1].content


def parse_pair(raw: dict, where: str) -> Preference | str:
    """The record's Preference, or the reason it is skipped (one of SKIP_REASONS)."""
    try:
        prompt, chosen = parse_transcript(raw['chosen'], f'{where} chosen')
        rejected_prompt, rejected = parse_transcript(raw['rejected'], f'{where} rejected')
    except ChatFormatError:
        return 'unparsed'
    if prompt != rejected_prompt:
        return 'different_prompts'
    return Preference(tuple(prompt), chosen, rejected, origin=where)


def read(data_dir: str = '') -> tuple[list[Preference], dict[str, int]]:
    """(the usable pairs in file order, skip counts by reason)."""
    path = verified(data_dir, FILE, SHA256)
    with gzip.open(path, 'rt', encoding='utf-8') as f:
        raws = [json.loads(line) for line in f if line.strip()]
    records, skipped = [], dict.fromkeys(SKIP_REASONS, 0)
    for i, raw in enumerate(raws):
        parsed = parse_pair(raw, f'hh_rlhf:{i}')
        if isinstance(parsed, str):
            skipped[parsed] += 1
        else:
            records.append(parsed)
    return records, skipped


def load(data_dir: str = '') -> list[Preference]:
    """The usable pairs (the post-training dataset registry's loader)."""
    return read(data_dir)[0]
