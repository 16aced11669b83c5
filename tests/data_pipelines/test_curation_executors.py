"""The same shard functions under the multiprocessing and the Ray executors, through the CLI:
identical curated documents and statistics."""

import gzip
import json
import os
import pathlib
import subprocess
import sys

import pytest
from curation_fixtures import write_inputs

_HERE = pathlib.Path(__file__).resolve().parent
_REPO = _HERE.parent.parent


def _config_file(tmp_path, inputs, data_dir) -> pathlib.Path:
    path = tmp_path / 'adversarial_config.py'
    path.write_text(
        'import pathlib\n'
        'from curation_fixtures import curation_config\n\n\n'
        'def get_config():\n'
        f'    c = curation_config(pathlib.Path({str(inputs)!r}), pathlib.Path({str(data_dir)!r}))\n'
        '    c.tokenizer.enabled = False\n'
        '    return c\n')
    return path


def _curate(config, out, *flags):
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(_REPO), str(_HERE)])}
    proc = subprocess.run([sys.executable, '-m', 'data_pipelines.curate', f'--config={config}',
                           f'--output={out}', *flags], env=env, capture_output=True, text=True,
                          timeout=600, cwd=_REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _curated(out):
    docs = []
    for name in sorted(os.listdir(out / 'curated')):
        with gzip.open(out / 'curated' / name, 'rt') as f:
            docs += [json.loads(line) for line in f]
    return docs


def _stages(out):
    stats = json.loads((out / 'stats.json').read_text())
    return [{k: v for k, v in st.items() if k != 'seconds'} for st in stats['stages']]


@pytest.mark.slow
def test_local_processes_and_ray_give_identical_results(shared_data_dir, tmp_path):
    pytest.importorskip('ray')
    write_inputs(tmp_path / 'in', shared_data_dir)
    config = _config_file(tmp_path, tmp_path / 'in', shared_data_dir)
    local = _curate(config, tmp_path / 'local', '--executor=local', '--workers=2')
    assert 'curated 6 documents' in local.stdout
    ray_run = _curate(config, tmp_path / 'ray', '--executor=ray', '--workers=2')
    assert 'curated 6 documents' in ray_run.stdout
    assert _curated(tmp_path / 'ray') == _curated(tmp_path / 'local')
    assert _stages(tmp_path / 'ray') == _stages(tmp_path / 'local')
    assert (tmp_path / 'ray' / 'DATASHEET.md').read_text().startswith('# Datasheet: adversarial')
    # A rerun finds every shard done and changes nothing.
    again = _curate(config, tmp_path / 'local', '--executor=local', '--workers=2')
    assert 'filter: 8 of 8 shards already done' in again.stderr
    assert _stages(tmp_path / 'local') == _stages(tmp_path / 'ray')
