"""Shared pytest set-up: 8 simulated CPU devices, a private cache, small configs."""

import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable

# Before JAX initialises: every test process sees 8 CPU devices to build meshes from.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAXLM_CACHE_DIR', tempfile.mkdtemp(prefix='jaxlm-test-cache-'))
# Implicit rank promotion is an error (explicit `x[:, None]` / `jnp.broadcast_to` instead). As
# an env var rather than `jax.config.update` it also reaches the subprocesses tests start
# (`python -m jaxlm.train`, the CLIs, notebook kernels).
os.environ.setdefault('JAX_NUMPY_RANK_PROMOTION', 'raise')

import pytest

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


def train_command(tmp_path: pathlib.Path, data_dir: pathlib.Path, workdir: pathlib.Path,
                  **fields) -> list[str]:
    """`python -m jaxlm.train` on `small_config` with the (2, 2, 2) mesh and the top-level
    `fields` set, written as a config file under `tmp_path`."""
    import textwrap

    config_file = tmp_path / 'small_config.py'
    config_file.write_text(textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
        from conftest import small_config

        def get_config():
            c = small_config({str(data_dir)!r}, data=2, fsdp=2, tensor=2)
            c.update({fields!r})
            return c
    '''))
    return [sys.executable, '-m', 'jaxlm.train', f'--config={config_file}', f'--workdir={workdir}']


def read_metrics(workdir) -> list[dict]:
    import json

    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f if line.strip()]


def train_losses(workdir) -> dict[int, float]:
    return {r['step']: r['loss'] for r in read_metrics(workdir) if 'loss' in r}


def sharded_value_and_grad(loss_fn, init_fn, params, batch, mesh_shape: dict[str, int]):
    """(loss, grads, compiled HLO text) of `loss_fn(params, batch)` jitted on a mesh of
    `mesh_shape`: parameters placed by their logical axes (read from the boxed parameters
    `init_fn()` returns) under the default rule table, the batch data-parallel."""
    import flax.linen as nn
    import jax

    from jaxlm import config as config_lib
    from jaxlm import sharding

    rules = config_lib.rules_as_tuples(config_lib.DEFAULT_LOGICAL_AXIS_RULES)
    mesh = sharding.make_mesh(mesh_shape)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        specs = nn.get_partition_spec(jax.eval_shape(init_fn))
        shardings = sharding.logical_to_sharding(specs, mesh, rules)
        params = jax.device_put(params, shardings)
        batch = jax.device_put(batch, sharding.batch_sharding(mesh, rules))
        compiled = jax.jit(jax.value_and_grad(loss_fn),
                           out_shardings=(None, shardings)).lower(params, batch).compile()
        loss, grads = compiled(params, batch)
    return loss, grads, compiled.as_text()


def steps_saved(ckpt_dir) -> list[int]:
    """The complete checkpoint steps in `ckpt_dir`."""
    names = os.listdir(ckpt_dir) if ckpt_dir.is_dir() else []
    return [int(p) for p in names if p.isdigit()]  # not '<step>.orbax-checkpoint-tmp'


def steps_logged(workdir) -> list[int]:
    """The training steps in `workdir`'s metrics.jsonl."""
    return list(train_losses(workdir)) if (workdir / 'metrics.jsonl').exists() else []


def wait_for_step(proc, steps: Callable[[], list[int]], at_least: int) -> None:
    """Waits until `steps()` reaches `at_least` while `proc` trains."""
    deadline = time.time() + 180
    while time.time() < deadline:
        done = steps()
        if done and max(done) >= at_least:
            return
        if proc.poll() is not None:
            pytest.fail('training exited early:\n' + proc.stdout.read().decode())
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f'no step {at_least} within 180 s')
