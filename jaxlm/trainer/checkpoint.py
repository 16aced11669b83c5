"""orbax checkpoints of the train state together with the grain iterator state.

Saves are asynchronous and atomic (orbax writes into a temporary directory and renames it when
complete), so a crash mid-save leaves the previous checkpoint as the latest one. On restore, a
checkpoint that fails to read is reported and the next older one is tried, never silently.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    pass


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

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, data_iter: Any, meta: dict[str, Any]) -> None:
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iter),
            meta=ocp.args.JsonSave(meta)), force=True)

    def restore_latest(self, target: Any, data_iter: Any | None) -> tuple[int, Any, dict] | None:
        """Restores the newest readable checkpoint into `target` (abstract arrays carrying the
        shardings to restore onto, so any mesh or device count works). Returns None when the
        directory holds no checkpoint; raises when checkpoints exist but none can be read."""
        failures = []
        for step in reversed(self.all_steps()):
            try:
                items = dict(state=ocp.args.StandardRestore(target),
                             meta=ocp.args.JsonRestore())
                if data_iter is not None:
                    items['data'] = grain.checkpoint.CheckpointRestore(data_iter)
                restored = self._manager.restore(step, args=ocp.args.Composite(**items))
            except Exception as e:  # noqa: BLE001 (any unreadable checkpoint: try the older one)
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
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def restore_params(directory: str, abstract_params: Any,
                   step: int | None = None) -> tuple[int, Any]:
    """Reads only the parameters of checkpoint `step` (default: the latest), without optimizer
    state, onto the shardings carried by `abstract_params`: what sampling and evaluation need."""
    directory = os.path.abspath(directory)
    manager = ocp.CheckpointManager(
        directory, item_handlers={'state': ocp.PyTreeCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(read_only=True))
    available = manager.all_steps()
    if not available:
        raise CheckpointError(f'no checkpoint in {directory}')
    if step is None:
        step = max(available)
    elif step not in available:
        raise CheckpointError(f'no checkpoint for step {step} in {directory} (have: '
                              f'{sorted(available)})')
    target = {'params': abstract_params}
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)))
    manager.close()
    return step, restored['state']['params']


def split_checkpoint_path(path: str) -> tuple[str, int | None]:
    """`.../checkpoints` -> (dir, None = latest); `.../checkpoints/1200` -> (dir, 1200)."""
    path = os.path.normpath(os.path.abspath(path))
    name = os.path.basename(path)
    return (os.path.dirname(path), int(name)) if name.isdigit() else (path, None)


def save_params(directory: str, step: int,
                leaves: Iterable[tuple[tuple[str, ...], Any]]) -> None:
    """A parameters-only checkpoint `directory/step` that `restore_params` and
    `config.init_params_from` read (e.g. a converted Hugging Face model), written leaf by leaf.

    `leaves` yields (path, array) pairs, e.g. `flax.traverse_util.flatten_dict(params).items()`
    or a generator streaming from safetensors. Each leaf goes through orbax's partial saving and is
    released before the next is drawn, so peak host memory is about the largest leaf (a one-shot
    orbax save of the whole tree holds a second copy of it: 4 GiB of arrays peaked at 11.9 GiB).
    The checkpoint is staged beside `directory` and moved in only when complete: if `leaves`
    raises, nothing is left behind."""
    from orbax.checkpoint.experimental.v1 import partial  # noqa: PLC0415

    directory = os.path.abspath(directory)
    if os.path.exists(os.path.join(directory, str(step))):
        raise CheckpointError(f'{directory}/{step} already exists')
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    stage = tempfile.mkdtemp(prefix=os.path.basename(directory) + '.staging-',
                             dir=os.path.dirname(directory))
    try:
        staged = os.path.join(stage, str(step))
        for path, value in leaves:
            tree: dict[str, Any] = {path[-1]: value}
            for key in reversed(('params',) + tuple(path[:-1])):
                tree = {key: tree}
            partial.save(staged, tree)
            del tree, value
        partial.finalize(staged)
        os.makedirs(directory, exist_ok=True)
        os.rename(staged, os.path.join(directory, str(step)))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
