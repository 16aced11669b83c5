"""Pipeline step time against the microbatch count, beside the bubble formula's prediction.

    PYTHONPATH=. /tmp/venv/bin/python benchmarks/pipeline_bubble.py --microbatches 1,2,4,8,16

AOT-compiles jaxlm's real train step of `experiments/tiny.py` (4 layers; `--batch` x `--seq_len`)
on `--devices` simulated CPU devices, once without a pipeline (mesh data=devices) and once per
microbatch count M with mesh stage=devices, and times `--steps` steps of each on a fixed batch
(median, after one warm-up step).

Prediction: a pipelined step runs R*M + S - 1 ticks of one microbatch (1/M of the batch) each,
so it takes the bubble-free time / (1 - bubble) with bubble = (S - 1) / (R*M + S - 1). The
bubble-free time is taken as the non-pipelined step on the same devices. On an accelerator the
bubble is idle time; here the S simulated devices share the host's cores and the schedule computes
bubble ticks on stale data, so the cost is the same ratio of compute. What the formula leaves out
(per-tick overheads, smaller matmuls at large M, the collective-permutes) is the measured/predicted
column.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import config as config_lib
from jaxlm.layers.pipeline import PipelineSchedule
from jaxlm.trainer.loop import compile_training
from jaxlm.trainer.state import init_state


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--config', default='tiny', help='experiments/<name>.py')
    p.add_argument('--devices', type=int, default=4, help='simulated CPU devices = stages')
    p.add_argument('--microbatches', default='1,2,4,8,16')
    p.add_argument('--repeats', type=int, default=1, help='pipeline.num_repeats (circular)')
    p.add_argument('--batch', type=int, default=32, help='global batch (sequences)')
    p.add_argument('--seq_len', type=int, default=128)
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--json', default='', help='write the measurements to this file')
    return p.parse_args(argv)


def step_seconds(args: argparse.Namespace, mesh: dict[str, int], micro: int) -> float:
    cfg = importlib.import_module(f'experiments.{args.config}').get_config()
    cfg.mesh.update(**mesh)
    cfg.pipeline.update(num_microbatches=micro, num_repeats=args.repeats)
    cfg.data.update(seq_len=args.seq_len, global_batch_size=args.batch)
    cfg.model.max_seq_len = max(cfg.model.max_seq_len, args.seq_len)
    setup = compile_training(cfg, jax.devices(), config_lib.validate(cfg, len(jax.devices())))
    state = init_state(setup.model, setup.tx, 0, args.seq_len, setup.state_shardings)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.model.vocab_size, (args.batch, args.seq_len), np.int32)
    host = {'inputs': tokens, 'targets': tokens, 'segment_ids': np.ones_like(tokens),
            'positions': np.broadcast_to(np.arange(args.seq_len, dtype=np.int32), tokens.shape),
            'loss_mask': np.ones(tokens.shape, np.float32)}
    batch = {k: jax.device_put(jnp.asarray(host[k]), setup.batch_sharding)
             for k in setup.abstract_batch}
    times = []
    for i in range(args.steps + 1):
        t0 = time.perf_counter()
        state, metrics = setup.train_step(state, batch)
        jax.block_until_ready(metrics)
        if i:  # the first step pays for transfers and allocation
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    jax.config.update('jax_num_cpu_devices', args.devices)  # before any backend use
    stages = args.devices
    print(f'load average: {" ".join(f"{x:.2f}" for x in os.getloadavg())}; {stages} simulated '
          f'devices; {args.config}, batch {args.batch} x {args.seq_len}, repeats {args.repeats}',
          flush=True)
    base = step_seconds(args, dict(data=stages, stage=1, fsdp=1, tensor=1), 1)
    print(f'no pipeline (data={stages}): {base:.4f} s/step', flush=True)
    rows: list[dict[str, Any]] = []
    for micro in (int(m) for m in args.microbatches.split(',')):
        schedule = PipelineSchedule(stages, micro, args.repeats)
        t = step_seconds(args, dict(data=1, stage=stages, fsdp=1, tensor=1), micro)
        predicted = base / (1 - schedule.bubble_fraction)
        rows.append({'microbatches': micro, 'bubble_fraction': schedule.bubble_fraction,
                     'step_s': t, 'predicted_s': predicted})
        print(f'M={micro}: {t:.4f} s/step (predicted {predicted:.4f})', flush=True)

    print(f'\n| microbatches | bubble (S-1)/(R*M+S-1) | step s | predicted s = {base:.4f} / '
          '(1 - bubble) | measured / predicted |')
    print('| --- ' * 5 + '|')
    for r in rows:
        print(f'| {r["microbatches"]} | {r["bubble_fraction"]:.3f} | {r["step_s"]:.4f} | '
              f'{r["predicted_s"]:.4f} | {r["step_s"] / r["predicted_s"]:.2f} |')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'args': vars(args), 'load': os.getloadavg(), 'no_pipeline_s': base,
                       'rows': rows}, f, indent=2)
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
