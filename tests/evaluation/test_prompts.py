"""Few-shot prompts pinned against golden strings (lm-evaluation-harness layouts)."""

from eval_fixtures import FakeLM, make_bench_dir

from jaxlm.evaluation.registry import get_task
from jaxlm.evaluation.tasks.hellaswag import preprocess


def _requests(tmp_path, name, num_fewshot=None, limit=1):
    lm = FakeLM()
    get_task(name).evaluate(lm, data_dir=make_bench_dir(tmp_path), num_fewshot=num_fewshot,
                            limit=limit)
    return lm.requests


def test_mmlu_prompt(tmp_path):
    requests = _requests(tmp_path, 'mmlu', num_fewshot=2)
    context = ('The following are multiple choice questions (with answers) about high school '
               'math.\n\n'
               'What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n'
               'Pick C\nA. a\nB. b\nC. c\nD. d\nAnswer: C\n\n'
               'What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:')
    assert requests == [(context, ' A'), (context, ' B'), (context, ' C'), (context, ' D')]


def test_mmlu_default_is_five_shot_from_dev(tmp_path):
    context = _requests(tmp_path, 'mmlu')[0][0]  # dev has only 3 rows here: all of them
    assert context.count('Answer: ') == 3 and '"' not in context
    assert 'Quoted, with comma\nA. w\nB. x\nC. y\nD. z\nAnswer: A\n\nWhat is 2+2?' in context


def test_hellaswag_prompt(tmp_path):
    requests = _requests(tmp_path, 'hellaswag', limit=2)
    assert requests[:4] == [
        ('Roof shingle removal: A man is sitting on a roof. He', ' is using wrap to wrap a pair '
         'of skis.'),
        ('Roof shingle removal: A man is sitting on a roof. He', ' is ripping level tiles off.'),
        ('Roof shingle removal: A man is sitting on a roof. He', " is holding a rubik's cube."),
        ('Roof shingle removal: A man is sitting on a roof. He', ' starts pulling up roofing on '
         'a roof.')]
    # The harness's preprocess: [..] tags dropped, double spaces collapsed.
    assert requests[4] == ('Clean and jerk: A lady walks to a barbell. She bends down and grabs '
                           'the pole.', ' swings.')


def test_hellaswag_capitalisation_is_restored_only_where_ctx_b_was(shared_data_dir, tmp_path):
    """The harness capitalises ctx_b; WikiHow contexts (ending in '.') have none, so an
    abbreviation inside them is no sentence end."""
    path = tmp_path / 'hellaswag' / 'hellaswag_val_first_half.txt'
    path.parent.mkdir()
    path.write_text('Travel: Book early. Desks are open from 10 a.m. to 10 p.m.\n0\na\nb\nc\nd\n'
                    'Surfing: A man paddles out. then the man\n0\na\nb\nc\nd\n'
                    'Sumo: two men\n0\na\nb\nc\nd\n')
    assert [d['query'] for d in get_task('hellaswag').docs(tmp_path)] == [
        'Travel: Book early. Desks are open from 10 a.m. to 10 p.m.',
        'Surfing: A man paddles out. Then the man', 'Sumo: Two men']
    docs = get_task('hellaswag').docs(shared_data_dir)
    assert docs[0]['query'] == 'Roof shingle removal: A man is sitting on a roof. He'
    assert docs[3471]['query'].endswith('must also be u.s. citizens or u.s. nationals.')
    assert "However, dr. brown's bottles have more parts" in docs[3861]['query']
    assert docs[1692]['query'].endswith('overlays the video. " power dribble')
    raw = (shared_data_dir / 'hellaswag' / 'hellaswag_val_first_half.txt').read_text()
    contexts = [preprocess(line) for line in raw.split('\n')[0::6] if line]
    assert sum(c != d['query'] for c, d in zip(contexts, docs, strict=True)) == 3236


def test_gsm8k_prompt(tmp_path):
    [(context, kwargs)] = _requests(tmp_path, 'gsm8k', num_fewshot=1)
    assert context == (
        'Q: There are 15 trees in the grove. Grove workers will plant trees in the grove today. '
        'After they are done, there will be 21 trees. How many trees did the grove workers plant '
        'today?\nA: There are 15 trees originally. Then there were 21 trees after some more were '
        'planted. So there must have been 21 - 15 = 6. The answer is 6.\n\n'
        'Q: Tom has 3 apples and buys 4. How many?\nA:')
    assert kwargs == {'until': ['Q:', '</s>', '<|im_end|>'], 'max_gen_toks': 256,
                      'temperature': 0.0}
    [(context, _)] = _requests(tmp_path, 'gsm8k')
    assert context.count('\nA: ') == 8 and context.endswith('The answer is 8.\n\nQ: Tom has 3 '
                                                            'apples and buys 4. How many?\nA:')


def test_arc_prompt_with_shots_from_the_same_split(tmp_path):
    requests = _requests(tmp_path, 'arc_easy', num_fewshot=1)
    context = 'Question: What is wet?\nAnswer: water\n\nQuestion: What is hot?\nAnswer:'
    assert requests == [(context, ' ice'), (context, ' fire'), (context, ' snow'),
                        (context, ' rain')]


def test_piqa_prompt(tmp_path):
    assert _requests(tmp_path, 'piqa') == [('Question: Open a jar\nAnswer:', ' twist lid'),
                                           ('Question: Open a jar\nAnswer:', ' hit it')]


def test_winogrande_partial_scoring(tmp_path):
    shot = 'The cup fit in the box as the cup was small.\n\n'
    assert _requests(tmp_path, 'winogrande', num_fewshot=1) == [
        (shot + 'Ann beat Bo so Ann', ' was sad.'), (shot + 'Ann beat Bo so Bo', ' was sad.')]


def test_lambada_prompt(tmp_path):
    assert _requests(tmp_path, 'lambada', limit=None) == [
        ('He opened the door and saw his', ' dog'), ('She drank a cup of', ' tea')]
