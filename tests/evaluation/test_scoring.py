"""Scores computed by hand from a fake LM's known log-likelihoods."""

import json
import math

import pytest
from eval_fixtures import FakeLM, make_bench_dir, write_jsonl

from jaxlm.evaluation.multiple_choice import MultipleChoiceTask
from jaxlm.evaluation.registry import UnknownTaskError, get_task, list_tasks, register
from jaxlm.evaluation.tasks.gsm8k import score

DOCS = [{'q': 'first', 'choices': ['a', 'bbbb'], 'gold': 1},
        {'q': 'second', 'choices': ['xx', 'y'], 'gold': 0}]


@register('test_fake_mc')
class FakeMC(MultipleChoiceTask):
    def docs(self, data_dir):
        return DOCS

    def doc_to_text(self, doc):
        return doc['q']

    def doc_to_choices(self, doc):
        return doc['choices']


def test_acc_and_acc_norm_by_hand(tmp_path):
    # Doc 0: ' a' is likelier in total (-2 > -4), but ' bbbb' per character (-1 > -2): acc is
    # wrong and acc_norm right. Doc 1: ' xx' wins both ways (-1 vs -3; -0.5 vs -3).
    lm = FakeLM(lls={('first', ' a'): -2.0, ('first', ' bbbb'): -4.0,
                     ('second', ' xx'): -1.0, ('second', ' y'): -3.0})
    result = get_task('test_fake_mc').evaluate(lm, data_dir=tmp_path)
    assert result.metrics == {'acc': 0.5, 'acc_norm': 1.0}
    assert result.baseline == {'acc': 0.5, 'acc_norm': 0.5}
    assert result.stderr['acc'] == pytest.approx(0.5) and result.stderr['acc_norm'] == 0.0
    assert result.per_doc[0] == {'doc_id': 0, 'gold': 1, 'pred': 0, 'pred_norm': 1, 'acc': 0.0,
                                 'acc_norm': 1.0, 'loglikelihoods': [-2.0, -4.0],
                                 'truncated': False}
    assert (result.num_docs, result.num_fewshot, result.num_requests) == (2, 0, 4)
    assert get_task('test_fake_mc').evaluate(lm, data_dir=tmp_path, limit=1).num_docs == 1


def test_registry():
    assert {'perplexity', 'hellaswag', 'mmlu', 'gsm8k', 'arc_easy', 'arc_challenge', 'piqa',
            'winogrande', 'lambada'} <= set(list_tasks())
    with pytest.raises(UnknownTaskError, match='unknown task'):
        get_task('no_such_task')
    with pytest.raises(UnknownTaskError, match="'mmlu' has no option splt; its options: split"):
        get_task('mmlu', splt='test')  # a typo in --option mmlu.splt=test
    with pytest.raises(ValueError, match='already registered'):
        register('mmlu')(FakeMC)


def test_mmlu_micro_macro_and_per_subject(tmp_path):
    root = make_bench_dir(tmp_path)
    other = root / 'mmlu' / 'val' / 'zoology_val.csv'
    other.write_text('Q1,a,b,c,d,A\nQ2,a,b,c,d,A\nQ3,a,b,c,d,A\nQ4,a,b,c,d,A\n')
    (root / 'mmlu' / 'dev' / 'zoology_dev.csv').write_text('Q0,a,b,c,d,A\n')

    class AlwaysA(FakeLM):
        def loglikelihood(self, requests):
            return [(-1.0 if cont == ' A' else -2.0, False) for _, cont in requests]

    result = get_task('mmlu').evaluate(AlwaysA(), data_dir=root, num_fewshot=0)
    # high_school_math: answers B, D -> 0/2; zoology: 4/4. Micro 4/6, macro (0 + 1) / 2.
    assert result.metrics == {'acc': pytest.approx(4 / 6), 'acc_macro': 0.5,
                              'acc/high_school_math': 0.0, 'acc/zoology': 1.0}
    assert result.baseline['acc'] == 0.25
    assert get_task('mmlu').evaluate(AlwaysA(), data_dir=root, limit=1).num_docs == 2


def test_winogrande_reports_acc_only(tmp_path):
    lm = FakeLM(lls={('Ann beat Bo so Ann', ' was sad.'): -5.0,
                     ('Ann beat Bo so Bo', ' was sad.'): -4.0})
    result = get_task('winogrande').evaluate(lm, data_dir=make_bench_dir(tmp_path), limit=1)
    assert result.metrics == {'acc': 1.0}


def test_lambada_acc_and_perplexity(tmp_path):
    lm = FakeLM(lls={('He opened the door and saw his', ' dog'): -1.0,
                     ('She drank a cup of', ' tea'): -3.0},
                greedy={('He opened the door and saw his', ' dog')})
    result = get_task('lambada').evaluate(lm, data_dir=make_bench_dir(tmp_path))
    assert result.metrics == {'acc': 0.5, 'perplexity': pytest.approx(math.exp(2.0))}


def test_perplexity_bits_per_byte(tmp_path):
    docs = ['ab cd', 'é']  # 5 + 2 UTF-8 bytes, 2 + 1 words
    write_jsonl(tmp_path / 'text.jsonl', [{'text': d} for d in docs])
    lm = FakeLM(rolling={'ab cd': -7 * math.log(2), 'é': 0.0})
    result = get_task('perplexity', text=str(tmp_path / 'text.jsonl')).evaluate(lm)
    assert result.metrics == pytest.approx({'bits_per_byte': 1.0, 'byte_perplexity': 2.0,
                                            'word_perplexity': 2 ** (7 / 3)})
    assert result.baseline == pytest.approx({'bits_per_byte': 8.0, 'byte_perplexity': 256.0,
                                             'word_perplexity': 256 ** (7 / 3)})
    json.dumps(result.metrics | result.baseline)  # plain floats


def test_gsm8k_exact_match_on_generations(tmp_path):
    root = make_bench_dir(tmp_path)
    prompt_end = '\nA:'
    lm = FakeLM()
    get_task('gsm8k').evaluate(lm, data_dir=root, num_fewshot=0)
    first, second = (ctx for ctx, _ in lm.requests)
    assert first.endswith(prompt_end)
    lm = FakeLM(outputs={first: ' 3 + 4 = 7. The answer is 7.\n\n',
                         second: ' It is 1,234 dollars, so $1,234.'})
    result = get_task('gsm8k').evaluate(lm, data_dir=root, num_fewshot=0)
    assert result.metrics == {'exact_match_strict': 0.5, 'exact_match_flexible': 1.0}
    assert result.per_doc[1] == {
        'doc_id': 1, 'response': ' It is 1,234 dollars, so $1,234.', 'gold': '1,234',
        'strict_answer': '[invalid]', 'flexible_answer': '$1,234.', 'exact_match_strict': 0.0,
        'exact_match_flexible': 1.0, 'truncated': False}


@pytest.mark.parametrize('response,gold,strict,flexible,em_strict,em_flexible', [
    ('So 3 + 4 = 7. The answer is 7.', '7', '7', '7.', 1.0, 1.0),
    ('The answer is 1,234.', '1234', '1,234', '1,234.', 1.0, 1.0),
    ('I have 5 apples, so $17.50.', '17.50', '[invalid]', '$17.50.', 0.0, 1.0),
    ('#### 7', '7', '[invalid]', '7', 0.0, 1.0),
    ('no idea', '3', '[invalid]', '[invalid]', 0.0, 0.0),
    # The harness's quirk: the pattern's final `.` eats the last digit at the end of the text.
    ('The answer is -3.5', '-3.5', '-3.', '-3.5', 0.0, 1.0),
    ('The answer is 12 apples. Then 15.', '12', '12', '15.', 1.0, 0.0),
])
def test_gsm8k_answer_extraction(response, gold, strict, flexible, em_strict, em_flexible):
    assert score(response, gold) == {'strict_answer': strict, 'flexible_answer': flexible,
                                     'exact_match_strict': em_strict,
                                     'exact_match_flexible': em_flexible}
