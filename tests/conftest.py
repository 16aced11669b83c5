"""Shared pytest set-up: 8 simulated CPU devices, a private cache, small configs."""

import os
import pathlib
import sys
import tempfile

# Before JAX initialises: every test process sees 8 CPU devices to build meshes from.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAXLM_CACHE_DIR', tempfile.mkdtemp(prefix='jaxlm-test-cache-'))

import pytest  # noqa: E402

_REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_REPO))  # experiments/ is imported as a package by tests


@pytest.fixture(scope='session')
def shared_data_dir() -> pathlib.Path:
    """The read-only shared data dir ($JAXLM_DATA_DIR, else <repo>/../shared/data)."""
    path = pathlib.Path(os.environ.get('JAXLM_DATA_DIR', _REPO.parent / 'shared' / 'data'))
    if not path.is_dir():
        if os.environ.get('CI'):
            pytest.fail(f'shared data dir {path} not found in CI; set JAXLM_DATA_DIR')
        pytest.skip(f'shared data dir {path} not found; set JAXLM_DATA_DIR')
    return path


def small_config(data_dir: pathlib.Path, **mesh):
    """A ~100k-parameter float32 decoder on Tiny Shakespeare bytes: compiles and steps in
    about a second, so sharding and resume tests can compare exact losses."""
    from jaxlm.config import default_config

    c = default_config()
    c.num_train_steps = 3
    c.log_every_steps = 1
    c.eval_every_steps = 1000
    c.checkpoint_every_steps = 1000
    c.mesh.update(data=1, fsdp=1, tensor=1)
    c.mesh.update(**mesh)
    c.model.update(vocab_size=264, num_layers=2, d_model=64, num_heads=4, num_kv_heads=2,
                   head_dim=16, mlp_dim=128, max_seq_len=32, dtype='float32')
    c.data.update(corpus='tiny_shakespeare', data_dir=str(data_dir), seq_len=32,
                  global_batch_size=16, num_eval_batches=1)
    c.data.tokenizer.update(kind='byte', vocab_size=259)
    c.optimizer.update(warmup_steps=2, decay_steps=50, learning_rate=1e-2)
    return c


def read_metrics(workdir) -> list[dict]:
    import json

    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f if line.strip()]


def train_losses(workdir) -> dict[int, float]:
    return {r['step']: r['loss'] for r in read_metrics(workdir) if 'loss' in r}
