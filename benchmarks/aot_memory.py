"""Per-device memory of the real train step of large configs, AOT-compiled on simulated CPU
devices without allocating anything (XLA's buffer assignment for the sharded program).

    cd /work/main && PYTHONPATH=. /tmp/venv/bin/python benchmarks/aot_memory.py \
        --models llama_1b,llama_7b --mesh 1,8,1 --batch 1 --seq_len 2048
    # 7B with pipeline (4 stages) x FSDP (4) on 16 devices, 4 microbatches:
    PYTHONPATH=. /tmp/venv/bin/python benchmarks/aot_memory.py --models llama_7b --devices 16 \
        --mesh 1,4,4,1 --batch 4 --microbatches 4 --seq_len 2048

`--mesh data,fsdp,tensor` or `data,stage,fsdp,tensor` (product = `--devices`, default 8);
`--batch` is per data-parallel shard (global batch = batch * data * fsdp); with stage > 1 each
shard's rows split into `--microbatches` pipeline microbatches. The numbers are for the CPU
backend's compile of the same sharded program: layouts, fusion and remat decisions on TPU/GPU
differ, so treat `temp` as an estimate; argument/output sizes (the sharded train state and
batch) are exact.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import time
from typing import Any

import jax
import ml_collections

from jaxlm import config as config_lib
from jaxlm.models.config import REMAT_POLICIES
from jaxlm.trainer import metrics as metrics_lib
from jaxlm.trainer.loop import compile_training


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', default='llama_1b,llama_7b',
                   help='comma-separated experiments/<name>.py (e.g. gpt2_124m, llama_125m)')
    p.add_argument('--devices', type=int, default=8, help='simulated CPU devices')
    p.add_argument('--mesh', default='',
                   help='data,fsdp,tensor (e.g. 1,4,2) or data,stage,fsdp,tensor (e.g. 1,4,4,1); '
                   'default 1,<devices>,1 (pure FSDP)')
    p.add_argument('--microbatches', type=int, default=1, help='pipeline.num_microbatches')
    p.add_argument('--repeats', type=int, default=1, help='pipeline.num_repeats (circular)')
    p.add_argument('--batch', type=int, default=1, help='sequences per data-parallel shard')
    p.add_argument('--seq_len', type=int, default=2048)
    p.add_argument('--remat', default='', choices=('',) + tuple(REMAT_POLICIES),
                   help="override model.remat_policy (default: the experiment's)")
    p.add_argument('--dtype', default='', choices=('', 'bfloat16', 'float32'),
                   help="override model.dtype (default: the experiment's)")
    p.add_argument('--json', default='', help='write the measurements to this file')
    return p.parse_args(argv)


def mesh_shape_from_flag(flag: str, devices: int) -> dict[str, int]:
    sizes = [int(x) for x in flag.split(',')] if flag else [1, devices, 1]
    if len(sizes) == 3:
        sizes.insert(1, 1)  # no stage axis
    if len(sizes) != len(config_lib.MESH_AXES):
        raise SystemExit(f'--mesh needs data,fsdp,tensor or data,stage,fsdp,tensor, got {flag!r}')
    return dict(zip(config_lib.MESH_AXES, sizes, strict=True))


def model_config(name: str, args: argparse.Namespace,
                 mesh: dict[str, int]) -> ml_collections.ConfigDict:
    cfg = importlib.import_module(f'experiments.{name}').get_config()
    cfg.mesh.update(**mesh)
    cfg.data.seq_len = args.seq_len
    if args.seq_len > cfg.model.max_seq_len:
        # RoPE models just run longer; a learned position table grows (the count changes).
        print(f'  note: {name}: max_seq_len {cfg.model.max_seq_len} raised to {args.seq_len}'
              + (' (learned positions: +params)' if cfg.model.positions == 'learned' else ''))
        cfg.model.max_seq_len = args.seq_len
    cfg.data.global_batch_size = args.batch * mesh['data'] * mesh['fsdp']
    cfg.optimizer.grad_accum_steps = 1
    cfg.pipeline.update(num_microbatches=args.microbatches, num_repeats=args.repeats)
    if args.remat:
        cfg.model.remat_policy = args.remat
    if args.dtype:
        cfg.model.dtype = args.dtype
    return cfg


def measure(name: str, args: argparse.Namespace, mesh: dict[str, int]) -> dict[str, Any]:
    cfg = model_config(name, args, mesh)
    devices = jax.devices()
    mesh_shape = config_lib.validate(cfg, len(devices))
    t0 = time.perf_counter()
    setup = compile_training(cfg, devices, mesh_shape)
    wall = time.perf_counter() - t0
    count = setup.family.count_params
    n = count(setup.model.cfg)
    n_layers = n - count(dataclasses.replace(setup.model.cfg, num_layers=0))
    mem = metrics_lib.memory_summary(setup.train_step)
    # fp32 params + Adam mu/nu = 12 bytes/param, split over the axes that shard parameters
    # (the layer stack also over `stage`).
    shards = mesh['fsdp'] * mesh['tensor']
    state_bytes = 12 * (n_layers / mesh['stage'] + n - n_layers) / shards
    return {'model': name, 'params': n, 'mesh': mesh, 'global_batch_size':
            cfg.data.global_batch_size, 'seq_len': cfg.data.seq_len,
            'remat_policy': cfg.model.remat_policy, 'dtype': cfg.model.dtype,
            'pipeline': setup.model.pipeline.describe(cfg.model.num_layers)
            if mesh['stage'] > 1 else '',
            'compile_s': setup.compile_seconds, 'setup_s': wall,
            'memory_per_device': mem, 'analytic_state_bytes_per_device': state_bytes}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Must precede any backend initialisation.
    jax.config.update('jax_num_cpu_devices', args.devices)
    mesh = mesh_shape_from_flag(args.mesh, args.devices)
    print(f'load average: {" ".join(f"{x:.2f}" for x in os.getloadavg())}; '
          f'{len(jax.devices())} simulated {jax.devices()[0].platform} devices; mesh {mesh}; '
          f'per-shard batch {args.batch}, seq_len {args.seq_len}', flush=True)
    rows = []
    for name in (m.strip() for m in args.models.split(',') if m.strip()):
        print(f'compiling {name} ...', flush=True)
        rows.append(r := measure(name, args, mesh))
        print(f'  done: compile {r["compile_s"]:.1f}s (build + compile {r["setup_s"]:.1f}s)',
              flush=True)
        if r['pipeline']:
            print(f'  {r["pipeline"]}', flush=True)

    fb = metrics_lib.format_bytes
    print('\n| model | params | mesh d,s,f,t | global batch x seq | remat | argument | output '
          '| temp | total | state (12 B/param) | compile s |')
    print('| --- ' * 11 + '|')
    for r in rows:
        m, mesh_r = r['memory_per_device'], r['mesh']
        print(f'| {r["model"]} | {r["params"] / 1e9:.3f}B | '
              f'{",".join(str(mesh_r[a]) for a in config_lib.MESH_AXES)} | '
              f'{r["global_batch_size"]} x {r["seq_len"]} | {r["remat_policy"]} | '
              f'{fb(m.get("argument", 0))} | {fb(m.get("output", 0))} | {fb(m.get("temp", 0))} | '
              f'{fb(m.get("total", 0))} | {fb(r["analytic_state_bytes_per_device"])} | '
              f'{r["compile_s"]:.1f} |')
    print('\nbytes are per device; total = argument + output - aliased (donated state) + temp')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'args': vars(args), 'time': time.strftime('%Y-%m-%d %H:%M:%S'),
                       'load': os.getloadavg(), 'rows': rows}, f, indent=2, default=str)
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
