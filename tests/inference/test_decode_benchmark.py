"""benchmarks/decode_throughput.py still runs (smoke only, tiny config)."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_decode_throughput_runs(tmp_path):
    out_json = tmp_path / 'out.json'
    env = {**os.environ, 'PYTHONPATH': REPO}
    env.pop('XLA_FLAGS', None)
    out = subprocess.run([sys.executable, 'benchmarks/decode_throughput.py', '--config', 'tiny',
                          '--batches', '2', '--lengths', '32', '--runs', '1',
                          '--nocache_steps', '4', '--json', str(out_json)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert '| 2 | 32 | 16 + 16 |' in out.stdout
    rows = json.loads(out_json.read_text())['rows']
    assert rows[0]['cache_tok_s'] > 0 and rows[0]['nocache_tok_s'] > 0
