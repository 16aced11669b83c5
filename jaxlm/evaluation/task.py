"""What every task is: `evaluate(lm, ...) -> TaskResult`, plus the harness's few-shot layout."""

from __future__ import annotations

import abc
import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

# lm-evaluation-harness 0.4 defaults (`lm_eval/api/task.py:TaskConfig`)
TARGET_DELIMITER = ' '
FEWSHOT_DELIMITER = '\n\n'


@dataclasses.dataclass
class TaskResult:
    name: str
    metrics: dict[str, float]
    per_doc: list[dict[str, Any]]
    num_docs: int
    num_fewshot: int
    baseline: dict[str, float]  # what chance (or a uniform byte model) scores on each metric
    stderr: dict[str, float] = dataclasses.field(default_factory=dict)
    num_requests: int = 0  # LM requests issued, for throughput
    # Documents scored on a context (or generated from a prompt) cut on the left to fit the
    # model: the harness truncates loglikelihood contexts silently and refuses such prompts.
    truncated_docs: int = 0


class Task(abc.ABC):
    """A benchmark: reads its files from the data dir, issues LM requests, scores them."""

    name: str = ''
    default_num_fewshot: int = 0

    @abc.abstractmethod
    def evaluate(self, lm: Any, *, data_dir: str | os.PathLike | None = None,
                 num_fewshot: int | None = None, limit: int | None = None) -> TaskResult:
        """`limit` keeps the first N documents in file order, as the harness's `--limit`."""


def fewshot_prefix(examples: Sequence[str], description: str = '') -> str:
    """The harness's `fewshot_context`: description, then each solved example followed by the
    few-shot delimiter; the query is appended after this."""
    return description + ''.join(ex + FEWSHOT_DELIMITER for ex in examples)


def first_n_excluding(pool: Sequence[dict[str, Any]], doc: dict[str, Any],
                      k: int) -> list[dict[str, Any]]:
    """The harness's `first_n` sampler when shots come from the evaluated split itself: the
    first k+1 documents without the one being evaluated, cut to k."""
    return [d for d in pool[:k + 1] if d is not doc][:k]


def mean_stderr(values: Sequence[float]) -> float:
    """Standard error of a mean, sample stddev / sqrt(n) (the harness's `mean_stderr`)."""
    n = len(values)
    if n < 2:
        return float('nan')
    mu = sum(values) / n
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1) / n)


def take(docs: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    return docs if limit is None else docs[:limit]
