"""Multi-host start-up: `jax.distributed.initialize` when launched as one of several processes.

Initialises when the environment says this is a multi-process job (a TPU pod slice, SLURM with
more than one task, or JAX_COORDINATOR_ADDRESS set); single-process runs skip it. Must run before
any JAX call that touches the backend.
"""

from __future__ import annotations

import os

import jax


def maybe_initialize() -> None:
    if os.environ.get('JAX_COORDINATOR_ADDRESS'):
        jax.distributed.initialize(
            coordinator_address=os.environ['JAX_COORDINATOR_ADDRESS'],
            num_processes=int(os.environ['JAX_NUM_PROCESSES']),
            process_id=int(os.environ['JAX_PROCESS_ID']))
    elif int(os.environ.get('SLURM_NTASKS', '1')) > 1 or os.environ.get('TPU_WORKER_HOSTNAMES'):
        jax.distributed.initialize()  # JAX reads SLURM / the TPU metadata itself
