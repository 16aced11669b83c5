"""Small benchmark files in the shared data dir's layout, and a fake LM with known scores.
(Not a conftest.py: `tests/conftest.py` is imported as `conftest` by other tests.)"""

import json
import math
import pathlib

MMLU_ROWS = {
    'dev': ['What is 1+1?,1,2,3,4,B', 'Pick C,a,b,c,d,C', '"Quoted, with comma",w,x,y,z,A'],
    'val': [' What is 2+2? ,3,4,5,6,B', 'Pick D,a,b,c,d,D'],
}


def write_jsonl(path: pathlib.Path, records: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join((r if isinstance(r, str) else json.dumps(r)) + '\n'
                            for r in records))


def make_bench_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / 'data'
    for split, rows in MMLU_ROWS.items():
        path = root / 'mmlu' / split / f'high_school_math_{split}.csv'
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('\n'.join(rows) + '\n')
    (root / 'hellaswag').mkdir(parents=True, exist_ok=True)
    (root / 'hellaswag' / 'hellaswag_val_first_half.txt').write_text(
        'Roof shingle removal: A man is sitting on a roof. he\n3\n'
        'is using wrap to wrap a pair of skis.\nis ripping level tiles off.\n'
        "is holding a rubik's cube.\nstarts pulling up roofing on a roof.\n"
        'Clean and jerk: A lady walks to a barbell.  She bends down [step] and grabs the pole.\n'
        '0\nswings.\npulls.\nlifts.\nstands.\n')
    write_jsonl(root / 'gsm8k' / 'test_sample.jsonl', [
        {'question': 'Tom has 3 apples and buys 4. How many?', 'answer': '3+4=7\n#### 7'},
        {'question': 'What is 1000 + 234?', 'answer': 'So 1,234.\n#### 1,234'}])
    icl = root / 'icl_eval_tasks'
    write_jsonl(icl / 'arc_easy.jsonl', [
        {'query': 'Question: What is hot?', 'choices': ['ice', 'fire', 'snow', 'rain'], 'gold': 1},
        {'query': 'Question: What is wet?', 'choices': ['water', 'sand', 'dust', 'ash'],
         'gold': 0}])
    write_jsonl(icl / 'arc_challenge.jsonl', [
        {'query': 'Question: Hard?', 'choices': ['yes', 'no', 'maybe', 'so'], 'gold': 0}])
    write_jsonl(icl / 'piqa.jsonl', [
        {'query': 'Question: Open a jar\n', 'choices': ['twist lid', 'hit it'], 'gold': 0},
        {'query': 'Question: Dry hands\n', 'choices': ['use towel', 'use water'], 'gold': 0}])
    write_jsonl(icl / 'winogrande.jsonl', [
        {'context_options': ['Ann beat Bo so Ann', 'Ann beat Bo so Bo'],
         'continuation': 'was sad.', 'gold': 1},
        {'context_options': ['The cup fit in the box as the cup', 'The cup fit in the box as '
                             'the box'], 'continuation': 'was small.', 'gold': 0}])
    write_jsonl(icl / 'lambada_openai.jsonl', [
        {'context': 'He opened the door and saw his', 'continuation': 'dog'},
        {'context': 'She drank a cup of', 'continuation': 'tea'}])
    return root


class FakeLM:
    """Scores from tables: `lls[(context, continuation)]`, `rolling[text]`, `outputs[prompt]`;
    records every request."""

    max_length = 2048

    def __init__(self, lls=None, greedy=None, rolling=None, outputs=None):
        self.lls, self.greedy = lls or {}, greedy or set()
        self.rolling, self.outputs = rolling or {}, outputs or {}
        self.requests = []

    def loglikelihood(self, requests):
        self.requests.extend(requests)
        return [(self.lls.get(r, -math.inf), r in self.greedy) for r in requests]

    def loglikelihood_rolling(self, texts):
        self.requests.extend(texts)
        return [self.rolling[t] for t in texts]

    def generate_until(self, requests):
        self.requests.extend(requests)
        return [self.outputs.get(ctx, '') for ctx, _ in requests]

    def loglikelihood_truncated(self, requests):
        return [False] * len(requests)

    def generate_until_truncated(self, requests):
        return [False] * len(requests)
