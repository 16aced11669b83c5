"""The training objectives, by the name `data.objective` gives: one line each."""

from __future__ import annotations

from typing import Any

from jaxlm.objectives.base import Objective
from jaxlm.objectives.dpo import DPO
from jaxlm.objectives.grpo import GRPO
from jaxlm.objectives.lm import LanguageModeling
from jaxlm.objectives.ppo import PPO
from jaxlm.objectives.reward import RewardModeling
from jaxlm.objectives.seq2seq import Seq2Seq
from jaxlm.objectives.sft import SupervisedFineTuning
from jaxlm.objectives.span_corruption import SpanCorruption

OBJECTIVES: dict[str, type[Objective]] = {
    'lm': LanguageModeling,
    'span_corruption': SpanCorruption,
    'grpo': GRPO,
    'ppo': PPO,
    'reward': RewardModeling,
    'dpo': DPO,
    'sft': SupervisedFineTuning,
    'seq2seq': Seq2Seq,
}


def build(cfg: Any) -> Objective:
    """The run config's objective, with its settings."""
    return OBJECTIVES[cfg.data.objective].from_config(cfg)
