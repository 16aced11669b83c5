"""The run directory as two users (or a scheduler's requeue) meet it: one run per workdir,
metrics and TensorBoard that read as one run after a kill, MFU against the host's real peak, and
a full or read-only disk that fails in one line."""

import json
import os
import signal
import subprocess
import time

import pytest
from conftest import read_metrics, train_command


def _wait_for_step(proc, workdir, step: int) -> None:
    deadline = time.time() + 180
    while time.time() < deadline:
        if (workdir / 'metrics.jsonl').exists() and any(
                r.get('step', 0) >= step for r in read_metrics(workdir)):
            return
        if proc.poll() is not None:
            pytest.fail('training exited early:\n' + proc.stdout.read().decode())
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f'no step {step} within 180 s')


def _read_metrics_lenient(workdir) -> list[dict]:
    records = []
    for line in (workdir / 'metrics.jsonl').read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records


def _tensorboard_steps(workdir, tag: str) -> list[int]:
    """Every `tag` event in the raw event files, read by TensorBoard's own loader."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    steps = []
    tb_dir = workdir / 'tensorboard'
    for name in sorted(os.listdir(tb_dir)):
        for event in EventFileLoader(str(tb_dir / name)).Load():
            for value in event.summary.value:
                if value.tag == tag:
                    assert tensor_util.make_ndarray(value.tensor).size == 1
                    steps.append(event.step)
    return steps


def test_one_run_per_workdir_and_a_killed_run_resumes_cleanly(shared_data_dir, tmp_path):
    workdir = tmp_path / 'run'
    cmd = train_command(tmp_path, shared_data_dir, workdir, num_train_steps=100000,
                        checkpoint_every_steps=4, eval_every_steps=100000)
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _wait_for_step(first, workdir, 6)  # a checkpoint at 4, steps logged after it

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 1
    assert f'{workdir} is in use by another training run (pid {first.pid} on ' in second.stderr
    assert len(second.stderr.strip().splitlines()) <= 3 and 'Traceback' not in second.stderr

    first.send_signal(signal.SIGKILL)  # the lock stays behind, its holder dead
    first.wait()
    with open(workdir / 'metrics.jsonl', 'a') as f:
        f.write('{"step": 99999, "loss": 1.')  # a kill in the middle of a write
    saved = max(int(p) for p in os.listdir(workdir / 'checkpoints') if p.isdigit())
    assert max(r['step'] for r in _read_metrics_lenient(workdir)) > saved
    assert max(_tensorboard_steps(workdir, 'loss')) > saved  # the resume repeats these steps

    third = subprocess.run(cmd + [f'--config.num_train_steps={saved + 4}'], capture_output=True,
                           text=True, timeout=300)
    assert third.returncode == 0, third.stdout + third.stderr
    assert 'removing stale lock' in third.stderr
    assert 'dropped its last line, half-written' in third.stderr
    records = read_metrics(workdir)  # every line is JSON again
    steps = [r['step'] for r in records if 'loss' in r]
    assert steps == list(range(1, saved + 5))
    assert _tensorboard_steps(workdir, 'loss') == list(range(1, saved + 5))
    assert not (workdir / 'train.lock').exists()
