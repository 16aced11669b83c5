"""PIQA, following lm-evaluation-harness 0.4 `lm_eval/tasks/piqa/piqa.yaml`: prompt
`"Question: {goal}\\nAnswer:"`, choices `" {sol1}"`/`" {sol2}"`, acc and acc_norm, 0-shot.

Local file: `icl_eval_tasks/piqa.jsonl` (the validation split), whose `query` is
`"Question: {goal}\\n"`; only `"Answer:"` is appended.
"""

from __future__ import annotations

from typing import Any

from jaxlm.evaluation.multiple_choice import Doc, MultipleChoiceTask
from jaxlm.evaluation.registry import register
from jaxlm.evaluation.tasks.arc import read_icl


@register('piqa')
class Piqa(MultipleChoiceTask):
    def docs(self, data_dir: Any) -> list[Doc]:
        return read_icl(data_dir, 'piqa')

    def doc_to_text(self, doc: Doc) -> str:
        query = doc['query']
        return (query[:-1] if query.endswith('\n') else query) + '\nAnswer:'

    def doc_to_choices(self, doc: Doc) -> list[str]:
        return doc['choices']
