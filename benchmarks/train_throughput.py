"""Train-step throughput and MFU of jaxlm on this CPU, against a PyTorch baseline of the same model.

    cd /work/main && PYTHONPATH=. /tmp/venv/bin/python benchmarks/train_throughput.py \
        --configs tiny,25m --steps 12 --devices 1 --dtype bfloat16 --json /tmp/tp.json

For each config: AOT-compiles jaxlm's real train step (`compile_training`), then times it, PyTorch
eager and (optionally) `torch.compile` on the same batch, interleaved in rounds so that load from
other processes on this shared machine hits all of them alike. Reported numbers are medians of the
timed steps. MFU = flops_per_token (MaxText's 6N + causal attention, `jaxlm.models.decoder`) x
tokens/s / peak, where the peak is a matmul probe in the compute dtype measured in the same run
(before and after; the larger is used, which gives the more conservative MFU).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlm import config as config_lib
from jaxlm.models.decoder import count_params, flops_per_token
from jaxlm.trainer import metrics as metrics_lib
from jaxlm.trainer.loop import compile_training
from jaxlm.trainer.state import init_state

# ~26M-parameter LLaMA-style model (26,089,984 with these numbers), derived from tiny.
CONFIG_25M = dict(vocab_size=8192, num_layers=6, d_model=512, num_heads=8, num_kv_heads=4,
                  head_dim=64, mlp_dim=1408, max_seq_len=256)
DATA_25M = dict(seq_len=256, global_batch_size=8)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--configs', default='tiny,25m',
                   help='comma-separated: tiny, 25m, or any experiments/<name>.py')
    p.add_argument('--steps', type=int, default=12, help='timed steps per implementation')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps after the first')
    p.add_argument('--rounds', type=int, default=3,
                   help='timed steps are split into this many interleaved jax/torch rounds')
    p.add_argument('--devices', type=int, default=1,
                   help='simulated CPU devices (jax_num_cpu_devices); mesh data=N')
    p.add_argument('--dtype', default='bfloat16', choices=('bfloat16', 'float32'),
                   help='compute dtype (params and optimizer state stay float32)')
    p.add_argument('--torch', action=argparse.BooleanOptionalAction, default=True,
                   help='also time the PyTorch baseline (benchmarks/torch_baseline.py)')
    p.add_argument('--torch-compile', action=argparse.BooleanOptionalAction, default=True,
                   help='also time torch.compile of the baseline')
    p.add_argument('--torch-threads', type=int, default=2)
    p.add_argument('--json', default='', help='write all measurements to this file')
    return p.parse_args(argv)


def bench_config(name: str, dtype: str, devices: int) -> ml_collections.ConfigDict:
    if name == '25m':
        cfg = importlib.import_module('experiments.tiny').get_config()
        cfg.model.update(**CONFIG_25M)
        cfg.data.update(**DATA_25M)
        cfg.data.tokenizer.vocab_size = CONFIG_25M['vocab_size']
    else:
        cfg = importlib.import_module(f'experiments.{name}').get_config()
    cfg.model.dtype = dtype
    cfg.mesh.update(data=devices, fsdp=1, tensor=1)  # pure data parallel over simulated devices
    cfg.optimizer.grad_accum_steps = 1
    return cfg


def make_batch(cfg: ml_collections.ConfigDict, seed: int = 0) -> dict[str, np.ndarray]:
    """One unpacked batch: every row a single document, every token counted in the loss."""
    b, length, v = cfg.data.global_batch_size, cfg.data.seq_len, cfg.model.vocab_size
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, v, (b, length + 1), dtype=np.int32)
    return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:],
            'segment_ids': np.ones((b, length), np.int32),
            'positions': np.broadcast_to(np.arange(length, dtype=np.int32), (b, length)).copy(),
            'loss_mask': np.ones((b, length), np.float32)}


def summarize(times: list[float], tokens_per_step: int, flops_per_token: float,
              peak: float) -> dict[str, float]:
    med = statistics.median(times)
    tps = tokens_per_step / med
    return {'median_step_s': med, 'min_step_s': min(times), 'max_step_s': max(times),
            'tokens_per_s': tps, 'model_tflops_per_s': tps * flops_per_token / 1e12,
            'mfu': tps * flops_per_token / peak, 'num_timed_steps': len(times)}


class JaxRunner:
    """jaxlm's own AOT-compiled train step on a materialised state and a fixed batch."""

    def __init__(self, cfg: ml_collections.ConfigDict, np_batch: dict[str, np.ndarray]) -> None:
        devices = jax.devices()
        mesh_shape = config_lib.validate(cfg, len(devices))
        self.setup = setup = compile_training(cfg, devices, mesh_shape)
        with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
            self.state = init_state(setup.model, setup.tx, cfg.seed, cfg.data.seq_len,
                                    setup.state_shardings, setup.tuning)
            self.batch = {k: jax.device_put(v, setup.batch_sharding) for k, v in np_batch.items()}
        # Host copy of the initial params (before donation) for the torch parity check.
        self.initial_params = jax.device_get(self.state['params'])
        t0 = time.perf_counter()
        self.first_loss = self.step()
        self.first_step_s = time.perf_counter() - t0

    def step(self) -> float:
        self.state, m = self.setup.train_step(self.state, self.batch)
        return float(m['loss'].block_until_ready())


class TorchRunner:
    def __init__(self, label: str, step_fn: Any, inputs: Any, targets: Any) -> None:
        self.label, self._step, self.inputs, self.targets = label, step_fn, inputs, targets
        t0 = time.perf_counter()
        self.first_loss = self.step()
        self.first_step_s = time.perf_counter() - t0  # includes torch.compile for 'compiled'

    def step(self) -> float:
        return self._step(self.inputs, self.targets)


def build_torch(cfg: ml_collections.ConfigDict, jax_runner: JaxRunner,
                np_batch: dict[str, np.ndarray], args: argparse.Namespace,
                info: dict[str, Any]) -> list[TorchRunner]:
    import torch

    from benchmarks import torch_baseline as tb

    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(0)
    model_cfg = jax_runner.setup.model.cfg
    model = tb.TorchTransformer(model_cfg, cfg.data.seq_len)
    n_torch, n_jax = tb.num_params(model), count_params(model_cfg)
    assert n_torch == n_jax, f'torch model has {n_torch:,} params, jaxlm {n_jax:,}'
    info['torch_params'] = n_torch
    dtype = torch.bfloat16 if args.dtype == 'bfloat16' else torch.float32
    inputs = torch.from_numpy(np_batch['inputs']).long()
    targets = torch.from_numpy(np_batch['targets']).long()

    # Like-for-like check: same initial weights, same batch -> same loss as jaxlm's first step.
    tb.load_jax_params(model, jax_runner.initial_params)
    with torch.no_grad():
        ref = tb.loss_fn(model, inputs, targets, dtype).item()
    tol = 2e-2 if args.dtype == 'bfloat16' else 1e-4
    info['torch_vs_jax_initial_loss'] = [ref, jax_runner.first_loss]
    assert abs(ref - jax_runner.first_loss) < tol, (
        f'torch initial loss {ref:.5f} != jaxlm {jax_runner.first_loss:.5f}: models differ')
    print(f'  parity: initial loss torch {ref:.5f} vs jaxlm {jax_runner.first_loss:.5f}',
          flush=True)

    opt = tb.make_optimizer(model, cfg.optimizer)
    clip = cfg.optimizer.grad_clip_norm
    runners = [TorchRunner('torch eager', tb.make_train_step(model, opt, dtype, clip),
                           inputs, targets)]
    print(f'  torch eager first step {runners[0].first_step_s:.1f}s', flush=True)
    if args.torch_compile:
        try:
            # Shares parameters and optimizer with the eager model: only the forward/backward
            # graphs are compiled (the optimizer step stays eager, as in most training scripts).
            compiled = torch.compile(model)
            runners.append(TorchRunner('torch compile', tb.make_train_step(compiled, opt, dtype,
                                                                           clip), inputs, targets))
            info['torch_compile_first_step_s'] = runners[-1].first_step_s
            print(f'  torch.compile first step (compile) {runners[-1].first_step_s:.1f}s',
                  flush=True)
        except Exception as e:
            info['torch_compile_error'] = f'{type(e).__name__}: {e}'[:500]
            print(f'  torch.compile failed: {info["torch_compile_error"]}', flush=True)
    return runners


def run_config(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cfg = bench_config(name, args.dtype, args.devices)
    np_batch = make_batch(cfg)
    print(f'\n== {name}: compiling jaxlm train step', flush=True)
    jr = JaxRunner(cfg, np_batch)
    model_cfg = jr.setup.model.cfg
    tokens = cfg.data.global_batch_size * cfg.data.seq_len
    info: dict[str, Any] = {
        'config': name, 'params': count_params(model_cfg), 'tokens_per_step': tokens,
        'seq_len': cfg.data.seq_len, 'global_batch_size': cfg.data.global_batch_size,
        'flops_per_token': flops_per_token(model_cfg, cfg.data.seq_len),
        'jax_compile_s': jr.setup.compile_seconds, 'jax_first_step_s': jr.first_step_s,
        'memory_per_device': metrics_lib.memory_summary(jr.setup.train_step),
    }
    print(f'  {info["params"]:,} params, {tokens} tokens/step, '
          f'{info["flops_per_token"] * tokens / 1e12:.4f} TFLOP/step; jaxlm compile '
          f'{jr.setup.compile_seconds:.1f}s, first step {jr.first_step_s:.2f}s', flush=True)

    runners: list[Any] = [('jaxlm', jr)]
    if args.torch:
        runners += [(t.label, t) for t in build_torch(cfg, jr, np_batch, args, info)]
    for _, r in runners:  # warm-up (allocator, caches, compiled-graph guards)
        for _ in range(args.warmup):
            r.step()

    times: dict[str, list[float]] = {label: [] for label, _ in runners}
    per_round = [args.steps // args.rounds + (i < args.steps % args.rounds)
                 for i in range(args.rounds)]
    for n in per_round:
        for label, r in runners:
            for _ in range(n):
                t0 = time.perf_counter()
                r.step()  # returns a Python float: the loss is ready when it returns
                times[label].append(time.perf_counter() - t0)
        print('  round: ' + ', '.join(f'{k} {statistics.median(v[-n:]):.3f}s'
                                      for k, v in times.items() if n), flush=True)
    info['times'] = times
    return info


def probe_peak(dtype: Any) -> float:
    # The default 1024^2 probe reads up to ~1.5x lower than larger matmuls on this CPU; the
    # larger of the two sizes is the better ceiling (and the more conservative MFU).
    return max(metrics_lib.measure_cpu_peak_flops(jax.devices(), dtype, n=n) for n in (1024, 2048))


def fmt_row(cells: list[Any]) -> str:
    return '| ' + ' | '.join(str(c) for c in cells) + ' |'


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Must precede any backend initialisation (jax.devices(), first op).
    jax.config.update('jax_num_cpu_devices', args.devices)
    load_before = os.getloadavg()
    print(f'load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; '
          f'{os.cpu_count()} cores; jax {jax.__version__}, {len(jax.devices())} '
          f'{jax.devices()[0].platform} device(s); compute dtype {args.dtype}', flush=True)
    dtype = jnp.dtype(args.dtype)
    peaks = [probe_peak(dtype)]
    print(f'peak probe (before): {peaks[0] / 1e9:.0f} GFLOP/s', flush=True)

    results = [run_config(name.strip(), args) for name in args.configs.split(',') if name.strip()]

    peaks.append(probe_peak(dtype))
    peak = max(peaks)
    load_after = os.getloadavg()
    print(f'\npeak probe ({args.dtype} matmul chain, best of n=1024/2048, median of 5 each): '
          f'before {peaks[0] / 1e9:.0f}, after {peaks[1] / 1e9:.0f} GFLOP/s; '
          f'MFU uses {peak / 1e9:.0f}')
    print(f'load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}')

    print(f'\ndevices={args.devices} (mesh data={args.devices}), dtype={args.dtype}, '
          f'median of {args.steps} steps, torch threads={args.torch_threads}\n')
    print(fmt_row(['config', 'impl', 'params', 'tokens/step', 'median step s', 'min-max s',
                   'tokens/s', 'model TFLOP/s', 'MFU']))
    print(fmt_row(['---'] * 9))
    for info in results:
        info['summary'] = {}
        for label, times in info['times'].items():
            s = summarize(times, info['tokens_per_step'], info['flops_per_token'], peak)
            info['summary'][label] = s
            print(fmt_row([info['config'], label, f'{info["params"]:,}', info['tokens_per_step'],
                           f'{s["median_step_s"]:.4f}',
                           f'{s["min_step_s"]:.3f}-{s["max_step_s"]:.3f}',
                           f'{s["tokens_per_s"]:,.0f}', f'{s["model_tflops_per_s"]:.4f}',
                           f'{s["mfu"]:.1%}']))
    if args.torch:
        print('\n| config | ratio jaxlm / torch eager | ratio jaxlm / torch compile |')
        print('| --- | --- | --- |')
        for info in results:
            s = info['summary']
            cells = [f'{s["jaxlm"]["tokens_per_s"] / s[k]["tokens_per_s"]:.2f}x' if k in s
                     else info.get('torch_compile_error', 'not run')[:60]
                     for k in ('torch eager', 'torch compile')]
            print(fmt_row([info['config'], *cells]))

    if args.json:
        out = {'args': vars(args), 'load_before': load_before, 'load_after': load_after,
               'peak_flops_probes': peaks, 'peak_flops': peak, 'cpu_count': os.cpu_count(),
               'jax_version': jax.__version__, 'time': time.strftime('%Y-%m-%d %H:%M:%S'),
               'results': results}
        with open(args.json, 'w') as f:
            json.dump(out, f, indent=2, default=lambda o: None if isinstance(o, float)
                      and not math.isfinite(o) else str(o))
        print(f'\nwrote {args.json}')


if __name__ == '__main__':
    main()
