"""Train a model: python -m jaxlm.train --config experiments/tiny.py --workdir DIR [--config.x=y].

A config whose objective trains on sampled rollouts (`data.objective` 'grpo' or 'ppo') runs the
reinforcement-learning loop (jaxlm/trainer/rl.py) instead of the data pipeline.

`--show_config` prints the resolved config, every field with its value (as the run's config.json
will hold it), and exits.

Multi-host: start the same command on every host (SLURM and TPU pods are detected), or add
`--coordinator_address=host:port --num_processes=N --process_id=i`; the workdir must be shared.

Running the same command again on the same workdir resumes from its latest checkpoint; raising
`--config.num_train_steps` continues the same run. A config that does not fit the workdir's run is
refused; `--fresh` starts the workdir over (the previous run is moved aside). On SIGTERM or
Ctrl-C the run saves a checkpoint at the next step boundary and exits with status 128 + the
signal (143, 130), so that a scheduler restarts it; the same command resumes it. A second Ctrl-C
stops at once.
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from jaxlm import cli
from jaxlm.errors import UserError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file (get_config).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: config, metrics, checkpoints.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', '', 'Multi-host: host:port of process 0 (else from the environment: '
    'JAX_COORDINATOR_ADDRESS, SLURM or a TPU pod; see jaxlm/distributed.py).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Multi-host: this process, 0-based.')
_SHOW_CONFIG = flags.DEFINE_bool(
    'show_config', False, 'Print the resolved config (every field, overrides applied) and exit.')
_FRESH = flags.DEFINE_bool(
    'fresh', False, 'Start the workdir over instead of resuming: its checkpoints, config.json and '
    'metrics are moved into <workdir>/previous-<time>/, not deleted.')
flags.mark_flags_as_required(['config'])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    if _SHOW_CONFIG.value:
        print(_CONFIG.value.to_json_best_effort(indent=2, sort_keys=True))  # as config.json
        return
    if not _WORKDIR.value:
        raise UserError('--workdir is required (the run directory to create or resume)')
    for name in ('absl', 'jax._src.xla_bridge'):  # backend probing noise on CPU hosts
        logging.getLogger(name).setLevel(logging.WARNING)
    from jaxlm.distributed import maybe_initialize
    maybe_initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from jaxlm.objectives import registry as objectives
    from jaxlm.trainer.loop import train

    cfg, hook = _CONFIG.value, None
    if getattr(objectives.OBJECTIVES.get(cfg.data.objective), 'rollouts', False):
        from jaxlm.trainer.rl import train_rl

        train = train_rl  # sampled rollouts instead of a dataset: the RL loop
    if cfg.eval.tasks:
        from jaxlm.evaluation.periodic import make_eval_hook

        hook = make_eval_hook(cfg)
    stopped_by = train(cfg, _WORKDIR.value, eval_hook=hook, fresh=_FRESH.value)['stopped_by']
    if stopped_by:
        sys.exit(128 + stopped_by)  # saved, not finished: a scheduler should run it again


if __name__ == '__main__':
    cli.run(main, 'jaxlm.train')
