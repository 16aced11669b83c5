"""Multi-host start-up (`jax.distributed.initialize`) and the table of processes a run prints.

`maybe_initialize` must run before any JAX call that touches the backend. It initialises when
  - the flags `--coordinator_address/--num_processes/--process_id` are given (any cluster, or
    several processes on one machine), or the same in JAX_COORDINATOR_ADDRESS /
    JAX_NUM_PROCESSES / JAX_PROCESS_ID;
  - SLURM started more than one task: JAX reads the coordinator, process count and id from
    SLURM itself. With one task per GPU (`--ntasks-per-node=<gpus>`) each process keeps the GPU
    of its SLURM_LOCALID (JAX's default); with one task per node each keeps all the node's GPUs;
  - on a Cloud TPU pod slice (TPU_WORKER_HOSTNAMES lists more than one host): JAX reads the TPU
    metadata.
A single-process run skips it.
"""

from __future__ import annotations

import os
from collections import defaultdict

import jax
import numpy as np
from jax.sharding import Mesh


def maybe_initialize(coordinator_address: str = '', num_processes: int | None = None,
                     process_id: int | None = None) -> None:
    coordinator_address = coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS', '')
    if coordinator_address:
        if num_processes is None:
            num_processes = int(os.environ['JAX_NUM_PROCESSES'])
        if process_id is None:
            process_id = int(os.environ['JAX_PROCESS_ID'])
        if not 0 <= process_id < num_processes:
            raise ValueError(f'process_id {process_id} is not in [0, num_processes='
                             f'{num_processes})')
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
    elif num_processes is not None or process_id is not None:
        raise ValueError('--num_processes/--process_id need --coordinator_address (host:port of '
                         'process 0)')
    elif int(os.environ.get('SLURM_NTASKS', '1')) > 1:
        jax.distributed.initialize(local_device_ids=_slurm_local_devices())
    elif len(os.environ.get('TPU_WORKER_HOSTNAMES', '').split(',')) > 1:
        jax.distributed.initialize()


def _slurm_local_devices() -> list[int] | None:
    """All of the node's GPUs when SLURM runs one task per node; None (JAX's default: the GPU of
    SLURM_LOCALID) when it runs one task per GPU."""
    tasks_on_node = int(os.environ.get('SLURM_NTASKS_PER_NODE', '0').split('(')[0] or 0)
    gpus = os.environ.get('SLURM_GPUS_ON_NODE', '')
    if tasks_on_node == 1 and gpus.isdigit():
        return list(range(int(gpus)))
    return None


def describe_processes(mesh: Mesh) -> str:
    """A table of every process: its local devices and the mesh coordinates they hold."""
    coords: dict[int, list[tuple[int, ...]]] = defaultdict(list)
    for index, device in np.ndenumerate(mesh.devices):
        coords[device.process_index].append(index)
    devices = defaultdict(list)
    for d in mesh.devices.flat:
        devices[d.process_index].append(d)
    lines = [f'processes: {jax.process_count()} (this is process {jax.process_index()})',
             '| process | local devices | device ids | mesh coordinates |',
             '| --- | --- | --- | --- |']
    for p in sorted(devices):
        held = np.asarray(coords[p])
        where = ', '.join(f'{name} {_span(held[:, i])}'
                          for i, name in enumerate(mesh.axis_names))
        ids = ','.join(str(d.id) for d in devices[p])
        lines.append(f'| {p} | {len(devices[p])} x {devices[p][0].device_kind} | {ids} | '
                     f'{where} |')
    return '\n'.join(lines)


def _span(values: np.ndarray) -> str:
    lo, hi = int(values.min()), int(values.max())
    return str(lo) if lo == hi else f'{lo}-{hi}'
