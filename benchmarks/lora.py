"""LoRA against full fine-tuning: trained-parameter share, optimizer-state bytes, AOT memory per
device and median step time, the two measured in the same run on the same batch.

    cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/lora.py --models tiny --steps 20 \
        --devices 1 --seq_len 128 --batch 16
    PYTHONPATH=. .venv/bin/python benchmarks/lora.py --models llama_1b --steps 0 --devices 8 \
        --mesh 1,8,1 --seq_len 2048 --batch 1     # AOT memory only (nothing allocated)

For each model: compiles the real train step (`compile_training`) once with every parameter
trained and once with LoRA (`--rank`, `--targets`, over the same base), then (with `--steps`)
times both interleaved, step by step, on a random state and one fixed batch, so load from other
processes on this shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import jax
import ml_collections

from benchmarks.aot_memory import mesh_shape_from_flag, model_config
from benchmarks.train_throughput import JaxRunner, make_batch
from jaxlm import config as config_lib
from jaxlm.models import lora as lora_lib
from jaxlm.trainer import metrics as metrics_lib
from jaxlm.trainer.loop import compile_training


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', default='tiny', help='comma-separated experiments/<name>.py')
    p.add_argument('--devices', type=int, default=1, help='simulated CPU devices')
    p.add_argument('--mesh', default='', help='data,fsdp,tensor (default 1,<devices>,1)')
    p.add_argument('--batch', type=int, default=16, help='sequences per data-parallel shard')
    p.add_argument('--seq_len', type=int, default=128)
    p.add_argument('--rank', type=int, default=8)
    p.add_argument('--targets', default=r'attention/(query|key|value|out)/kernel')
    p.add_argument('--steps', type=int, default=20, help='timed steps of each (0: memory only)')
    return p.parse_args(argv)


def _variant(base: ml_collections.ConfigDict, rank: int, targets: str
             ) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict(base.to_dict())
    if rank:
        cfg.lora.update(rank=rank, targets=targets)
        cfg.init_params_from = '/nonexistent'  # validated, never read: the state is random here
    return cfg


def _tree_bytes(tree: Any) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def measure(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    devices = jax.devices()
    setup = compile_training(cfg, devices, config_lib.validate(cfg, len(devices)))
    abstract = setup.abstract_state
    trained = lora_lib.count(abstract['params'])
    return {'trained': trained, 'total': setup.family.count_params(setup.model.cfg),
            'opt_state_bytes': _tree_bytes(abstract['opt_state']),
            'memory_per_device': metrics_lib.memory_summary(setup.train_step),
            'compile_s': setup.compile_seconds}


def time_both(cfgs: dict[str, ml_collections.ConfigDict], steps: int) -> dict[str, float]:
    runners = {k: JaxRunner(c, make_batch(c)) for k, c in cfgs.items()}
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(steps):
        for k, r in runners.items():
            t0 = time.perf_counter()
            r.step()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    jax.config.update('jax_num_cpu_devices', args.devices)
    mesh = mesh_shape_from_flag(args.mesh, args.devices)
    fb = metrics_lib.format_bytes
    print('| model | tuning | trained params | share | optimizer state | argument | temp | '
          'total per device | median step s |')
    print('| --- ' * 9 + '|')
    for name in (m.strip() for m in args.models.split(',') if m.strip()):
        base = model_config(name, argparse.Namespace(
            seq_len=args.seq_len, batch=args.batch, microbatches=1, repeats=1, remat='',
            dtype=''), mesh)
        cfgs = {'full': _variant(base, 0, ''), f'LoRA r{args.rank}':
                _variant(base, args.rank, args.targets)}
        rows = {k: measure(c) for k, c in cfgs.items()}
        step_s = time_both(cfgs, args.steps) if args.steps else {}
        for k, r in rows.items():
            m = r['memory_per_device']
            step = f'{step_s[k]:.4f}' if k in step_s else '-'
            print(f'| {name} | {k} | {r["trained"]:,} | {r["trained"] / r["total"]:.3%} | '
                  f'{fb(r["opt_state_bytes"])} | {fb(m.get("argument", 0))} | '
                  f'{fb(m.get("temp", 0))} | {fb(m.get("total", 0))} | {step} |', flush=True)
        if step_s:
            full, lora = step_s.values()
            print(f'  step time LoRA / full: {lora / full:.2f}', flush=True)


if __name__ == '__main__':
    main()
