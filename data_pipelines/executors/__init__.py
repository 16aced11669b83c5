"""Executors run one picklable top-level function over a list of items: `map(fn, items) -> list`."""

from __future__ import annotations

from typing import Any, Protocol


class Executor(Protocol):
    def map(self, fn, items: list[Any], desc: str = '') -> list[Any]: ...


def make_executor(name: str, num_workers: int, address: str = '') -> Executor:
    """`local` (multiprocessing, the default) or `ray` (the cluster at `address`, else a new
    local one)."""
    if name == 'local':
        from data_pipelines.executors.local import LocalExecutor

        return LocalExecutor(num_workers)
    if name == 'ray':
        from data_pipelines.executors.ray import RayExecutor

        return RayExecutor(num_workers, address)
    raise ValueError(f"executor {name!r} is not 'local' or 'ray'")
