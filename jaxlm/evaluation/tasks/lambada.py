"""LAMBADA (OpenAI), following lm-evaluation-harness 0.4
`lm_eval/tasks/lambada/lambada_openai.yaml`: `output_type: loglikelihood` with context = the
passage without its last word and target = `" " + last word`; `acc` = the target is the greedy
continuation, `perplexity` = exp(-mean log-likelihood of the target) over documents. 0-shot.

Local file: `icl_eval_tasks/lambada_openai.jsonl` (the OpenAI LAMBADA test set), already split
into `context` and `continuation` (the last word, no leading space).
"""

from __future__ import annotations

import math
import os
import pathlib
from typing import Any

from jaxlm.evaluation import data
from jaxlm.evaluation.registry import register
from jaxlm.evaluation.task import (
    Task,
    TaskResult,
    fewshot_prefix,
    first_n_excluding,
    mean_stderr,
    take,
)

_CHECK = data.field_check({'context': str, 'continuation': str},
                          lambda r: None if r['continuation'].strip() else 'empty continuation')


@register('lambada')
class Lambada(Task):
    def request(self, doc: dict[str, Any], shots: list[dict[str, Any]]) -> tuple[str, str]:
        prefix = fewshot_prefix([s['context'] + ' ' + s['continuation'] for s in shots])
        return prefix + doc['context'], ' ' + doc['continuation']

    def evaluate(self, lm: Any, *, data_dir: str | os.PathLike | None = None,
                 num_fewshot: int | None = None, limit: int | None = None) -> TaskResult:
        path = data.resolve_data_dir(data_dir) / 'icl_eval_tasks' / 'lambada_openai.jsonl'
        pool = data.read_jsonl(pathlib.Path(path), _CHECK)
        docs = take(pool, limit)
        k = num_fewshot or 0
        requests = [self.request(d, first_n_excluding(pool, d, k)) for d in docs]
        per_doc = [{'doc_id': i, 'target': cont, 'loglikelihood': ll, 'acc': float(greedy),
                    'truncated': cut}
                   for i, ((_, cont), (ll, greedy), cut)
                   in enumerate(zip(requests, lm.loglikelihood(requests),
                                    lm.loglikelihood_truncated(requests), strict=True))]
        accs = [d['acc'] for d in per_doc]
        metrics = {}
        if per_doc:
            metrics = {'acc': sum(accs) / len(accs),
                       'perplexity': math.exp(-sum(d['loglikelihood'] for d in per_doc)
                                              / len(per_doc))}
        return TaskResult(self.name, metrics, per_doc, len(docs), k, baseline={'acc': 0.0},
                          stderr={'acc': mean_stderr(accs)} if len(accs) > 1 else {},
                          num_requests=len(requests),
                          truncated_docs=sum(d['truncated'] for d in per_doc))
