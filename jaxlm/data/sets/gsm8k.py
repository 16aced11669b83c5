"""GSM8K train problems (`gsm8k/train.jsonl`, MIT) as chain-of-thought conversations: the
question as the user turn; the worked solution as the assistant turn, in the form the gsm8k
evaluation task's strict regex parses (jaxlm/evaluation/tasks/gsm8k.py, as lm-evaluation-harness's
gsm8k-cot): the reasoning lines joined into one paragraph without the calculator annotations
`<<48/2=24>>`, then "The answer is N." in place of the `#### N` line. `answer` keeps N (without
thousands separators) for programmatic rewards. The test split stays held out: only train.jsonl
is read."""

from __future__ import annotations

import re

from jaxlm.data.chat import ChatFormatError, Message
from jaxlm.data.records import Conversation
from jaxlm.data.sets import read_jsonl, verified

LICENSE = 'MIT'
TRAIN = ('gsm8k/train.jsonl', '17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465')
_CALCULATOR = re.compile(r'<<[^>]*>>')


def solution(answer: str, where: str) -> tuple[str, str]:
    """(assistant text ending with 'The answer is N.', N) of a GSM8K answer field."""
    reasoning, sep, final = answer.rpartition('####')
    number = final.strip().replace(',', '')
    if not sep or not number:
        raise ChatFormatError(f'{where}: answer has no "#### N" line')
    lines = [line.strip() for line in _CALCULATOR.sub('', reasoning).splitlines()]
    return ' '.join([*filter(None, lines), f'The answer is {number}.']), number


def load(data_dir: str) -> list[Conversation]:
    out = []
    for i, rec in enumerate(read_jsonl(verified(data_dir, *TRAIN))):
        text, number = solution(rec['answer'], f'gsm8k:{i}')
        out.append(Conversation((Message('user', rec['question']), Message('assistant', text)),
                                answer=number, origin=f'gsm8k:{i}'))
    return out
