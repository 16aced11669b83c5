"""MMLU, following lm-evaluation-harness 0.4 `lm_eval/tasks/mmlu/default/_default_template_yaml`
and the per-subject yamls: description `"The following are multiple choice questions (with
answers) about {subject with spaces}.\\n\\n"`, doc `"{question.strip()}\\nA. ..\\nB. ..\\nC. ..\\n
D. ..\\nAnswer:"`, choices `" A"`..`" D"`, few-shot `first_n` from the subject's `dev` split
(5-shot as `--num_fewshot 5`, the standard setting and our default), acc.

Reported: `acc` = the harness's `mmlu` group score (weighted by subject size, i.e. the mean over
questions), `acc_macro` = the unweighted mean over subjects, and `acc/<subject>`.

Eval split: `val/` (1,531 questions) by default, because the test split is held out here;
`split='test'` evaluates `test/` where a data dir has it.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from jaxlm.evaluation import data
from jaxlm.evaluation.multiple_choice import Doc, MultipleChoiceTask
from jaxlm.evaluation.registry import register

LETTERS = ('A', 'B', 'C', 'D')
_COLUMNS = ['question', 'A', 'B', 'C', 'D', 'answer']


def _check(rec: dict[str, Any]) -> str | None:
    if rec['answer'].strip() not in LETTERS:
        return f'answer {rec["answer"]!r} is not one of A-D'
    return None


def read_subject(path: pathlib.Path, subject: str) -> list[Doc]:
    return [{'question': r['question'], 'choices': [r[x] for x in LETTERS],
             'gold': LETTERS.index(r['answer'].strip()), 'subject': subject}
            for r in data.read_csv(path, _COLUMNS, _check)]


@register('mmlu')
class Mmlu(MultipleChoiceTask):
    default_num_fewshot = 5
    metric_names = ('acc',)

    def __init__(self, split: str = 'val') -> None:
        self.split = split
        self._dev: dict[str, list[Doc]] = {}

    def docs(self, data_dir: Any) -> list[Doc]:
        folder = data.require(pathlib.Path(data_dir) / 'mmlu' / self.split)
        suffix = f'_{self.split}.csv'
        return [doc for path in sorted(folder.glob(f'*{suffix}'))
                for doc in read_subject(path, path.name[:-len(suffix)])]

    def fewshot_docs(self, data_dir: Any, pool: list[Doc], doc: Doc, k: int) -> list[Doc]:
        subject = doc['subject']
        if subject not in self._dev:
            path = pathlib.Path(data_dir) / 'mmlu' / 'dev' / f'{subject}_dev.csv'
            self._dev[subject] = read_subject(path, subject)
        return self._dev[subject][:k]

    def limit_docs(self, docs: list[Doc], limit: int | None) -> list[Doc]:
        # The harness's --limit applies to each subject's subtask.
        if limit is None:
            return docs
        seen: dict[str, int] = {}
        kept = []
        for doc in docs:
            seen[doc['subject']] = seen.get(doc['subject'], 0) + 1
            if seen[doc['subject']] <= limit:
                kept.append(doc)
        return kept

    def description(self, doc: Doc) -> str:
        subject = ' '.join(doc['subject'].split('_'))
        return f'The following are multiple choice questions (with answers) about {subject}.\n\n'

    def doc_to_text(self, doc: Doc) -> str:
        options = ''.join(f'\n{x}. {c}' for x, c in zip(LETTERS, doc['choices'], strict=True))
        return doc['question'].strip() + options + '\nAnswer:'

    def doc_to_choices(self, doc: Doc) -> list[str]:
        return list(LETTERS)

    def doc_fields(self, doc: Doc) -> dict[str, Any]:
        return {'subject': doc['subject']}

    def aggregate(self, per_doc: list[dict[str, Any]]) -> dict[str, float]:
        by_subject: dict[str, list[float]] = {}
        for d in per_doc:
            by_subject.setdefault(d['subject'], []).append(d['acc'])
        metrics = {'acc': float(np.mean([d['acc'] for d in per_doc])),
                   'acc_macro': float(np.mean([np.mean(v) for v in by_subject.values()]))}
        metrics.update({f'acc/{s}': float(np.mean(v)) for s, v in sorted(by_subject.items())})
        return metrics
