"""Every command line answers bad input with one or two lines naming the problem, exit status 1,
and the traceback only behind --verbose (jaxlm/cli.py)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, **env):
    return subprocess.run([sys.executable, '-m', *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})


def _assert_readable(out, prog: str, *names: str) -> None:
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines and lines[0].startswith(f'python -m {prog}: error: '), out.stderr
    assert len([x for x in lines if not x.startswith(f'python -m {prog}: (run with')]) <= 2, lines
    assert 'Traceback' not in out.stderr
    for name in names:
        assert name in out.stderr, (name, out.stderr)


@pytest.mark.parametrize('args,names', [
    (['jaxlm.train', '--config=experiments/no_such.py', '--workdir=W'], ['experiments/no_such.py']),
    (['jaxlm.train', '--config=experiments/tiny.py:no_such', '--workdir=W'], ['no_such']),
    (['jaxlm.train', '--config=experiments/tiny.py', '--workdir=W',
      '--config.optimizer.warmup_step=3'], ['--config.optimizer.warmup_step', 'warmup_steps']),
    (['jaxlm.train', '--config=experiments/tiny.py', '--workdir=W',
      '--config.optimizer.warmup_steps=ten'], ['warmup_steps', 'ten']),
    (['jaxlm.train', '--config=experiments/tiny.py'], ['--workdir']),
    (['jaxlm.train', '--config=experiments/t5_tiny.py', '--workdir=W',
      '--config.data.seq_len=8'], ['data.seq_len', 'span-corruption targets']),
    (['jaxlm.train', '--config=experiments/t5_tiny.py', '--workdir=W',
      '--config.data.extra_ids=1'], ['data.extra_ids', 'noise spans']),
    (['jaxlm.sample', '--workdir=no_such_run'], ['no_such_run']),
    (['jaxlm.eval', '--workdir=no_such_run', '--tasks=perplexity'], ['no_such_run']),
    (['data_pipelines.curate', '--config=no_such_curation.py', '--output=O'],
     ['no_such_curation.py']),
])
def test_bad_input_is_one_readable_line(args, names, tmp_path):
    args = [a.replace('=W', f'={tmp_path / "w"}').replace('=O', f'={tmp_path / "o"}')
            for a in args]
    _assert_readable(_run(args), args[0], *names)
    assert not (tmp_path / 'w').exists()  # nothing written on the way out


@pytest.mark.parametrize('command', [['jaxlm.sample', '--prompt=ROMEO:'],
                                     ['jaxlm.eval', '--tasks=perplexity']])
def test_run_that_cannot_generate_is_refused_by_sampling_and_lm_scoring(command, tmp_path):
    """A classifier run must not be sampled or scored as a language model (which would read
    class logits as next-token ones); the refusal comes before any checkpoint is read."""
    import shutil

    workdir = tmp_path / 'run'
    shutil.copytree(os.path.join(REPO, 'tests', 'fixtures', 'main_checkpoints',
                                 'encoder_decoder'), workdir)
    config = json.loads((workdir / 'config.json').read_text())
    config['model']['architecture'] = 'classifier'
    (workdir / 'config.json').write_text(json.dumps(config))
    out = _run([*command, f'--workdir={workdir}'])
    _assert_readable(out, command[0], "'classifier'", "'encoder_decoder'")
    assert not (workdir / 'eval').exists()


def test_convert_bad_input_is_one_readable_line(tmp_path):
    out = _run(['jaxlm.convert', '--from-hf', str(tmp_path / 'no_such_hf'),
                '--workdir', str(tmp_path / 'w')])
    _assert_readable(out, 'jaxlm.convert', 'no_such_hf')


def test_config_file_with_a_syntax_error_names_file_and_line(tmp_path):
    cfg = tmp_path / 'broken.py'
    cfg.write_text('def get_config():\n    return (\n')
    out = _run(['jaxlm.train', f'--config={cfg}', f'--workdir={tmp_path / "w"}'])
    _assert_readable(out, 'jaxlm.train', f'{cfg}:')


def test_verbose_shows_the_traceback(tmp_path):
    out = _run(['jaxlm.sample', f'--workdir={tmp_path / "no_such_run"}', '--verbose'])
    assert out.returncode != 0 and 'Traceback' in out.stderr


def test_absent_corpus_without_network_names_corpus_url_and_data_dir(tmp_path):
    # A proxy on a closed loopback port: the download fails at once, whatever the network.
    out = _run(['jaxlm.train', '--config=experiments/tiny.py', f'--workdir={tmp_path / "w"}'],
               JAXLM_DATA_DIR=str(tmp_path / 'empty'), JAXLM_CACHE_DIR=str(tmp_path / 'cache'),
               https_proxy='http://127.0.0.1:9', HTTPS_PROXY='http://127.0.0.1:9')
    _assert_readable(out, 'jaxlm.train', "corpus 'tiny_shakespeare'", 'https://',
                     'JAXLM_DATA_DIR', 'tiny_shakespeare/input.txt')


def test_show_config_prints_every_field():
    from experiments.tiny import get_config

    out = _run(['jaxlm.train', '--config=experiments/tiny.py', '--show_config',
                '--config.model.num_layers=3'])
    assert out.returncode == 0, out.stderr
    expected = get_config()
    expected.model.num_layers = 3
    assert json.loads(out.stdout) == json.loads(expected.to_json_best_effort())
    assert 'num_train_steps' in out.stdout and 'logical_axis_rules' in out.stdout
