"""Benchmark tasks during training (`config.eval.tasks`), logged beside eval_loss.

The parameters are copied to one local device and scored there: simple and exact, and fine for
models that fit one device; larger runs evaluate checkpoints with `python -m jaxlm.eval`.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

import jax
import ml_collections

from jaxlm.evaluation.lm import JaxLM
from jaxlm.evaluation.registry import get_task
from jaxlm.models.decoder import Transformer


def make_eval_hook(cfg: ml_collections.ConfigDict):
    """Builds the tasks once (unknown names fail before training starts)."""
    e = cfg.eval
    names = [n.strip() for n in e.tasks.split(',') if n.strip()]
    tasks = {n: get_task(n, data_cfg=cfg.data) if n == 'perplexity' else get_task(n)
             for n in names}
    data_dir = cfg.data.data_dir or None
    cache: dict[str, JaxLM] = {}  # one JaxLM, so its compiled scoring is reused across evals

    def hook(step: int, model: Transformer, params: Any, tokenizer: Any) -> dict[str, float]:
        del step
        local = jax.device_put(params, jax.local_devices()[0])
        if 'lm' not in cache:
            cache['lm'] = JaxLM(model, local, tokenizer, batch_size=e.batch_size)
        lm = cache['lm']
        lm.params = local

        def run_tasks() -> dict[str, float]:
            out = {}
            for name, task in tasks.items():
                r = task.evaluate(lm, data_dir=data_dir, limit=e.limit or None,
                                  num_fewshot=None if e.num_fewshot < 0 else e.num_fewshot)
                out.update({f'{name}/{metric}': float(v) for metric, v in r.metrics.items()
                            if '/' not in metric})  # per-subject scores: see jaxlm.eval
            return out

        # The trainer calls this inside its mesh and logical-axis rules, which are thread-local:
        # a worker thread scores on one device with neither (the trainer waits for it).
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(run_tasks).result()

    return hook
