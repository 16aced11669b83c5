"""Multiple choice by log-likelihood, as lm-evaluation-harness's `output_type: multiple_choice`
(`lm_eval/api/task.py:ConfigurableTask.construct_requests/process_results`, 0.4).

Each choice is scored as log p(target_delimiter + choice | prompt); `acc` takes the argmax of the
sums, `acc_norm` the argmax of sum / len(choice) where the length is in characters of the choice
text without the delimiter, exactly as the harness's `completion_len`.
"""

from __future__ import annotations

import abc
import os
from typing import Any

import numpy as np

from jaxlm.evaluation import data
from jaxlm.evaluation.task import (
    TARGET_DELIMITER,
    Task,
    TaskResult,
    fewshot_prefix,
    first_n_excluding,
    mean_stderr,
    take,
)

Doc = dict[str, Any]


class MultipleChoiceTask(Task):
    """Subclasses say where documents come from and how a document reads; `gold` is the index
    of the right choice in each document."""

    metric_names: tuple[str, ...] = ('acc', 'acc_norm')

    @abc.abstractmethod
    def docs(self, data_dir: Any) -> list[Doc]:
        """Evaluated documents, in file order."""

    @abc.abstractmethod
    def doc_to_text(self, doc: Doc) -> str: ...

    @abc.abstractmethod
    def doc_to_choices(self, doc: Doc) -> list[str]: ...

    def fewshot_docs(self, data_dir: Any, pool: list[Doc], doc: Doc, k: int) -> list[Doc]:
        """Default: the first k documents of the evaluated split, never the document itself."""
        return first_n_excluding(pool, doc, k)

    def description(self, doc: Doc) -> str:
        return ''

    def example(self, doc: Doc) -> str:
        """A solved few-shot example: the prompt, the delimiter and the right choice."""
        return self.doc_to_text(doc) + TARGET_DELIMITER + self.doc_to_choices(doc)[doc['gold']]

    def requests(self, doc: Doc, shots: list[Doc]) -> list[tuple[str, str]]:
        """One (context, continuation) per choice."""
        prompt = fewshot_prefix([self.example(s) for s in shots], self.description(doc))
        prompt += self.doc_to_text(doc)
        return [(prompt, TARGET_DELIMITER + c) for c in self.doc_to_choices(doc)]

    def limit_docs(self, docs: list[Doc], limit: int | None) -> list[Doc]:
        return take(docs, limit)

    def doc_fields(self, doc: Doc) -> dict[str, Any]:
        """Extra per-document fields kept in the samples (e.g. the MMLU subject)."""
        return {}

    def aggregate(self, per_doc: list[dict[str, Any]]) -> dict[str, float]:
        return {m: float(np.mean([d[m] for d in per_doc])) for m in self.metric_names}

    def evaluate(self, lm: Any, *, data_dir: str | os.PathLike | None = None,
                 num_fewshot: int | None = None, limit: int | None = None) -> TaskResult:
        root = data.resolve_data_dir(data_dir)
        k = self.default_num_fewshot if num_fewshot is None else num_fewshot
        pool = self.docs(root)
        docs = self.limit_docs(pool, limit)
        per_doc_requests = [self.requests(d, self.fewshot_docs(root, pool, d, k) if k else [])
                            for d in docs]
        flat = [r for reqs in per_doc_requests for r in reqs]
        scores = iter(lm.loglikelihood(flat))
        truncated = iter(lm.loglikelihood_truncated(flat))
        per_doc = []
        for i, (doc, reqs) in enumerate(zip(docs, per_doc_requests, strict=True)):
            lls = [next(scores)[0] for _ in reqs]
            cut = [next(truncated) for _ in reqs]
            per_doc.append(score_choices(i, doc['gold'], lls, self.doc_to_choices(doc))
                           | {'truncated': any(cut)} | self.doc_fields(doc))
        chance = float(np.mean([1.0 / len(self.doc_to_choices(d)) for d in docs] or [0.0]))
        metrics = self.aggregate(per_doc) if per_doc else {}
        return TaskResult(
            name=self.name, metrics=metrics, per_doc=per_doc, num_docs=len(docs), num_fewshot=k,
            baseline={m: chance for m in metrics},  # every metric here is an accuracy
            stderr={m: mean_stderr([d[m] for d in per_doc]) for m in self.metric_names
                    if len(per_doc) > 1},
            num_requests=len(flat), truncated_docs=sum(d['truncated'] for d in per_doc))


def score_choices(doc_id: int, gold: int, lls: list[float], choices: list[str]) -> dict[str, Any]:
    """One document's record: argmax of log-likelihoods, raw and per character."""
    lengths = np.array([float(len(c)) for c in choices])
    pred = int(np.argmax(lls))
    pred_norm = int(np.argmax(np.array(lls) / lengths))
    return {'doc_id': doc_id, 'gold': gold, 'pred': pred, 'pred_norm': pred_norm,
            'acc': float(pred == gold), 'acc_norm': float(pred_norm == gold),
            'loglikelihoods': lls}
