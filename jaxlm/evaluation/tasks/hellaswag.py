"""HellaSwag, following lm-evaluation-harness 0.4 `lm_eval/tasks/hellaswag/hellaswag.yaml` and
`utils.py` (`preprocess`, `process_docs`): 0-shot, acc and acc_norm over 4 endings.

The local file (`hellaswag/hellaswag_val_first_half.txt`, llama.cpp layout, 6 lines per task:
context, gold index, 4 endings) joins `ctx_a + " " + ctx_b` without the harness's
`ctx_b.capitalize()`, and has no ctx_a/ctx_b fields. `_restore_capitalization` restores the
harness's text: it capitalizes ctx_b in the 3,243 ActivityNet contexts (`"... on a roof. he"`
-> `"... on a roof. He"`), which changes 3,236 of the 5,021 local tasks (7 fragments start with a
digit or a quote), and keeps the 1,778 WikiHow contexts, whose ctx_b is empty, unchanged (a rule
that capitalized after any last ". " also changed two of those, after "u.s." and "dr.").
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

from jaxlm.evaluation import data
from jaxlm.evaluation.multiple_choice import Doc, MultipleChoiceTask
from jaxlm.evaluation.registry import register

_LINES_PER_DOC = 6
_NUM_ENDINGS = 4


def preprocess(text: str) -> str:
    """The harness's `utils.preprocess` (WikiHow bracket artefacts, double spaces)."""
    text = text.strip()
    text = text.replace(' [title]', '. ')
    text = re.sub('\\[.*?\\]', '', text)
    return text.replace('  ', ' ')


def _restore_capitalization(context: str) -> str:
    """The harness's `ctx_a + " " + ctx_b.capitalize()` from the local `ctx_a + " " + ctx_b`.

    In HellaSwag, ctx_b is empty for the WikiHow items, whose contexts end in '.', and is the
    lower-cased start of the next caption for the ActivityNet items, whose ctx_a ends in '. ';
    none of the local contexts contradicts that (every one of the 1,778 ending in '.' is a
    WikiHow item, every other one has '. ' before a fragment). So a context ending in '.' is
    kept, as it must be: abbreviations inside it ("10 a.m. to", "dr. brown's", "u.s.
    nationals") are not sentence ends. In any other, the fragment after the last '. ' (or after
    the label when there is none) is ctx_b.
    """
    if context.endswith('.'):
        return context
    head, sep, tail = context.rpartition('. ')
    if not sep:
        label, sep, tail = context.partition(': ')
        head = label if sep else ''
    return head + sep + tail.capitalize()


def read_docs(path: pathlib.Path) -> list[Doc]:
    malformed = data.Malformed()
    lines = data.require(path).read_text(encoding='utf-8', errors='replace').split('\n')
    if lines and lines[-1] == '':
        lines.pop()  # the file ends with a newline
    docs = []
    for start in range(0, len(lines), _LINES_PER_DOC):
        block = lines[start:start + _LINES_PER_DOC]
        line_no = start + 1
        if len(block) < _LINES_PER_DOC:
            malformed.add(path, line_no, f'incomplete task ({len(block)} of 6 lines)')
        elif not block[1].strip().isdigit() or int(block[1]) >= _NUM_ENDINGS:
            malformed.add(path, line_no + 1, f'gold {block[1]!r} is not an index 0..3')
        elif not block[0].strip() or not all(e.strip() for e in block[2:]):
            malformed.add(path, line_no, 'empty context or ending')
        else:
            docs.append({'query': preprocess(_restore_capitalization(block[0])),
                         'choices': [preprocess(e) for e in block[2:]],
                         'gold': int(block[1]), 'line': line_no})
    malformed.report(path)
    return docs


@register('hellaswag')
class HellaSwag(MultipleChoiceTask):
    def __init__(self, file: str = 'hellaswag/hellaswag_val_first_half.txt') -> None:
        self.file = file

    def docs(self, data_dir: Any) -> list[Doc]:
        return read_docs(pathlib.Path(data_dir) / self.file)

    def doc_to_text(self, doc: Doc) -> str:
        return doc['query']

    def doc_to_choices(self, doc: Doc) -> list[str]:
        return doc['choices']
