"""Two processes x 4 CPU devices (jax.distributed over localhost) train like one process with 8
devices, and both resume from their joint checkpoint."""

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import small_config, train_losses

from jaxlm.trainer.loop import train

MESH = dict(data=2, fsdp=2, tensor=2)


def _cfg(data_dir, steps):
    c = small_config(data_dir, **MESH)
    c.num_train_steps = steps
    c.checkpoint_every_steps = 2
    c.data.num_shards = 2  # the batches of 2 processes, also in the 1-process reference
    return c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('localhost', 0))
        return s.getsockname()[1]


def _run_two_processes(config_file, workdir, steps):
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
    env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4',
           'PYTHONPATH': repo}
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, '-m', 'jaxlm.train', f'--config={config_file}', f'--workdir={workdir}',
         f'--config.num_train_steps={steps}', f'--coordinator_address=localhost:{port}',
         '--num_processes=2', f'--process_id={i}'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for i in (0, 1)]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail('two-process training did not finish in 300 s')
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out
    return outs


@pytest.mark.slow
def test_two_processes_match_one_and_resume(shared_data_dir, tmp_path):
    tests_dir = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
    config_file = tmp_path / 'two_hosts.py'
    config_file.write_text(textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {tests_dir!r})
        from trainer.test_multihost import _cfg

        def get_config():
            return _cfg({str(shared_data_dir)!r}, 2)
    '''))
    workdir = tmp_path / 'run'
    out0, out1 = _run_two_processes(config_file, workdir, 2)
    assert '| 1 | 4 x cpu |' in out0 and 'data 1, stage 0, fsdp 0-1, tensor 0-1' in out0
    assert 'step ' not in out1  # only process 0 logs
    assert sorted(os.listdir(workdir / 'checkpoints' / '2' / 'data')) == [
        'commit_success.txt', 'process_0-of-2.json', 'process_1-of-2.json']

    reference = tmp_path / 'one_process'
    train(_cfg(shared_data_dir, 4), str(reference))  # 8 devices in this process
    expected = train_losses(reference)
    np.testing.assert_allclose([train_losses(workdir)[s] for s in (1, 2)],
                               [expected[s] for s in (1, 2)], rtol=1e-5)

    out0, _ = _run_two_processes(config_file, workdir, 4)
    assert f'resumed from {workdir}/checkpoints/2' in out0
    losses = train_losses(workdir)
    assert sorted(losses) == [1, 2, 3, 4]
    np.testing.assert_allclose([losses[s] for s in (3, 4)], [expected[s] for s in (3, 4)],
                               rtol=1e-5)
