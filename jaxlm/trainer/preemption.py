"""Stopping at a step boundary on SIGTERM (the preemption notice of SLURM, Kubernetes and Cloud
TPU maintenance) or Ctrl-C: the loop saves a checkpoint and exits before the scheduler's SIGKILL,
and an interrupted run loses no step. A second Ctrl-C interrupts at once (KeyboardInterrupt).

One process: a handler records the signal, read at every step boundary. Several processes: they
must all stop after the same step (every checkpoint save is collective), so JAX's preemption sync
service decides (`jax.distributed.initialize` starts it and it listens for SIGTERM on every host):
`reached_preemption(step)` turns True at the same step everywhere once any host was notified.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import jax
import orbax.checkpoint as ocp


class StopNotice:
    """`requested(step)`: whether the run should save and stop after `step`; `signum` (0 while
    none) and `signal_name`: the signal that asked for it."""

    def __init__(self, multihost: bool) -> None:
        self.multihost = multihost
        self.signum = 0

    def requested(self, step: int) -> bool:
        if self.multihost and ocp.multihost.reached_preemption(step):
            self.signum = signal.SIGTERM
        return self.signum != 0

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signum:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum


@contextlib.contextmanager
def stop_notice() -> Iterator[StopNotice]:
    """Yields the run's StopNotice; the previous signal handlers are back on exit."""
    notice = StopNotice(multihost=jax.process_count() > 1)
    if threading.current_thread() is not threading.main_thread():  # signals reach main only
        yield notice
        return
    # With several processes the sync service owns SIGTERM; Ctrl-C is this process's own,
    # unless it was started with SIGINT ignored (as `nohup`-style launchers do).
    signums = [signal.SIGINT] if signal.getsignal(signal.SIGINT) != signal.SIG_IGN else []
    if not notice.multihost:
        signums.append(signal.SIGTERM)
    previous = {s: signal.signal(s, notice._on_signal) for s in signums}
    try:
        yield notice
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
