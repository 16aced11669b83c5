"""Perplexity of held-out text, following lm-evaluation-harness 0.4's wikitext task
(`lm_eval/tasks/wikitext/wikitext.yaml`, `output_type: loglikelihood_rolling`) and its metrics
(`lm_eval/api/metrics.py`: `weighted_perplexity`, `bits_per_byte`): with LL the total natural-log
likelihood of each document (every token predicted once, rolling windows),
`word_perplexity = exp(-ΣLL / Σwords)` with `words = len(re.split(r"\\s+", doc))`,
`byte_perplexity = exp(-ΣLL / Σbytes)`, `bits_per_byte = -ΣLL / (Σbytes · ln 2)` over UTF-8
bytes. Unlike token perplexity these compare across tokenizers.

Text: by default the held-out documents of the run's own corpus (`data_cfg`, the run's
`config.data`: the same by-document split as training's eval loss); or every document of
`text`, a corpus name, file, directory or glob as `jaxlm.data.sources.resolve_corpus` takes.
Baselines are a uniform model over the 256 byte values (8 bits per byte).
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

from jaxlm.data import corpus, sources
from jaxlm.evaluation import data
from jaxlm.evaluation.registry import register
from jaxlm.evaluation.task import Task, TaskResult, take


def perplexity_metrics(lls: list[float], docs: list[str]) -> dict[str, float]:
    total = -sum(lls)
    words = sum(len(re.split(r'\s+', d)) for d in docs)
    n_bytes = sum(len(d.encode('utf-8')) for d in docs)
    return {'word_perplexity': math.exp(total / words),
            'byte_perplexity': math.exp(total / n_bytes),
            'bits_per_byte': total / n_bytes / math.log(2)}


@register('perplexity')
class Perplexity(Task):
    def __init__(self, text: str | None = None, data_cfg: Any = None) -> None:
        if (text is None) == (data_cfg is None):
            raise ValueError('perplexity needs exactly one of text= (a corpus name or path) or '
                             "data_cfg= (a run's config.data, for its held-out documents)")
        self.text, self.data_cfg = text, data_cfg

    def documents(self, data_dir: str | os.PathLike | None) -> list[str]:
        if self.data_cfg is not None:
            return corpus.load_documents(self.data_cfg)[1]  # the split training held out
        root = data_dir or os.environ.get(data.DATA_DIR_ENV)
        paths = sources.resolve_corpus(self.text, str(root) if root else None)
        return list(sources.read_documents(paths))

    def evaluate(self, lm: Any, *, data_dir: str | os.PathLike | None = None,
                 num_fewshot: int | None = None, limit: int | None = None) -> TaskResult:
        docs = take(self.documents(data_dir), limit)
        lls = lm.loglikelihood_rolling(docs)
        per_doc = [{'doc_id': i, 'loglikelihood': ll, 'words': len(re.split(r'\s+', d)),
                    'bytes': len(d.encode('utf-8'))}
                   for i, (d, ll) in enumerate(zip(docs, lls, strict=True))]
        baseline = {}
        if docs:
            uniform = perplexity_metrics([-math.log(256) * len(d.encode('utf-8')) for d in docs],
                                         docs)
            baseline = {k: round(v, 6) for k, v in uniform.items()}
        return TaskResult(self.name, perplexity_metrics(lls, docs) if docs else {}, per_doc,
                          len(docs), 0, baseline, num_requests=len(docs))
