"""Storage checks before a checkpoint is written: fail in one line, before any byte is written.

A read-only checkpoint directory made orbax's background save fail while the trainer waited 300 s
for it; a full disk surfaced as hundreds of lines of tensorstore traceback. Both are checked
before each save (a probe file; free space against the bytes this process is about to write), and
a failure inside orbax is translated back into the path and the operating system's reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import jax

from jaxlm.errors import UserError

# Room for orbax's metadata, the data iterator's state and the manifest on top of the arrays.
_SPACE_MARGIN = 1.05
_OS_REASON = re.compile(r'(No space left on device|Read-only file system|Permission denied|'
                        r'Disk quota exceeded)')
_QUOTED_PATH = re.compile(r'"(/[^"]+)"')


class StorageError(UserError):
    """The checkpoint directory cannot take the next checkpoint; names the path and the reason."""


def local_bytes(tree: Any) -> int:
    """Bytes of the shards this process holds (and so writes) for a pytree of jax.Arrays."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shards = getattr(leaf, 'addressable_shards', None)
        if shards is None:
            total += getattr(leaf, 'nbytes', 0)
        else:  # replicated shards are written once per process
            seen = {repr(s.index) for s in shards}
            total += len(seen) * (shards[0].data.nbytes if shards else 0)
    return total


def check_writable(directory: str, needed_bytes: int = 0) -> None:
    """Raises StorageError unless `directory` accepts a file and has `needed_bytes` free."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix='.write-probe-'):
            pass
    except OSError as e:
        raise StorageError(f'cannot write checkpoints to {directory}: '
                           f'{e.strerror or e}; free space or fix permissions, then rerun '
                           '(the previous checkpoints are intact)') from e
    free = shutil.disk_usage(directory).free
    if needed_bytes * _SPACE_MARGIN > free:
        raise StorageError(
            f'not enough space for the next checkpoint in {directory}: it needs about '
            f'{needed_bytes * _SPACE_MARGIN / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free; '
            'free space (or lower keep_checkpoints), then rerun (the previous checkpoints are '
            'intact)')


@contextlib.contextmanager
def write_errors_named(directory: str) -> Iterator[None]:
    """Re-raises a write failure from inside orbax/tensorstore as one StorageError line."""
    try:
        yield
    except Exception as e:
        storage = as_storage_error(e, directory)
        if storage is None:
            raise
        raise storage from e


def as_storage_error(exc: BaseException, directory: str) -> StorageError | None:
    """The one-line form of a write failure raised inside orbax/tensorstore, else None."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES,
                                                   errno.EDQUOT):
        return StorageError(f'cannot write checkpoint under {exc.filename or directory}: '
                            f'{exc.strerror} (the previous checkpoints are intact)')
    reason = _OS_REASON.search(str(exc))
    if reason is None:
        return None
    paths = _QUOTED_PATH.findall(str(exc))
    return StorageError(f'cannot write checkpoint under {paths[-1] if paths else directory}: '
                        f'{reason.group(1)} (the previous checkpoints are intact)')
