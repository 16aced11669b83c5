"""How `maybe_initialize` reads flags and the environment (jax.distributed.initialize mocked),
and the process table a run prints."""

import jax
import pytest

from jaxlm import distributed, sharding

CLUSTER_ENV = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID', 'SLURM_NTASKS',
               'SLURM_NTASKS_PER_NODE', 'SLURM_GPUS_ON_NODE', 'TPU_WORKER_HOSTNAMES')


@pytest.fixture
def calls(monkeypatch):
    for name in CLUSTER_ENV:
        monkeypatch.delenv(name, raising=False)
    seen = []
    monkeypatch.setattr(jax.distributed, 'initialize', lambda **kw: seen.append(kw))
    return seen


def test_single_process_does_not_initialize(calls):
    distributed.maybe_initialize()
    assert calls == []


def test_explicit_flags(calls):
    distributed.maybe_initialize('host0:1234', 4, 3)
    assert calls == [dict(coordinator_address='host0:1234', num_processes=4, process_id=3)]


def test_environment_variables(calls, monkeypatch):
    monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', 'host0:99')
    monkeypatch.setenv('JAX_NUM_PROCESSES', '2')
    monkeypatch.setenv('JAX_PROCESS_ID', '1')
    distributed.maybe_initialize()
    assert calls == [dict(coordinator_address='host0:99', num_processes=2, process_id=1)]


@pytest.mark.parametrize('per_node,expected', [('8', None), ('1', list(range(8))),
                                               ('1(x4)', list(range(8)))])
def test_slurm_one_process_per_gpu_or_per_node(per_node, expected, calls, monkeypatch):
    monkeypatch.setenv('SLURM_NTASKS', '32')
    monkeypatch.setenv('SLURM_NTASKS_PER_NODE', per_node)
    monkeypatch.setenv('SLURM_GPUS_ON_NODE', '8')
    distributed.maybe_initialize()
    assert calls == [dict(local_device_ids=expected)]


def test_tpu_pod_slice(calls, monkeypatch):
    monkeypatch.setenv('TPU_WORKER_HOSTNAMES', 'w0,w1,w2,w3')
    distributed.maybe_initialize()
    assert calls == [{}]


@pytest.mark.parametrize('args,message', [
    (('', 2, 0), 'need --coordinator_address'),
    (('h:1', 2, 2), r'process_id 2 is not in \[0, num_processes=2\)')])
def test_bad_flags(args, message, calls):
    with pytest.raises(ValueError, match=message):
        distributed.maybe_initialize(*args)


def test_process_table_lists_mesh_coordinates():
    mesh = sharding.make_mesh(dict(data=2, stage=2, fsdp=2, tensor=1))
    table = distributed.describe_processes(mesh)
    assert 'processes: 1 (this is process 0)' in table
    assert '| 0 | 8 x cpu | 0,1,2,3,4,5,6,7 | data 0-1, stage 0-1, fsdp 0-1, tensor 0 |' in table
