"""Parameter checkpoints on disk: find, read and write them, and check that they are intact.

Everything that reads a checkpoint (sampling, evaluation, conversion, the trainer) uses this
module; it needs neither the optimizer nor the data pipeline, so it imports neither optax nor
grain. The trainer's `jaxlm.trainer.checkpoint.Checkpointer` adds the train state, the data
iterator, asynchronous saves and keep-N on top of it.

Integrity: once a save has finished, a sha256 manifest of its files is written into its step
directory (`write_manifest`); a step whose files are missing or differ from it is damaged
(`verify_manifest`). A checkpoint whose parameter shapes are not the config's is not damaged, it
belongs to another model (`shape_mismatches`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util
from jax.experimental import multihost_utils
from orbax.checkpoint.experimental.v1 import partial as ocp_partial

from jaxlm.errors import UserError

log = logging.getLogger(__name__)

MANIFEST = 'sha256sums.txt'  # in each step directory: `<sha256>  <path>` lines, as sha256sum


class CheckpointError(UserError, RuntimeError):
    """No usable checkpoint where one is needed; the message names the directory."""


class DamagedCheckpointError(RuntimeError):
    """A step directory whose files are missing or differ from its manifest."""


def has_checkpoints(directory: str) -> bool:
    """Whether `directory` holds any checkpoint step (a folder named by its step number)."""
    return os.path.isdir(directory) and any(p.isdigit() for p in os.listdir(directory))


def split_checkpoint_path(path: str) -> tuple[str, int | None]:
    """`.../checkpoints` -> (dir, None = latest); `.../checkpoints/1200` -> (dir, 1200)."""
    path = os.path.normpath(os.path.abspath(path))
    name = os.path.basename(path)
    return (os.path.dirname(path), int(name)) if name.isdigit() else (path, None)


def write_manifest(step_dir: str) -> None:
    lines = [f'{_sha256(os.path.join(step_dir, p))}  {p}' for p in _files(step_dir)]
    tmp = os.path.join(step_dir, MANIFEST + '.tmp')
    with open(tmp, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    os.rename(tmp, os.path.join(step_dir, MANIFEST))  # never a half-written manifest


def verify_manifest(step_dir: str) -> bool:
    """Raises DamagedCheckpointError when a file is missing or its bytes changed; False when the
    step has no manifest (saved by an older version, or killed before it was written)."""
    path = os.path.join(step_dir, MANIFEST)
    if not os.path.exists(path):
        return False
    with open(path) as f:
        expected = [line.rstrip('\n').split('  ', 1) for line in f if line.strip()]
    for digest, name in expected:
        file = os.path.join(step_dir, name)
        if not os.path.isfile(file):
            raise DamagedCheckpointError(f'{file} is missing')
        if _sha256(file) != digest:
            raise DamagedCheckpointError(f'{file} does not match its sha256 in {path}')
    return True


def verify_on_process_0(step_dir: str) -> None:
    """`verify_manifest` read once, not by every process, with the verdict shared by all (they
    must all restore the same step)."""
    problem = ''
    if jax.process_index() == 0:
        try:
            if not verify_manifest(step_dir):
                log.warning('checkpoint %s has no %s: restoring it unverified', step_dir,
                            MANIFEST)
        except DamagedCheckpointError as e:
            problem = str(e)
    damaged = bool(problem)
    if jax.process_count() > 1:
        damaged = bool(multihost_utils.broadcast_one_to_all(np.int32(damaged)))
    if damaged:
        raise DamagedCheckpointError(problem or f'{step_dir} failed its check on process 0')


def _files(step_dir: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(root, name), step_dir)
                  for root, _, names in os.walk(step_dir) for name in names
                  if not name.startswith(MANIFEST))


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(functools.partial(f.read, 1 << 24), b''):
            h.update(block)
    return h.hexdigest()


def shape_mismatches(saved: Any, target: Any) -> list[str]:
    """Parameters whose names or shapes differ between a checkpoint's metadata and `target`."""
    saved_shapes = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(saved).items()}
    target_shapes = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(target).items()}
    return [f'params/{"/".join(k)}: checkpoint {saved_shapes.get(k, "absent")}, config '
            f'{target_shapes.get(k, "absent")}'
            for k in sorted(saved_shapes.keys() | target_shapes.keys())
            if saved_shapes.get(k) != target_shapes.get(k)]


@contextlib.contextmanager
def _read_only(directory: str, step: int | None) -> Iterator[tuple[Any, int]]:
    """(a read-only manager of `directory`'s parameter checkpoints, the step: `step`, checked,
    or the latest)."""
    manager = ocp.CheckpointManager(
        directory, item_handlers={'state': ocp.PyTreeCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        available = manager.all_steps()
        if not available:
            raise CheckpointError(f'no checkpoint in {directory}')
        if step is None:
            step = max(available)
        elif step not in available:
            raise CheckpointError(f'no checkpoint for step {step} in {directory} (have: '
                                  f'{sorted(available)})')
        yield manager, step
    finally:
        manager.close()


def restore_params(directory: str, abstract_params: Any,
                   step: int | None = None) -> tuple[int, Any]:
    """Reads only the parameters of checkpoint `step` (default: the latest), without optimizer
    state, onto the shardings carried by `abstract_params`: what sampling and evaluation need."""
    target = {'params': abstract_params}
    with _read_only(os.path.abspath(directory), step) as (manager, step):
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True)))
    return step, restored['state']['params']


def saved_vocab_size(directory: str, step: int | None = None) -> int | None:
    """Rows of the token embedding in checkpoint `step` (default: the latest) of `directory`,
    from its metadata; None when it has no token embedding."""
    with _read_only(os.path.abspath(directory), step) as (manager, step):
        params = manager.item_metadata(step)['state']['params']
    embedding = params.get('token_embed', {}).get('embedding')
    return None if embedding is None else int(embedding.shape[0])


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
            ocp_partial.save(staged, tree)
            del tree, value
        ocp_partial.finalize(staged)
        os.makedirs(directory, exist_ok=True)
        os.rename(staged, os.path.join(directory, str(step)))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
