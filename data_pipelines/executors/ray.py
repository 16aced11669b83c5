"""Ray executor: the same shard functions as Ray tasks, on a cluster or a local one."""

from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm

# Workers import data_pipelines from the directory that holds it, wherever the driver runs from.
_CODE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _call(fn, x):
    return fn(x)


class RayExecutor:
    """Connects to `address` (e.g. 'auto' on a cluster) or starts a local Ray with `num_workers`
    CPUs; a Ray already initialised in this process is reused."""

    def __init__(self, num_workers: int = 1, address: str = ''):
        import ray

        if not ray.is_initialized():
            pythonpath = os.pathsep.join(p for p in (_CODE_ROOT, os.environ.get('PYTHONPATH')) if p)
            kwargs: dict[str, Any] = {'address': address} if address else {'num_cpus': num_workers}
            ray.init(runtime_env={'env_vars': {'PYTHONPATH': pythonpath}}, include_dashboard=False,
                     log_to_driver=False, **kwargs)
        self._ray = ray
        self._remote = ray.remote(_call)

    def map(self, fn, items: list[Any], desc: str = '') -> list[Any]:
        ray = self._ray
        fn_ref = ray.put(fn)
        refs = [self._remote.remote(fn_ref, x) for x in items]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        with tqdm(total=len(refs), desc=desc, disable=not desc) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    results[index[ref]] = ray.get(ref)
                    bar.update(1)
        return results

    def __call__(self, fn, items: list[Any]) -> list[Any]:
        return self.map(fn, items)
