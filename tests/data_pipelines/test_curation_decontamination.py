"""Decontamination: 13-gram overlap with the evaluation sets, counted per benchmark."""

import json

import numpy as np

from data_pipelines.decontamination import BENCHMARKS, Decontaminator, build_index, ngram_hashes
from data_pipelines.document import Document


def test_ngram_hashes_normalise_case_and_punctuation():
    a = ngram_hashes('The quick brown fox, jumps!', 3)
    b = ngram_hashes('the QUICK brown-fox jumps', 3)
    assert len(a) == 3 and np.array_equal(a, b)
    assert len(ngram_hashes('too short', 3)) == 0


def test_documents_sharing_an_eval_13_gram_are_removed_per_benchmark(shared_data_dir, tmp_path):
    index = str(tmp_path / 'index.npz')
    items = build_index(str(shared_data_dir), ('gsm8k', 'hellaswag', 'mmlu'), 13, index)
    assert items == {'gsm8k': 50, 'hellaswag': 5021, 'mmlu': 1930}
    decont = Decontaminator(index)
    with open(shared_data_dir / 'gsm8k' / 'test_sample.jsonl') as f:
        question = json.loads(f.readline())['question']
    words = question.split()
    inside = ' '.join(words[5:18])  # exactly 13 words of the question
    assert decont(Document('a', f'Some blog text. {inside.upper()} and more.')) == \
        'contaminated_gsm8k'
    assert isinstance(decont(Document('b', ' '.join(words[5:17]) + ' banana')), Document)
    with open(shared_data_dir / 'hellaswag' / 'hellaswag_val_first_half.txt') as f:
        lines = f.read().split('\n')
    gold = lines[2 + int(lines[1])]
    assert decont(Document('c', f'{lines[0]} {gold}')) == 'contaminated_hellaswag'
    assert isinstance(decont(Document('d', 'An ordinary document ' * 20)), Document)
    assert set(BENCHMARKS) >= {'mmlu', 'hellaswag', 'gsm8k', 'humaneval', 'arc_easy'}
