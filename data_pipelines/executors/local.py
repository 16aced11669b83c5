"""Multiprocessing executor: the default, on one machine."""

from __future__ import annotations

import multiprocessing
from typing import Any

from tqdm.auto import tqdm


class LocalExecutor:
    """A `spawn` process pool (a forked child of a process with JAX or TF threads can deadlock);
    one worker runs in-process, which is what tests and debuggers want."""

    def __init__(self, num_workers: int = 1):
        if num_workers < 1:
            raise ValueError(f'num_workers must be >= 1, got {num_workers}')
        self.num_workers = num_workers

    def map(self, fn, items: list[Any], desc: str = '') -> list[Any]:
        items = list(items)
        workers = min(self.num_workers, len(items))
        if workers <= 1:
            return [fn(x) for x in tqdm(items, desc=desc, disable=not desc)]
        results: list[Any] = [None] * len(items)
        with multiprocessing.get_context('spawn').Pool(workers) as pool:
            indexed = pool.imap_unordered(_call_indexed, [(fn, i, x) for i, x in enumerate(items)])
            for i, result in tqdm(indexed, total=len(items), desc=desc, disable=not desc):
                results[i] = result
        return results

    def __call__(self, fn, items: list[Any]) -> list[Any]:
        return self.map(fn, items)


def _call_indexed(task: tuple[Any, int, Any]) -> tuple[int, Any]:
    fn, i, x = task
    return i, fn(x)
