"""orbax checkpoints of the train state together with the grain iterator state.

Saves are asynchronous and atomic (orbax writes into a temporary directory and renames it when
complete), so a crash mid-save leaves the previous checkpoint as the latest one. Once a save has
finished, a sha256 manifest of its files is written into it. On restore, a checkpoint that fails
to read or to match its manifest is damaged: it is reported, set aside and the next older one is
tried, never silently. A checkpoint that does not fit the config (another model shape) is not
damaged: that stops the run with a ConfigError and touches nothing. Reading and writing
parameters alone, and the manifests, are `jaxlm.checkpoints`, which sampling and evaluation use
without the trainer.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import traverse_util

from jaxlm.checkpoints import (
    CheckpointError,
    shape_mismatches,
    verify_on_process_0,
    write_manifest,
)
from jaxlm.config import ConfigError
from jaxlm.trainer import storage

log = logging.getLogger(__name__)


# Fields a resumed run may change: how long, how often, where the data lives, on which devices
# and with which optimizer hyperparameters. Anything else (model, data, tokenizer, seed,
# gradient clipping on/off) would make another run; a prefix ending in '.' covers a group.
RESUMABLE_CHANGES = (
    'num_train_steps', 'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps',
    'keep_checkpoints', 'async_checkpointing', 'max_skipped_steps', 'init_params_from', 'mesh.',
    'pipeline.', 'logical_axis_rules', 'eval.', 'model.remat_policy', 'data.data_dir',
    'data.cache_dir', 'data.num_workers', 'optimizer.learning_rate', 'optimizer.schedule',
    'optimizer.warmup_steps', 'optimizer.decay_steps', 'optimizer.end_learning_rate_ratio',
    'optimizer.b1', 'optimizer.b2', 'optimizer.eps', 'optimizer.weight_decay',
    'optimizer.grad_accum_steps', 'optimizer.z_loss_weight')


def check_same_run(saved_config: str, cfg: ml_collections.ConfigDict,
                   fixed: tuple[str, ...] = ()) -> None:
    """Raises a ConfigError naming every field of `cfg` that differs from the run's saved
    `config.json` and that a resumed run may not change (see RESUMABLE_CHANGES; `fixed` names
    fields that this run may not change although others may). Fields the saved config lacks
    (added to the schema since) are not compared."""
    if not os.path.exists(saved_config):
        return
    with open(saved_config) as f:
        saved = _flat(json.load(f))
    new = _flat(json.loads(cfg.to_json_best_effort()))
    differ = [f'{k}: {saved[k]!r} -> {v!r}' for k, v in sorted(new.items())
              if k in saved and saved[k] != v and (k in fixed or not _resumable(k))]
    if differ:
        workdir = os.path.dirname(saved_config)
        raise ConfigError(
            f'the config does not fit the run in {workdir}, whose checkpoints were made with '
            f'{saved_config}; these fields cannot change when resuming: ' + '; '.join(differ)
            + '\nresume with the run\'s values, use another --workdir, or add --fresh to start '
            'this workdir over (the previous run is moved aside, not deleted)')


def _flat(tree: dict) -> dict[str, Any]:
    return {'.'.join(k): v for k, v in traverse_util.flatten_dict(tree).items()}


def _resumable(field: str) -> bool:
    return any(field == p or (p.endswith('.') and field.startswith(p))
               for p in RESUMABLE_CHANGES)


# What a run writes into its workdir, and `--fresh` moves aside (the tokenizer is rewritten).
RUN_FILES = ('checkpoints', 'config.json', 'metrics.jsonl', 'tensorboard')


def set_aside_run(workdir: str) -> str | None:
    """Moves the workdir's RUN_FILES into `workdir/previous-<time>/`, on process 0; returns that
    path, or None when there was nothing to move."""
    present = [name for name in RUN_FILES if os.path.exists(os.path.join(workdir, name))]
    if not present:
        return None
    dst = os.path.join(workdir, f'previous-{time.strftime("%Y%m%d-%H%M%S")}')
    if jax.process_index() == 0:
        os.makedirs(dst)
        for name in present:
            os.rename(os.path.join(workdir, name), os.path.join(dst, name))
    return dst


class Checkpointer:
    def __init__(self, directory: str, *, keep: int, async_save: bool = True) -> None:
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True,
            cleanup_tmp_directories=True)  # leftovers of a save that was killed
        self._manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={'state': ocp.StandardCheckpointHandler(),
                           'data': grain.checkpoint.CheckpointHandler(),
                           'meta': ocp.JsonCheckpointHandler()})
        self._unsealed: list[int] = []  # saved here, manifest not yet written

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, data_iter: Any | None, meta: dict[str, Any]) -> None:
        """Saves `state`, `meta` and the grain iterator (None: a run whose data position is in
        `meta`, such as the RL loop's prompt stream)."""
        self.wait()  # the previous save's manifest first
        storage.check_writable(self.directory, storage.local_bytes(state))
        self._unsealed.append(step)
        items = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        if data_iter is not None:
            items['data'] = grain.checkpoint.CheckpointSave(data_iter)
        with storage.write_errors_named(self.directory):
            self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore_latest(self, target: Any, data_iter: Any | None) -> tuple[int, Any, dict] | None:
        """Restores the newest readable checkpoint into `target` (abstract arrays carrying the
        shardings to restore onto, so any mesh or device count works). Returns None when the
        directory holds no checkpoint; raises when checkpoints exist but none can be read."""
        failures = []
        for step in reversed(self.all_steps()):
            step_dir = os.path.join(self.directory, str(step))
            try:
                verify_on_process_0(step_dir)
                self._check_fits(step, target)
                items = dict(state=ocp.args.StandardRestore(target),
                             meta=ocp.args.JsonRestore())
                if data_iter is not None:
                    items['data'] = grain.checkpoint.CheckpointRestore(data_iter)
                restored = self._manager.restore(step, args=ocp.args.Composite(**items))
            except ConfigError:
                raise  # the checkpoint is fine, the config is not: leave it where it is
            except Exception as e:
                msg = f'checkpoint {self.directory}/{step} is unreadable: {type(e).__name__}: {e}'
                log.error(msg)
                failures.append(msg)
                self._set_aside(step)
                continue
            if failures:
                log.warning('resumed from older checkpoint %d; skipped %d unreadable', step,
                            len(failures))
            return step, restored['state'], restored['meta']
        if failures:
            raise CheckpointError('no readable checkpoint in ' + self.directory + ':\n' +
                                  '\n'.join(failures))
        return None

    def _check_fits(self, step: int, target: Any) -> None:
        """A ConfigError when the checkpoint's parameter shapes are not the config's (a run
        without config.json, or a field that reshapes parameters): not damage."""
        differ = shape_mismatches(self._manager.item_metadata(step)['state']['params'],
                                   target['params'])
        if differ:
            raise ConfigError(
                f'checkpoint {self.directory}/{step} was made with another model: '
                + '; '.join(differ[:5]) + (f' (and {len(differ) - 5} more)' if len(differ) > 5
                                           else '')
                + '. Use the run\'s model config, another --workdir, or --fresh')

    def _set_aside(self, step: int) -> None:
        """Renames an unreadable step out of orbax's view (kept for inspection, not deleted) so
        the resumed run can save that step number again."""
        if jax.process_index() != 0:
            return
        src = os.path.join(self.directory, str(step))
        dst = f'{src}.unreadable-{int(time.time())}'
        os.rename(src, dst)
        log.error('moved unreadable checkpoint to %s', dst)
        self._manager.reload()

    def wait(self) -> None:
        """Waits for the save in flight, then writes the manifests of this run's saves (those
        still kept): a save is only complete once orbax has finalised it."""
        with storage.write_errors_named(self.directory):
            self._manager.wait_until_finished()
        kept = set(self.all_steps())
        if jax.process_index() == 0:
            for step in self._unsealed:
                if step in kept:
                    write_manifest(os.path.join(self.directory, str(step)))
        self._unsealed = []

    def close(self) -> None:
        self._manager.close()

