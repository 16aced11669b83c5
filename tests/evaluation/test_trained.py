"""A tiny model trained in the test: it learns a multiple-choice fact set far above chance, and
`python -m jaxlm.eval` evaluates its run directory end to end."""

import json
import os
import subprocess
import sys

import jax
import pytest
from conftest import small_config

from jaxlm.evaluation.lm import JaxLM
from jaxlm.evaluation.multiple_choice import MultipleChoiceTask
from jaxlm.evaluation.registry import get_task, register
from jaxlm.trainer.loop import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FACTS = [('sky', 'blue'), ('grass', 'green'), ('snow', 'white'), ('coal', 'black'),
         ('blood', 'red'), ('sun', 'yellow'), ('sea', 'teal'), ('night', 'dark')]
STEPS = 100


@register('test_color_facts')
class ColorFacts(MultipleChoiceTask):
    """Each fact against three wrong colours from the same set: chance is 1/4."""

    def docs(self, data_dir):
        colors = [c for _, c in FACTS]
        return [{'thing': thing, 'gold': 0,
                 'choices': [color] + [colors[(i + j) % len(colors)] for j in (1, 3, 5)]}
                for i, (thing, color) in enumerate(FACTS)]

    def doc_to_text(self, doc):
        return f'Q: color of {doc["thing"]}? A:'

    def doc_to_choices(self, doc):
        return doc['choices']


@pytest.fixture(scope='module')
def facts_run(shared_data_dir, tmp_path_factory):
    """~20 s: the small config trained on 30 copies of each fact (copies, so that the held-out
    documents do not remove a fact from training)."""
    root = tmp_path_factory.mktemp('facts')
    with open(root / 'facts.jsonl', 'w') as f:
        for _ in range(30):
            for thing, color in FACTS:
                f.write(json.dumps({'text': f'Q: color of {thing}? A: {color}'}) + '\n')
    cfg = small_config(shared_data_dir)
    cfg.data.corpus = str(root / 'facts.jsonl')
    cfg.num_train_steps = STEPS
    cfg.log_every_steps = STEPS
    cfg.optimizer.decay_steps = STEPS
    train(cfg, str(root / 'run'), devices=jax.devices()[:1])
    return root / 'run'


def test_trained_model_beats_chance_on_learnable_multiple_choice(facts_run):
    result = get_task('test_color_facts').evaluate(JaxLM.from_workdir(str(facts_run)),
                                                   data_dir=facts_run)
    assert result.baseline['acc'] == 0.25
    assert result.metrics['acc'] >= 0.75, result.per_doc


def test_eval_cli_writes_results(facts_run, shared_data_dir):
    out = subprocess.run(
        [sys.executable, '-m', 'jaxlm.eval', f'--workdir={facts_run}', '--limit=5',
         '--tasks=perplexity,arc_easy,gsm8k,test_color_facts_missing'],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, 'JAXLM_DATA_DIR': str(shared_data_dir)})
    assert out.returncode != 0 and 'unknown task' in out.stderr  # before loading the model

    out = subprocess.run(
        [sys.executable, '-m', 'jaxlm.eval', f'--workdir={facts_run}', '--limit=5',
         '--tasks=perplexity,arc_easy,gsm8k', '--batch_size=8'],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, 'JAXLM_DATA_DIR': str(shared_data_dir)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert '| task | metric | value | random baseline | docs |' in out.stdout
    assert '| arc_easy | acc_norm |' in out.stdout
    out_dir = facts_run / 'eval' / str(STEPS)
    summary = json.loads((out_dir / 'results.json').read_text())
    assert summary['step'] == STEPS
    results = summary['results']
    assert set(results) == {'perplexity', 'arc_easy', 'gsm8k'}
    # Held-out copies of the facts, which the model has learned: well under a uniform byte.
    ppl = results['perplexity']
    assert ppl['num_docs'] == 5 and ppl['metrics']['bits_per_byte'] < 4.0
    assert ppl['baseline']['bits_per_byte'] == 8.0
    arc = results['arc_easy']
    assert arc['num_docs'] == 5 and arc['num_requests'] == 20 and arc['num_fewshot'] == 0
    assert set(arc['metrics']) == {'acc', 'acc_norm'} and arc['baseline']['acc'] == 0.25
    assert results['gsm8k']['num_fewshot'] == 8
    for r in results.values():
        assert r['seconds'] > 0 and r['requests_per_second'] > 0
    for name in results:
        records = (out_dir / f'samples_{name}.jsonl').read_text().splitlines()
        assert len(records) == 5
    sample = json.loads((out_dir / 'samples_gsm8k.jsonl').read_text().splitlines()[0])
    assert {'doc_id', 'response', 'gold', 'strict_answer', 'flexible_answer',
            'exact_match_strict', 'exact_match_flexible'} <= set(sample)
