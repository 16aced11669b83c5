"""Stopping at a step boundary on SIGTERM, the preemption notice of SLURM, Kubernetes and Cloud
TPU maintenance: the loop saves a checkpoint and exits before the scheduler's SIGKILL.

One process: a SIGTERM handler sets a flag, read at every step boundary. Several processes:
they must all stop after the same step (every checkpoint save is collective), so JAX's
preemption sync service decides (`jax.distributed.initialize` starts it and it listens for
SIGTERM on every host): `reached_preemption(step)` turns True at the same step everywhere once
any host was notified.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import jax
import orbax.checkpoint as ocp


@contextlib.contextmanager
def preemption_notice() -> Iterator[Callable[[int], bool]]:
    """Yields `stop(step) -> bool`, True once the run should save and stop after `step`; the
    previous SIGTERM handler is back on exit."""
    if jax.process_count() > 1:
        yield ocp.multihost.reached_preemption
        return
    notified = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # signals reach main only
        yield functools.partial(_is_set, notified)
        return

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        notified.set()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield functools.partial(_is_set, notified)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _is_set(event: threading.Event, step: int) -> bool:
    return event.is_set()
