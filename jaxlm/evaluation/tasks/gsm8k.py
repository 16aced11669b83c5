"""GSM8K chain-of-thought, following lm-evaluation-harness 0.4 `lm_eval/tasks/gsm8k/gsm8k-cot.yaml`
(task `gsm8k_cot`, version 3.0): 8 fixed exemplars of Wei et al. (`first_n`), prompt
`"Q: {question}\\nA:"`, target delimiter `" "`, few-shot delimiter `"\\n\\n"`, greedy until
`"Q:"`, `"</s>"`, `"<|im_end|>"` (at most 256 new tokens, the harness's default
`max_gen_toks`), then `exact_match` (ignore_case, regexes_to_ignore `,` `\\$` `(?s).*#### `
`\\.$`) of two filters: strict-match `The answer is (\\-?[0-9\\.\\,]+).` and flexible-extract,
the last match of `(-?[$0-9.,]{2,})|(-?[0-9]+)`. Gold = the text after `####` of the answer.

The harness cuts a prompt that does not fit on the left, and refuses to run at all when the
model's context is 256 tokens or less (no room left beside `max_gen_toks`); jaxlm then generates
at most half the context and cuts the prompt too. `truncated_docs` in the results counts the
documents whose prompt was cut, so a score on a different prompt is never silent.

Eval split: `gsm8k/test.jsonl` where the data dir has it; the shared data dir holds the test
split out, so it falls back to `test_sample.jsonl` (its first 50 problems) with a warning.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any

from jaxlm.evaluation import data
from jaxlm.evaluation.generation import exact_match, regex_extract
from jaxlm.evaluation.registry import register
from jaxlm.evaluation.task import (
    TARGET_DELIMITER,
    Task,
    TaskResult,
    fewshot_prefix,
    mean_stderr,
    take,
)

STRICT = r'The answer is (\-?[0-9\.\,]+).'
FLEXIBLE = r'(-?[$0-9.,]{2,})|(-?[0-9]+)'
IGNORE = (',', r'\$', '(?s).*#### ', r'\.$')
UNTIL = ['Q:', '</s>', '<|im_end|>']
MAX_GEN_TOKS = 256

# The `fewshot_config.samples` of gsm8k-cot.yaml, verbatim (question, target).
EXEMPLARS = [
    ('There are 15 trees in the grove. Grove workers will plant trees in the grove today. After '
     'they are done, there will be 21 trees. How many trees did the grove workers plant today?',
     'There are 15 trees originally. Then there were 21 trees after some more were planted. So '
     'there must have been 21 - 15 = 6. The answer is 6.'),
    ('If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the '
     'parking lot?',
     'There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.'),
    ('Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have '
     'left in total?',
     'Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. '
     'After eating 35, they had 74 - 35 = 39. The answer is 39.'),
    ('Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many '
     'lollipops did Jason give to Denny?',
     'Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave '
     'Denny 20 - 12 = 8. The answer is 8.'),
    ('Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many '
     'toys does he have now?',
     'Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more '
     'toys. 5 + 4 = 9. The answer is 9.'),
    ('There were nine computers in the server room. Five more computers were installed each '
     'day, from monday to thursday. How many computers are now in the server room?',
     'There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 '
     '* 4 = 20 computers were added. 9 + 20 is 29. The answer is 29.'),
    ('Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 '
     'more. How many golf balls did he have at the end of wednesday?',
     'Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After '
     'losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33.'),
    ('Olivia has $23. She bought five bagels for $3 each. How much money does she have left?',
     'Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has '
     '23 - 15 dollars left. 23 - 15 is 8. The answer is 8.'),
]

_CHECK = data.field_check({'question': str, 'answer': str},
                          lambda r: None if '####' in r['answer'] else 'answer has no "####"')


def doc_to_text(question: str) -> str:
    return f'Q: {question}\nA:'


def prompt(question: str, k: int) -> str:
    if k > len(EXEMPLARS):
        raise ValueError(f'gsm8k_cot has {len(EXEMPLARS)} exemplars; num_fewshot={k}')
    shots = [doc_to_text(q) + TARGET_DELIMITER + a for q, a in EXEMPLARS[:k]]
    return fewshot_prefix(shots) + doc_to_text(question)


def score(response: str, gold: str) -> dict[str, Any]:
    strict = regex_extract(response, STRICT)
    flexible = regex_extract(response, FLEXIBLE, group_select=-1)
    return {'strict_answer': strict, 'flexible_answer': flexible,
            'exact_match_strict': exact_match(strict, gold, regexes_to_ignore=IGNORE,
                                              ignore_case=True),
            'exact_match_flexible': exact_match(flexible, gold, regexes_to_ignore=IGNORE,
                                                ignore_case=True)}


@register('gsm8k')
class Gsm8k(Task):
    default_num_fewshot = 8

    def __init__(self, split: str = 'test') -> None:
        self.split = split

    def docs(self, root: pathlib.Path) -> list[dict[str, Any]]:
        path = root / 'gsm8k' / f'{self.split}.jsonl'
        if self.split == 'test' and not path.exists():
            logging.warning('%s is held out here; evaluating gsm8k/test_sample.jsonl (its first '
                            '50 problems) instead', path)
            path = root / 'gsm8k' / 'test_sample.jsonl'
        return data.read_jsonl(path, _CHECK)

    def evaluate(self, lm: Any, *, data_dir: str | os.PathLike | None = None,
                 num_fewshot: int | None = None, limit: int | None = None) -> TaskResult:
        k = self.default_num_fewshot if num_fewshot is None else num_fewshot
        docs = take(self.docs(data.resolve_data_dir(data_dir)), limit)
        kwargs = {'until': UNTIL, 'max_gen_toks': MAX_GEN_TOKS, 'temperature': 0.0}
        requests = [(prompt(d['question'], k), kwargs) for d in docs]
        responses = lm.generate_until(requests)
        truncated = lm.generate_until_truncated(requests)
        per_doc = []
        for i, (doc, response, cut) in enumerate(zip(docs, responses, truncated, strict=True)):
            gold = doc['answer'].split('####')[-1].strip()
            per_doc.append({'doc_id': i, 'response': response, 'gold': gold, 'truncated': cut}
                           | score(response, gold))
        names = ('exact_match_strict', 'exact_match_flexible')
        metrics = ({m: sum(d[m] for d in per_doc) / len(per_doc) for m in names}
                   if per_doc else {})
        return TaskResult(self.name, metrics, per_doc, len(docs), k,
                          baseline={m: 0.0 for m in names},
                          stderr={m: mean_stderr([d[m] for d in per_doc]) for m in names
                                  if len(per_doc) > 1},
                          num_requests=len(docs), truncated_docs=sum(truncated))
