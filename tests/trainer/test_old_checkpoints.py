"""Checkpoints written by main before the model refactor (commit 139ce2c: tests/fixtures/
main_checkpoints, made by tests/fixtures/make_old_checkpoints.py) still restore, and continue to
the numbers that commit computed from them (expected.json): a decoder and an encoder-decoder
resume training from step 4 to step 6 with the same losses; the decoder loads with `load_run`,
generates the same greedy tokens from the same logits and scores the same perplexity.

Tolerances: on one CPU, commit 139ce2c reproduces every number bitwise (resumed losses, eval loss,
perplexity). The checks still allow 1e-6 relative (a few float32 ulps; 1e-5 for logits), so that
a refactor that reorders float arithmetic passes while any mis-restored, mis-mapped or re-
initialised parameter, optimizer state or data position (changes of 1e-3 and more) fails.
Perplexities are compared as logs: word perplexity is exp(-ΣLL / Σwords), which multiplies a
relative change of ΣLL by about 26 here.
"""

import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import train_losses

FIXTURE = pathlib.Path(__file__).resolve().parent.parent / 'fixtures' / 'main_checkpoints'
EXPECTED = json.loads((FIXTURE / 'expected.json').read_text())
SAVED_STEP = 4  # the fixture runs' one checkpoint
RTOL = 1e-6


def _copy_run(name: str, tmp_path: pathlib.Path) -> pathlib.Path:
    """The fixture run `name` in tmp_path: resuming and evaluating write into the workdir."""
    workdir = tmp_path / name
    shutil.copytree(FIXTURE / name, workdir)
    return workdir


def _python(args: list[str], data_dir: pathlib.Path) -> str:
    env = dict(os.environ, JAXLM_DATA_DIR=str(data_dir))  # config.json's data.data_dir is ''
    env.pop('XLA_FLAGS', None)  # one CPU device, as the fixture was made (its mesh is 1x1x1)
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize('name', ['decoder', 'encoder_decoder'])
def test_resumes_to_the_same_losses(name, shared_data_dir, tmp_path):
    workdir, expected = _copy_run(name, tmp_path), EXPECTED[name]
    # The run's own config.json (as the run's experiment file would give it) with more steps.
    # A schema change that renames or drops fields must still accept this (or map it here).
    config_file = tmp_path / 'resume_config.py'
    config_file.write_text(textwrap.dedent(f'''
        import json

        from jaxlm.config import default_config

        def get_config():
            c = default_config()
            with open({str(workdir / 'config.json')!r}) as f:
                c.update(json.load(f))
            c.num_train_steps = {expected['resumed_to']}
            return c
    '''))
    out = _python(['-m', 'jaxlm.train', f'--config={config_file}', f'--workdir={workdir}'],
                  shared_data_dir)
    assert f'resumed from {workdir}/checkpoints/{SAVED_STEP}' in out, out
    losses = {str(s): loss for s, loss in train_losses(workdir).items() if s > SAVED_STEP}
    assert losses == pytest.approx(expected['losses'], rel=RTOL, abs=0)
    with open(workdir / 'metrics.jsonl') as f:
        evals = [r['eval_loss'] for r in map(json.loads, f)
                 if r['step'] == expected['resumed_to'] and 'eval_loss' in r]
    assert evals == [pytest.approx(expected['eval_loss'], rel=RTOL, abs=0)]


def test_decoder_generates_the_same_tokens(tmp_path):
    from jaxlm.inference.decode import generate, generate_with_logits
    from jaxlm.inference.load import load_run

    expected = EXPECTED['decoder']['generate']
    run = load_run(str(_copy_run('decoder', tmp_path)))
    assert run.step == expected['step'] == SAVED_STEP
    prompts, n = expected['prompts'], expected['max_new_tokens']
    tokens = generate(run.model, run.params, prompts, max_new_tokens=n)
    assert [[int(t) for t in row] for row in tokens] == expected['tokens']
    _, logits = generate_with_logits(run.model, run.params, prompts, max_new_tokens=n)
    # Stored to 7 significant digits; greedy all along, so the same positions are scored.
    reference = json.loads((FIXTURE / 'expected_logits.json').read_text())
    np.testing.assert_allclose(np.asarray(logits), np.asarray(reference), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_decoder_scores_the_same_perplexity(shared_data_dir, tmp_path):
    workdir, expected = _copy_run('decoder', tmp_path), EXPECTED['decoder']['perplexity']
    _python(['-m', 'jaxlm.eval', f'--workdir={workdir}', '--tasks=perplexity'], shared_data_dir)
    with open(workdir / 'eval' / str(SAVED_STEP) / 'results.json') as f:
        result = json.load(f)['results']['perplexity']
    assert result['num_docs'] == expected['num_docs']
    metrics = result['metrics']
    assert sorted(metrics) == sorted(expected['metrics'])
    assert metrics['bits_per_byte'] == pytest.approx(
        expected['metrics']['bits_per_byte'], rel=RTOL, abs=0)
    for key in ('byte_perplexity', 'word_perplexity'):  # exp(...): compare the exponents
        assert math.log(metrics[key]) == pytest.approx(
            math.log(expected['metrics'][key]), rel=RTOL, abs=0), key
