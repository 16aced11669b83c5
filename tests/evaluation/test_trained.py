"""A tiny model trained in the test: it learns a multiple-choice fact set far above chance, and
`python -m jaxlm.eval` evaluates its run directory end to end."""

import json
import math
import os
import pathlib
import shutil
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import pytest
from conftest import small_config

import jaxlm.eval
from jaxlm.checkpoints import CheckpointError, save_params
from jaxlm.evaluation.lm import JaxLM
from jaxlm.evaluation.multiple_choice import MultipleChoiceTask
from jaxlm.evaluation.registry import get_task, register
from jaxlm.evaluation.task import Task, TaskResult
from jaxlm.inference.load import load_run
from jaxlm.trainer.loop import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FACTS = [('sky', 'blue'), ('grass', 'green'), ('snow', 'white'), ('coal', 'black'),
         ('blood', 'red'), ('sun', 'yellow'), ('sea', 'teal'), ('night', 'dark')]
STEPS = 100


def _run(module, *args, data_dir=None):
    env = {**os.environ, **({'JAXLM_DATA_DIR': str(data_dir)} if data_dir else {})}
    return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)


def _one_line_error(out, module, message):
    """Exit 1, `python -m module: error: ...message...` and the --verbose hint, no traceback."""
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-2].startswith(f'python -m {module}: error: ') and message in lines[-2], lines
    assert 'Traceback' not in out.stderr


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
    out = _run('jaxlm.eval', f'--workdir={facts_run}', '--limit=5',
               '--tasks=perplexity,arc_easy,gsm8k,test_color_facts_missing',
               data_dir=shared_data_dir)
    # One line naming the task and the known ones, before loading the model.
    _one_line_error(out, 'jaxlm.eval', "unknown task 'test_color_facts_missing'; known tasks: "
                    'arc_challenge, arc_easy, gsm8k, hellaswag,')

    out = _run('jaxlm.eval', f'--workdir={facts_run}', '--limit=5',
               '--tasks=perplexity,arc_easy,gsm8k', '--batch_size=8', '--dtype=float32',
               data_dir=shared_data_dir)
    assert out.returncode == 0, out.stdout + out.stderr
    assert '| task | metric | value | random baseline | docs |' in out.stdout
    assert '| arc_easy | acc_norm |' in out.stdout
    out_dir = facts_run / 'eval' / str(STEPS)
    summary = json.loads((out_dir / 'results.json').read_text())
    assert summary['step'] == STEPS and summary['dtype'] == 'float32'
    assert summary['max_length'] == 32
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
    # The 8-shot prompts cannot fit a 32-token context: said, not silently scored.
    assert results['gsm8k']['truncated_docs'] == 5
    assert 'cut on the left' in results['gsm8k']['truncation']
    assert "note: gsm8k: 5 of 5 documents did not fit the model's 32-token context" in out.stdout
    assert results['perplexity']['truncated_docs'] == 0
    for r in results.values():
        assert r['seconds'] > 0 and r['requests_per_second'] > 0
    for name in results:
        records = (out_dir / f'samples_{name}.jsonl').read_text().splitlines()
        assert len(records) == 5
    sample = json.loads((out_dir / 'samples_gsm8k.jsonl').read_text().splitlines()[0])
    assert {'doc_id', 'response', 'gold', 'strict_answer', 'flexible_answer',
            'exact_match_strict', 'exact_match_flexible'} <= set(sample)


def test_eval_limit_below_one_is_an_error_that_writes_nothing(facts_run, shared_data_dir):
    results = facts_run / 'eval' / str(STEPS) / 'results.json'
    before = results.read_bytes() if results.exists() else None
    for limit in ('0', '-3'):
        out = _run('jaxlm.eval', f'--workdir={facts_run}', f'--limit={limit}',
                   '--tasks=arc_easy', data_dir=shared_data_dir)
        _one_line_error(out, 'jaxlm.eval', f'--limit must be at least 1 (documents per task), '
                        f'got {limit}')
    assert (results.read_bytes() if results.exists() else None) == before


@register('test_nan_metric')
class NanMetric(Task):
    def evaluate(self, lm, *, data_dir=None, num_fewshot=None, limit=None):
        return TaskResult(self.name, {'acc': math.nan}, [{'doc_id': 0, 'll': -math.inf}], 1, 0,
                          baseline={'acc': 0.25}, stderr={'acc': math.nan})


def test_nan_metrics_are_written_as_null(facts_run, tmp_path):
    workdir = tmp_path / 'run'
    shutil.copytree(facts_run, workdir)
    out_dir, _ = jaxlm.eval.run(str(workdir), ['test_nan_metric'])

    def strict(name):
        raise AssertionError(f'{name} is not JSON')

    summary = json.loads((pathlib.Path(out_dir) / 'results.json').read_text(),
                         parse_constant=strict)
    r = summary['results']['test_nan_metric']
    assert r['metrics'] == {'acc': None} and r['stderr'] == {'acc': None}
    sample = (pathlib.Path(out_dir) / 'samples_test_nan_metric.jsonl').read_text()
    assert json.loads(sample, parse_constant=strict) == {'doc_id': 0, 'll': None}


def test_dtype_overrides_the_run_compute_dtype(facts_run):
    request = [('Q: color of sky? A:', ' blue')]
    f32 = JaxLM.from_workdir(str(facts_run))  # the run trained in float32
    bf16 = JaxLM.from_workdir(str(facts_run), dtype='bfloat16')
    assert f32.model.cfg.dtype == jnp.float32 and bf16.model.cfg.dtype == jnp.bfloat16
    (lp32, _), = f32.loglikelihood(request)
    (lp16, _), = bf16.loglikelihood(request)
    assert lp16 != lp32 and lp16 == pytest.approx(lp32, abs=0.1)


def test_non_finite_parameters_are_refused(facts_run, tmp_path):
    """A diverged checkpoint: evaluation and sampling refuse it, naming the checkpoint."""
    workdir = tmp_path / 'diverged'
    workdir.mkdir()
    shutil.copy(facts_run / 'config.json', workdir)
    params = flax.traverse_util.flatten_dict(load_run(str(facts_run)).params)
    key = sorted(params)[0]
    params[key] = params[key].at[0].set(jnp.nan)
    save_params(str(workdir / 'checkpoints'), STEPS, params.items())
    with pytest.raises(CheckpointError, match='non-finite parameters'):
        JaxLM.from_workdir(str(workdir))
    out = _run('jaxlm.sample', f'--workdir={workdir}', '--max_new_tokens=2')
    _one_line_error(out, 'jaxlm.sample', f'checkpoint {workdir}/checkpoints/{STEPS} has '
                    'non-finite parameters (in 1 of ')


@pytest.mark.parametrize('module', ['jaxlm.eval', 'jaxlm.sample'])
def test_workdir_without_checkpoint_is_one_line(module, facts_run, tmp_path):
    shutil.copy(facts_run / 'config.json', tmp_path)
    out = _run(module, f'--workdir={tmp_path}', *(['--tasks=arc_easy'] if module ==
                                                  'jaxlm.eval' else []))
    _one_line_error(out, module, f'{tmp_path} has no checkpoint yet')


def test_sample_cli_rejects_bad_sampling_arguments(facts_run):
    out = _run('jaxlm.sample', f'--workdir={facts_run}', '--temperature=-1')
    _one_line_error(out, 'jaxlm.sample', 'temperature must be >= 0 (0 = greedy), got -1.0')
