"""The benchmark scripts still run (smoke only: their figures are read by people, not asserted).

train_throughput asserts on its own that the PyTorch baseline has jaxlm's parameter count and
the same initial loss on jaxlm's weights, so this also guards the like-for-like comparison.
"""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, tmp_path):
    out_json = tmp_path / 'out.json'
    env = {**os.environ, 'PYTHONPATH': REPO}
    env.pop('XLA_FLAGS', None)  # the scripts choose their own device count
    out = subprocess.run([sys.executable, *args, '--json', str(out_json)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout, json.loads(out_json.read_text())


def test_train_throughput_against_torch(tmp_path):
    stdout, _ = _run(['benchmarks/train_throughput.py', '--configs', 'tiny', '--steps', '2',
                      '--warmup', '0', '--rounds', '1', '--no-torch-compile'], tmp_path)
    assert 'parity: initial loss' in stdout and 'ratio jaxlm / torch eager' in stdout


def test_aot_memory_of_a_large_config(tmp_path):
    stdout, _ = _run(['benchmarks/aot_memory.py', '--models', 'llama_125m', '--seq_len', '256'],
                     tmp_path)
    assert '| llama_125m |' in stdout


def test_decode_throughput_with_and_without_cache(tmp_path):
    stdout, out = _run(['benchmarks/decode_throughput.py', '--config', 'tiny', '--batches', '2',
                        '--lengths', '32', '--runs', '1', '--nocache_steps', '4'], tmp_path)
    assert '| 2 | 32 | 16 + 16 |' in stdout
    assert out['rows'][0]['cache_tok_s'] > 0 and out['rows'][0]['nocache_tok_s'] > 0


def test_minhash_against_datasketch(tmp_path, shared_data_dir):
    stdout, out = _run(['benchmarks/minhash.py', '--docs', '1000', '--shards', '2',
                        '--data_dir', str(shared_data_dir)], tmp_path)
    assert '| datasketch |' in stdout and out['end_to_end']['removed'] > 0
    # Identical shingles and banding: the two recalls of near-exact copies agree.
    assert out['jaxlm (NumPy)']['recall']['0.9-1.0'] == out['datasketch']['recall']['0.9-1.0'] == 1


def test_tokenizer_training_and_encoding(tmp_path, shared_data_dir):
    stdout, out = _run(['benchmarks/tokenizer.py', '--vocab_size', '512', '--train_mb', '0.3',
                        '--docs_mb', '0.6', '--shards', '2', '--data_dir', str(shared_data_dir)],
                       tmp_path)
    assert set(out['kinds']) == {'sentencepiece', 'hf_bpe'}
    assert all(row['encode_mb_per_s'] > 0 for row in out['kinds'].values())


def test_pipeline_bubble_prints_measured_beside_predicted(tmp_path):
    stdout, out = _run(['benchmarks/pipeline_bubble.py', '--microbatches', '4', '--steps', '1',
                        '--batch', '8', '--seq_len', '32'], tmp_path)
    assert '| 4 | 0.429 |' in stdout
    assert out['rows'][0]['step_s'] > 0 and out['no_pipeline_s'] > 0
