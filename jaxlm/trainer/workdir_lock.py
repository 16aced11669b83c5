"""One training run per workdir: a lock file naming its holder (host, pid, start time).

Two trainings on one workdir would interleave `metrics.jsonl` and race on checkpoints. The lock is
`WORKDIR/train.lock`, created atomically (`O_EXCL`). A lock is stale, and taken over with a
warning, when its holder is a process on this host that no longer exists, or (for a holder on
another host sharing the workdir, whose pid cannot be checked) when its heartbeat, the file's
modification time that a live holder refreshes every `HEARTBEAT_S`, is older than `stale_after_s`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
import time

from jaxlm.errors import UserError

log = logging.getLogger(__name__)
LOCK_FILE = 'train.lock'
HEARTBEAT_S = 30.0


class WorkdirLocked(UserError):
    """Another live run holds the workdir."""


@dataclasses.dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: float

    def describe(self) -> str:
        return (f'pid {self.pid} on {self.host}, started '
                f'{time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))}')


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_holder(path: str) -> Holder | None:
    try:
        with open(path) as f:
            return Holder(**json.load(f))
    except (OSError, ValueError, TypeError):  # vanished, or half-written by a killed holder
        return None


def _is_stale(path: str, holder: Holder | None, stale_after_s: float) -> bool:
    if holder is not None and holder.host == socket.gethostname():
        return not _pid_alive(holder.pid)
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return True
    return age > stale_after_s


class WorkdirLock:
    """Held for the duration of a `with` block; a daemon thread keeps the heartbeat fresh."""

    def __init__(self, workdir: str, *, stale_after_s: float = 600.0) -> None:
        self.path = os.path.join(workdir, LOCK_FILE)
        self.stale_after_s = stale_after_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> WorkdirLock:
        me = Holder(socket.gethostname(), os.getpid(), time.time())
        for _ in range(3):  # a stale lock is removed, then the create is retried
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_holder(self.path)
                if not _is_stale(self.path, holder, self.stale_after_s):
                    who = holder.describe() if holder else 'an unknown process'
                    raise WorkdirLocked(
                        f'{os.path.dirname(self.path)} is in use by another training run ({who});'
                        f' wait for it, use another --workdir, or delete {self.path} if that run'
                        ' is dead') from None
                log.warning('removing stale lock %s (%s)', self.path,
                            holder.describe() if holder else 'unreadable')
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, 'w') as f:
                json.dump(dataclasses.asdict(me), f)
            self._thread = threading.Thread(target=self._heartbeat, daemon=True)
            self._thread.start()
            return self
        raise WorkdirLocked(f'could not take {self.path}: another run keeps re-creating it')

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
