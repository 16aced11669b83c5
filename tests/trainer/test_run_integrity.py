"""A run's checkpoints survive mistakes: a config that does not fit the run is refused without
touching them, `--fresh` moves them aside, and non-finite steps are never applied or saved."""

import glob
import os
import pathlib
import subprocess

import jax
import numpy as np
import pytest
from conftest import read_metrics, small_config, train_command, train_losses

from jaxlm.checkpoints import restore_params
from jaxlm.config import ConfigError
from jaxlm.trainer.loop import train
from jaxlm.trainer.step import NonFiniteError

MESH = dict(data=2, fsdp=2, tensor=2)


def _cfg(data_dir, steps, **fields):
    c = small_config(data_dir, **MESH)
    c.update({'num_train_steps': steps, 'checkpoint_every_steps': 2, 'eval_every_steps': 1000,
              **fields})
    return c


def _snapshot(workdir) -> dict[str, bytes]:
    """Every file of the workdir but the lock, by path: what a refused run must not change."""
    files = glob.glob(str(workdir / '**' / '*'), recursive=True)
    return {os.path.relpath(f, workdir): open(f, 'rb').read() for f in files
            if os.path.isfile(f) and 'lock' not in os.path.basename(f)}


def _params(checkpoints, step):
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                            _checkpoint_shapes(checkpoints, step))
    return restore_params(str(checkpoints), abstract, step)[1]


def _checkpoint_shapes(checkpoints, step):
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(
        str(checkpoints), item_handlers={'state': ocp.StandardCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(read_only=True))
    return manager.item_metadata(step)['state']['params']


def _all_finite(tree) -> bool:
    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))


@pytest.mark.slow
def test_config_that_does_not_fit_the_run_is_refused_and_fresh_moves_it_aside(
        shared_data_dir, tmp_path):
    workdir = tmp_path / 'run'
    cmd = train_command(tmp_path, shared_data_dir, workdir, num_train_steps=2,
                        checkpoint_every_steps=1)
    train(_cfg(shared_data_dir, 2, checkpoint_every_steps=1), str(workdir))
    before = _snapshot(workdir)

    out = subprocess.run(cmd + ['--config.model.num_layers=3', '--config.num_train_steps=4'],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert 'model.num_layers: 2 -> 3' in out.stderr and '--fresh' in out.stderr
    assert _snapshot(workdir) == before  # checkpoints, config.json and metrics untouched

    out = subprocess.run(cmd + ['--config.model.num_layers=3', '--fresh'], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    [previous] = glob.glob(str(workdir / 'previous-*'))
    assert f'moved the previous run (checkpoints, config, metrics) to {previous}' in out.stdout
    assert _snapshot(pathlib.Path(previous)) == before  # the whole previous run, unchanged
    assert sorted(train_losses(workdir)) == [1, 2]  # started over at step 1
    stacked = jax.tree.leaves(_checkpoint_shapes(workdir / 'checkpoints', 2)['layers'])
    assert {leaf.shape[0] for leaf in stacked} == {3}  # the new model's layers


def test_shape_mismatch_without_saved_config_is_not_damage(shared_data_dir, tmp_path):
    workdir = tmp_path / 'run'
    train(_cfg(shared_data_dir, 2), str(workdir))
    os.remove(workdir / 'config.json')  # e.g. a run from before config.json was compared
    before = _snapshot(workdir)
    with pytest.raises(ConfigError, match='made with another model'):
        train(_cfg(shared_data_dir, 4, model=dict(num_layers=3)), str(workdir))
    assert _snapshot(workdir) == before  # nor is config.json written by the refused run


def test_resumed_run_may_change_its_schedule_and_layout(shared_data_dir, tmp_path):
    workdir = tmp_path / 'run'
    train(_cfg(shared_data_dir, 2), str(workdir))
    cfg = _cfg(shared_data_dir, 4, keep_checkpoints=1, eval_every_steps=2)
    cfg.mesh.update(data=1, fsdp=8, tensor=1)
    cfg.optimizer.learning_rate = 3e-3
    assert train(cfg, str(workdir))['step'] == 4


@pytest.mark.slow
def test_non_finite_step_stops_the_run_and_keeps_the_good_checkpoints(shared_data_dir,
                                                                       tmp_path):
    workdir = tmp_path / 'run'
    cmd = train_command(tmp_path, shared_data_dir, workdir, num_train_steps=4,
                        checkpoint_every_steps=1, keep_checkpoints=2)
    train(_cfg(shared_data_dir, 4, checkpoint_every_steps=1, keep_checkpoints=2), str(workdir))
    good = _params(workdir / 'checkpoints', 4)
    # An infinite learning rate makes step 5's parameters non-finite.
    out = subprocess.run(cmd + ['--config.optimizer.learning_rate=inf',
                                '--config.num_train_steps=8'],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert 'step 5: non-finite' in out.stderr
    steps = sorted(int(p) for p in os.listdir(workdir / 'checkpoints') if p.isdigit())
    assert steps == [3, 4]  # nothing saved after the bad step, the last good one kept
    jax.tree.map(np.testing.assert_array_equal, _params(workdir / 'checkpoints', 4), good)
    assert _all_finite(_params(workdir / 'checkpoints', 3))


def test_skipped_steps_leave_the_state_unchanged_up_to_the_limit(shared_data_dir, tmp_path):
    workdir = tmp_path / 'run'
    train(_cfg(shared_data_dir, 4, checkpoint_every_steps=1, keep_checkpoints=2), str(workdir))
    good = _params(workdir / 'checkpoints', 4)
    cfg = _cfg(shared_data_dir, 10, checkpoint_every_steps=1, keep_checkpoints=2,
               max_skipped_steps=2)
    cfg.optimizer.learning_rate = float('inf')
    with pytest.raises(NonFiniteError, match='step 7: non-finite.*3 such step'):
        train(cfg, str(workdir))
    steps = sorted(int(p) for p in os.listdir(workdir / 'checkpoints') if p.isdigit())
    assert steps == [5, 6]  # the skipped steps are saved: the parameters of step 4
    for step in steps:
        jax.tree.map(np.testing.assert_array_equal, _params(workdir / 'checkpoints', step), good)
    records = [r for r in read_metrics(workdir) if 'loss' in r]
    assert [r['skipped_steps'] for r in records] == [0, 0, 0, 0, 1, 2]
