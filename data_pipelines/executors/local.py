"""Multiprocessing executor: the default, on one machine."""

from __future__ import annotations

import multiprocessing
import weakref
from typing import Any

from tqdm.auto import tqdm


class LocalExecutor:
    """A `spawn` process pool (a forked child of a process with JAX or TF threads can deadlock),
    started at the first map and kept for the next ones, so workers import the stages' libraries
    and load their models once per run. One worker runs in-process, which tests and debuggers
    want."""

    def __init__(self, num_workers: int = 1):
        if num_workers < 1:
            raise ValueError(f'num_workers must be >= 1, got {num_workers}')
        self.num_workers = num_workers
        self._pool = None

    def _get_pool(self):
        if self._pool is None:
            self._pool = multiprocessing.get_context('spawn').Pool(self.num_workers)
            weakref.finalize(self, self._pool.terminate)
        return self._pool

    def map(self, fn, items: list[Any], desc: str = '') -> list[Any]:
        items = list(items)
        if self.num_workers == 1 or len(items) <= 1:
            return [fn(x) for x in tqdm(items, desc=desc, disable=not desc)]
        results: list[Any] = [None] * len(items)
        indexed = self._get_pool().imap_unordered(_call_indexed,
                                                  [(fn, i, x) for i, x in enumerate(items)])
        for i, result in tqdm(indexed, total=len(items), desc=desc, disable=not desc):
            results[i] = result
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    def __call__(self, fn, items: list[Any]) -> list[Any]:
        return self.map(fn, items)


def _call_indexed(task: tuple[Any, int, Any]) -> tuple[int, Any]:
    fn, i, x = task
    return i, fn(x)
