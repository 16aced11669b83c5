"""ARC-Easy and ARC-Challenge, following lm-evaluation-harness 0.4
`lm_eval/tasks/arc/arc_easy.yaml` (arc_challenge includes it): prompt
`"Question: {question}\\nAnswer:"`, choices `" {text}"`, acc and acc_norm, 0-shot by default.

Local files: `icl_eval_tasks/arc_{easy,challenge}.jsonl` (llm-foundry layout, the ARC test
splits), whose `query` is already `"Question: {question}"`.
"""

from __future__ import annotations

import pathlib
from typing import Any

from jaxlm.evaluation import data
from jaxlm.evaluation.multiple_choice import Doc, MultipleChoiceTask
from jaxlm.evaluation.registry import register

ICL_CHECK = data.field_check({'query': str, 'choices': list, 'gold': int},
                             data.label_in_range('gold', 'choices'))


def read_icl(data_dir: Any, name: str) -> list[Doc]:
    return data.read_jsonl(pathlib.Path(data_dir) / 'icl_eval_tasks' / f'{name}.jsonl',
                           ICL_CHECK)


class _Arc(MultipleChoiceTask):
    file = ''

    def docs(self, data_dir: Any) -> list[Doc]:
        return read_icl(data_dir, self.file)

    def doc_to_text(self, doc: Doc) -> str:
        return doc['query'] + '\nAnswer:'

    def doc_to_choices(self, doc: Doc) -> list[str]:
        return doc['choices']


@register('arc_easy')
class ArcEasy(_Arc):
    file = 'arc_easy'


@register('arc_challenge')
class ArcChallenge(_Arc):
    file = 'arc_challenge'
