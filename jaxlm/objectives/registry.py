"""The training objectives, by the name `data.objective` gives: one line each."""

from __future__ import annotations

from typing import Any

from jaxlm.objectives.base import Objective
from jaxlm.objectives.lm import LanguageModeling
from jaxlm.objectives.span_corruption import SpanCorruption

OBJECTIVES: dict[str, type[Objective]] = {
    'lm': LanguageModeling,
    'span_corruption': SpanCorruption,
}


def build(cfg: Any) -> Objective:
    """The run config's objective, with its settings."""
    return OBJECTIVES[cfg.data.objective].from_config(cfg)
