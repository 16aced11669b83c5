"""The command lines as a user runs them: train (with overrides), bad input, sample."""

import ast
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, timeout=300, **env):
    return subprocess.run([sys.executable, '-m', *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env})


def _assert_runs(code: str) -> None:
    """`code` exits 0 in a fresh interpreter (whose sys.modules are only what it imports)."""
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_core_never_imports_tensorflow():
    _assert_runs('import sys, jaxlm.train, jaxlm.trainer.loop, jaxlm.inference.decode; '
                 'bad = [m for m in sys.modules if m.split(".")[0] in '
                 '("tensorflow", "seqio", "torch")]; assert not bad, bad')


_ABOVE_TRAINER = ('inference', 'evaluation', 'interop')  # packages that must not use the trainer


def test_inference_evaluation_interop_never_import_trainer():
    code = textwrap.dedent(f'''
        import importlib, importlib.util, pkgutil, sys
        for name in {_ABOVE_TRAINER!r}:
            package = importlib.import_module('jaxlm.' + name)
            for module in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):
                if module.name.endswith('lm_eval_adapter') and not importlib.util.find_spec(
                        'lm_eval'):
                    continue  # the optional `eval` extra
                importlib.import_module(module.name)
        bad = [m for m in sys.modules if m.startswith('jaxlm.trainer')]
        assert not bad, bad
    ''')
    _assert_runs(code)
    # Imports inside functions (run only when called) are found in the source instead.
    lazy = [f'{path}:{node.lineno}'
            for name in _ABOVE_TRAINER
            for path in sorted(pathlib.Path(REPO, 'jaxlm', name).rglob('*.py'))
            for node in ast.walk(ast.parse(path.read_text()))
            if any(m == 'jaxlm.trainer' or m.startswith('jaxlm.trainer.')
                   for m in _imported(node))]
    assert not lazy, lazy


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        return [node.module] + [f'{node.module}.{a.name}' for a in node.names]
    return []


def test_sampling_never_imports_grain_or_optax():
    _assert_runs('import sys, jaxlm.sample, jaxlm.inference.decode, jaxlm.inference.load; '
                 'bad = {m.split(".")[0] for m in sys.modules} & {"grain", "optax"}; '
                 'assert not bad, bad')


def test_train_writes_run_directory_then_sample(shared_data_dir, tmp_path):
    workdir = tmp_path / 'run'
    out = _run(['jaxlm.train', '--config', 'experiments/tiny.py', f'--workdir={workdir}',
                '--config.num_train_steps=4', '--config.log_every_steps=2',
                '--config.eval_every_steps=4', '--config.checkpoint_every_steps=4',
                '--config.model.num_layers=1', '--config.data.num_eval_batches=1',
                f'--config.data.data_dir={shared_data_dir}'])
    assert out.returncode == 0, out.stdout + out.stderr
    assert 'compiled train step' in out.stdout and 'memory per device' in out.stdout
    assert 'tok/s' in out.stdout and 'eta' in out.stdout
    config = json.loads((workdir / 'config.json').read_text())
    assert config['model']['num_layers'] == 1  # the override, resolved
    records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
    train = [r for r in records if 'loss' in r]
    assert [r['step'] for r in train] == [2, 4]
    for key in ('loss', 'learning_rate', 'grad_norm', 'tokens_per_sec', 'mfu'):
        assert isinstance(train[-1][key], float), key
    evals = [r for r in records if 'eval_loss' in r]
    assert evals and evals[-1]['eval_perplexity'] > 1
    assert (workdir / 'checkpoints' / '4').is_dir()
    assert any(f.startswith('events.out.tfevents') for f in os.listdir(workdir / 'tensorboard'))

    out = _run(['jaxlm.sample', f'--workdir={workdir}', '--prompt=ROMEO:', '--max_new_tokens=8',
                '--temperature=0'])
    assert out.returncode == 0, out.stdout + out.stderr
    assert '# step 4' in out.stdout and 'ROMEO:' in out.stdout


@pytest.mark.parametrize('override,message', [
    ('--config.model.num_kv_heads=3', 'model.num_heads'),
    ('--config.mesh.data=3', 'mesh'),
    ('--config.data.global_batch_size=15', 'data.global_batch_size'),
    ('--config.model.vocab_size=100', 'model.vocab_size'),
    ('--config.data.corpus=no_such_corpus', 'no_such_corpus'),
])
def test_bad_config_fails_before_compiling(override, message, shared_data_dir, tmp_path):
    out = _run(['jaxlm.train', '--config', 'experiments/tiny.py', f'--workdir={tmp_path}',
                f'--config.data.data_dir={shared_data_dir}', override],
               XLA_FLAGS='--xla_force_host_platform_device_count=2')
    assert out.returncode != 0
    assert message in out.stdout + out.stderr
    assert 'compiled train step' not in out.stdout


def test_unknown_override_is_rejected(tmp_path):
    out = _run(['jaxlm.train', '--config', 'experiments/tiny.py', f'--workdir={tmp_path}',
                '--config.optimizer.warmup_step=3'])
    assert out.returncode != 0 and 'warmup_step' in out.stderr


def test_unknown_key_added_by_an_experiment_file(tmp_path):
    cfg = tmp_path / 'typo.py'
    cfg.write_text(textwrap.dedent('''
        from jaxlm.config import default_config
        def get_config():
            c = default_config()
            c.model.num_layer = 3
            return c
    '''))
    out = _run(['jaxlm.train', f'--config={cfg}', f'--workdir={tmp_path / "w"}'])
    assert out.returncode != 0 and 'model.num_layer' in out.stdout + out.stderr
