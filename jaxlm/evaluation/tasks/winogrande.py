"""WinoGrande, following lm-evaluation-harness 0.4 `lm_eval/tasks/winogrande/default.yaml` and
`preprocess_winogrande.py`: partial scoring. Each option fills the blank; the sentence up to and
including the option is a choice of *context*, and the same continuation (the text after the
blank) is scored after each: requests `(shots + option_prefix, " " + continuation)`. Only acc is
reported, as in the harness. 0-shot default; a few-shot example is the gold-filled sentence.

Local file: `icl_eval_tasks/winogrande.jsonl` (dev, xl), with `context_options` = the
option-filled prefixes and `continuation` = the stripped text after the blank.
"""

from __future__ import annotations

import pathlib
from typing import Any

from jaxlm.evaluation import data
from jaxlm.evaluation.multiple_choice import Doc, MultipleChoiceTask
from jaxlm.evaluation.registry import register
from jaxlm.evaluation.task import TARGET_DELIMITER, fewshot_prefix

_CHECK = data.field_check({'context_options': list, 'continuation': str, 'gold': int},
                          data.label_in_range('gold', 'context_options'))


@register('winogrande')
class Winogrande(MultipleChoiceTask):
    metric_names = ('acc',)

    def docs(self, data_dir: Any) -> list[Doc]:
        return data.read_jsonl(pathlib.Path(data_dir) / 'icl_eval_tasks' / 'winogrande.jsonl',
                               _CHECK)

    def doc_to_text(self, doc: Doc) -> str:
        return doc['context_options'][doc['gold']]

    def doc_to_choices(self, doc: Doc) -> list[str]:
        # The harness's doc_to_choice: the option-filled prefixes (also its acc_norm lengths).
        return doc['context_options']

    def example(self, doc: Doc) -> str:
        return self.doc_to_text(doc) + TARGET_DELIMITER + doc['continuation']

    def requests(self, doc: Doc, shots: list[Doc]) -> list[tuple[str, str]]:
        prefix = fewshot_prefix([self.example(s) for s in shots])
        return [(prefix + option, TARGET_DELIMITER + doc['continuation'])
                for option in doc['context_options']]
