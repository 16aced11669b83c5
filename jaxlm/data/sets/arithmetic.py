"""A synthetic task for reinforcement-learning checks: "What is a+b?" for every pair of small
numbers, answered by the sum. It needs no data files (`data_dir` is unused) and is the same on
every machine: one conversation per (a, b) with 0 <= a, b < `MAX_OPERAND`, in order; `answer`
holds the sum for `jaxlm.trainer.rewards.arithmetic_exact`."""

from __future__ import annotations

from jaxlm.data.chat import Message
from jaxlm.data.records import Conversation

LICENSE = 'synthetic (no third-party data)'
MAX_OPERAND = 10


def problem(a: int, b: int) -> Conversation:
    return Conversation((Message('user', f'What is {a}+{b}?'), Message('assistant', str(a + b))),
                        answer=str(a + b), origin=f'arithmetic:{a * MAX_OPERAND + b}')


def load(data_dir: str = '') -> list[Conversation]:
    del data_dir  # synthetic
    return [problem(a, b) for a in range(MAX_OPERAND) for b in range(MAX_OPERAND)]
