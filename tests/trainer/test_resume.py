"""Checkpoints resume exactly: after a clean stop, after SIGKILL, onto another mesh, and past a
corrupt checkpoint."""

import functools
import glob
import os
import shutil
import signal
import subprocess

import jax
import numpy as np
import pytest
from conftest import (
    read_metrics,
    small_config,
    steps_logged,
    steps_saved,
    train_command,
    train_losses,
    wait_for_step,
)

from jaxlm.trainer.loop import train

MESH = dict(data=2, fsdp=2, tensor=2)
N = 3


def _cfg(data_dir, steps, **mesh):
    c = small_config(data_dir, **(mesh or MESH))
    c.num_train_steps = steps
    c.checkpoint_every_steps = N
    c.eval_every_steps = N
    return c


@pytest.fixture(scope='module')
def uninterrupted(shared_data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp('full')
    train(_cfg(shared_data_dir, 2 * N), str(workdir))
    return train_losses(workdir)


@pytest.fixture(scope='module')
def stopped_at_n(shared_data_dir, tmp_path_factory):
    """A workdir trained for N steps on 8 devices and stopped (its last checkpoint is step N)."""
    workdir = tmp_path_factory.mktemp('half')
    train(_cfg(shared_data_dir, N), str(workdir))
    return workdir


def _second_half(losses):
    return [losses[s] for s in range(N + 1, 2 * N + 1)]


def test_resume_is_bitwise_identical(uninterrupted, stopped_at_n, shared_data_dir, tmp_path):
    workdir = tmp_path / 'run'
    shutil.copytree(stopped_at_n, workdir)
    summary = train(_cfg(shared_data_dir, 2 * N), str(workdir))  # raising num_train_steps
    losses = train_losses(workdir)
    assert sorted(losses) == list(range(1, 2 * N + 1))
    assert _second_half(losses) == _second_half(uninterrupted)  # bitwise, not approximately
    assert summary['step'] == 2 * N
    # Eval at the same step sees the same parameters.
    evals = {r['step']: r['eval_loss'] for r in read_metrics(workdir) if 'eval_loss' in r}
    assert evals[2 * N] > 0


@pytest.mark.parametrize('devices,mesh', [(1, dict(data=1)), (8, dict(fsdp=4, tensor=2))])
def test_restore_onto_other_mesh(devices, mesh, uninterrupted, stopped_at_n, shared_data_dir,
                                 tmp_path):
    workdir = tmp_path / 'run'
    shutil.copytree(stopped_at_n, workdir)
    train(_cfg(shared_data_dir, 2 * N, **mesh), str(workdir), devices=jax.devices()[:devices])
    np.testing.assert_allclose(_second_half(train_losses(workdir)),
                               _second_half(uninterrupted), rtol=1e-5)


def test_corrupt_latest_checkpoint_falls_back(uninterrupted, stopped_at_n, shared_data_dir,
                                              tmp_path, caplog):
    workdir = tmp_path / 'run'
    shutil.copytree(stopped_at_n, workdir)
    train(_cfg(shared_data_dir, 2 * N), str(workdir))
    latest = workdir / 'checkpoints' / str(2 * N)
    for f in glob.glob(str(latest / 'state' / '**' / '*'), recursive=True):
        if os.path.isfile(f):
            with open(f, 'wb') as fh:
                fh.write(b'garbage')
    # Asking for the same number of steps again: it must notice step 2N is unreadable, resume
    # from step N, keep the broken directory aside, and retrain the same second half.
    train(_cfg(shared_data_dir, 2 * N), str(workdir))
    assert glob.glob(str(workdir / 'checkpoints' / f'{2 * N}.unreadable-*'))
    assert (workdir / 'checkpoints' / str(2 * N)).is_dir()  # saved again, readable
    assert _second_half(train_losses(workdir)) == _second_half(uninterrupted)


def test_checkpoint_directory_with_no_readable_step_is_an_error(stopped_at_n, shared_data_dir,
                                                                  tmp_path):
    from jaxlm.checkpoints import CheckpointError

    workdir = tmp_path / 'run'
    shutil.copytree(stopped_at_n, workdir)
    for f in glob.glob(str(workdir / 'checkpoints' / str(N) / 'state' / '**' / '*'),
                       recursive=True):
        if os.path.isfile(f):
            os.remove(f)
    with pytest.raises(CheckpointError, match='no readable checkpoint'):
        train(_cfg(shared_data_dir, 2 * N), str(workdir))


def _flip_bytes(path, offset: int) -> None:
    with open(path, 'r+b') as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_flipped_bytes_are_detected_and_the_older_checkpoint_used(uninterrupted, stopped_at_n,
                                                                   shared_data_dir, tmp_path):
    workdir = tmp_path / 'run'
    shutil.copytree(stopped_at_n, workdir)
    train(_cfg(shared_data_dir, 2 * N), str(workdir))
    latest = workdir / 'checkpoints' / str(2 * N)
    files = [f for f in glob.glob(str(latest / 'state' / '**' / '*'), recursive=True)
             if os.path.isfile(f)]
    biggest = max(files, key=os.path.getsize)  # the parameters' and moments' data file
    _flip_bytes(biggest, os.path.getsize(biggest) // 2)  # no length or format changes
    train(_cfg(shared_data_dir, 2 * N), str(workdir))
    assert glob.glob(str(workdir / 'checkpoints' / f'{2 * N}.unreadable-*'))
    assert _second_half(train_losses(workdir)) == _second_half(uninterrupted)


def _resume_matches_uninterrupted(cmd, workdir, last, shared_data_dir, tmp_path) -> None:
    """Running `cmd` again resumes from step `last` and trains the same steps as a run never
    stopped."""
    ckpt_dir = workdir / 'checkpoints'
    resume_to = last + 4
    out = subprocess.run(cmd + [f'--config.num_train_steps={resume_to}'], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f'resumed from {ckpt_dir}/{last}' in out.stdout
    resumed = train_losses(workdir)
    assert sorted(resumed) == list(range(1, resume_to + 1))  # no duplicated or missing steps

    reference = tmp_path / 'reference'
    cfg = small_config(shared_data_dir, data=2, fsdp=2, tensor=2)
    cfg.num_train_steps = resume_to
    cfg.checkpoint_every_steps = 5
    cfg.eval_every_steps = 100000
    train(cfg, str(reference))
    expected = train_losses(reference)
    assert [resumed[s] for s in range(last + 1, resume_to + 1)] == [
        expected[s] for s in range(last + 1, resume_to + 1)]


@pytest.mark.slow
def test_sigkill_resumes_from_last_complete_checkpoint(shared_data_dir, tmp_path):
    workdir = tmp_path / 'run'
    cmd = train_command(tmp_path, shared_data_dir, workdir, num_train_steps=100000,
                        checkpoint_every_steps=5, eval_every_steps=100000)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpt_dir = workdir / 'checkpoints'
    wait_for_step(proc, functools.partial(steps_saved, ckpt_dir), 15)
    proc.send_signal(signal.SIGKILL)  # no chance to finish an async save or flush anything
    proc.wait()
    last = max(steps_saved(ckpt_dir))
    _resume_matches_uninterrupted(cmd, workdir, last, shared_data_dir, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
def test_stop_signal_saves_at_the_next_step_and_resumes(signum, shared_data_dir, tmp_path):
    workdir = tmp_path / 'run'
    # No periodic checkpoint: the one on disk afterwards is the one the signal made.
    cmd = train_command(tmp_path, shared_data_dir, workdir, num_train_steps=100000,
                        checkpoint_every_steps=100000, eval_every_steps=100000)
    # The child must not inherit an ignored SIGINT (a handler resets to the default on exec).
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    finally:
        signal.signal(signal.SIGINT, inherited)
    ckpt_dir = workdir / 'checkpoints'
    wait_for_step(proc, functools.partial(steps_logged, workdir), 3)
    proc.send_signal(signum)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 128 + signum, out
    last = max(steps_saved(ckpt_dir))
    assert f'stopped by {signal.Signals(signum).name} after step {last}' in out
    assert 'Traceback' not in out
    assert max(train_losses(workdir)) == last  # stopped at the step it saved
    _resume_matches_uninterrupted(cmd, workdir, last, shared_data_dir, tmp_path)
