"""`python -m data_pipelines.curate` as a user runs it: a mistake in the setup or the config is
one or two lines naming it (JAXLM_DATA_DIR, the missing file, the bad source), exit status 1."""

import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _curate(tmp_path, source: str, data_dir: str | None):
    config = tmp_path / 'config.py'
    config.write_text(textwrap.dedent(f'''
        from data_pipelines.configs import base_config, source

        def get_config():
            c = base_config()
            c.sources.web = {source}
            return c
    '''))
    env = {k: v for k, v in os.environ.items() if k != 'JAXLM_DATA_DIR'}
    if data_dir is not None:
        env['JAXLM_DATA_DIR'] = data_dir
    return subprocess.run([sys.executable, '-m', 'data_pipelines.curate', f'--config={config}',
                           f'--output={tmp_path / "out"}'], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.mark.parametrize('source,data_dir,message', [
    ("source(['web/*.jsonl'], 'jsonl', 'CC0')", None, 'export JAXLM_DATA_DIR='),
    ("source(['web/*.jsonl'], 'jsonl', 'CC0')", '/nonexistent/data',
     'data directory /nonexistent/data does not exist; point JAXLM_DATA_DIR'),
    ("source(['text_corpus_mix/web/no_such_file.jsonl'], 'jsonl', 'CC0')", 'DATA',
     "config.sources.web.paths: 'text_corpus_mix/web/no_such_file.jsonl' matches no file"),
    ("source(['*.jsonl'], 'jsonl', 'CC0', root='no_such_dir')", 'DATA', 'no_such_dir, which does '
     'not exist'),
    ("source(['*.jsonl'], 'jsonl', 'CC0', text_feild='body')", 'DATA',
     "config.sources.web: unknown setting(s) ['text_feild']"),
    ("source(['*.jsonl'], 'csv', 'CC0')", 'DATA', "config.sources.web.format: 'csv' is not one"),
    ("dict(paths=['*.jsonl'], format='jsonl')", 'DATA', 'config.sources.web.licence: missing'),
])
def test_setup_and_config_mistakes_are_one_line_naming_them(tmp_path, shared_data_dir, source,
                                                            data_dir, message):
    data_dir = str(shared_data_dir) if data_dir == 'DATA' else data_dir
    out = _curate(tmp_path, source, data_dir)
    assert out.returncode == 1, out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if 'data_pipelines.curate: error:' in line]
    assert len(errors) == 1 and message in errors[0], out.stderr
    assert 'Traceback' not in out.stderr, out.stderr
