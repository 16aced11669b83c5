"""Train a model: python -m jaxlm.train --config experiments/tiny.py --workdir DIR [--config.x=y].

Multi-host: start the same command on every host (SLURM and TPU pods are detected), or add
`--coordinator_address=host:port --num_processes=N --process_id=i`; the workdir must be shared.

Running the same command again on the same workdir resumes from its latest checkpoint; raising
`--config.num_train_steps` continues the same run.
"""

from __future__ import annotations

import logging

from absl import app, flags
from ml_collections import config_flags

from jaxlm.config import ConfigError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file (get_config).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: config, metrics, checkpoints.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', '', 'Multi-host: host:port of process 0 (else from the environment: '
    'JAX_COORDINATOR_ADDRESS, SLURM or a TPU pod; see jaxlm/distributed.py).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Multi-host: this process, 0-based.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    for name in ('absl', 'jax._src.xla_bridge'):  # backend probing noise on CPU hosts
        logging.getLogger(name).setLevel(logging.WARNING)
    from jaxlm.distributed import maybe_initialize  # noqa: PLC0415 (before any JAX backend use)
    maybe_initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from jaxlm.trainer.loop import train  # noqa: PLC0415

    cfg, hook = _CONFIG.value, None
    if cfg.eval.tasks:
        from jaxlm.evaluation.periodic import make_eval_hook  # noqa: PLC0415

        hook = make_eval_hook(cfg)
    try:
        train(cfg, _WORKDIR.value, eval_hook=hook)
    except ConfigError as e:
        raise SystemExit(f'config error: {e}') from None


if __name__ == '__main__':
    app.run(main)
