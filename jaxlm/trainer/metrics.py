"""FLOPs, MFU and the metric writers (metrics.jsonl, TensorBoard, a console line).

FLOPs per trained token (MaxText's definition, with causal attention counted once):
    6 * N_matmul                      forward + backward of every kernel and the output head
  + 6 * num_layers * num_heads * head_dim * seq_len
                                      QK^T and AV: 2 matmuls x 2 FLOPs x S^2 H Dh per layer,
                                      halved for the causal mask, x3 for forward + backward
Remat recomputation is not counted (MFU counts model FLOPs, not hardware FLOPs).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.models.transformer import TransformerConfig, matmul_params

# Dense bf16 peak FLOP/s per chip, from the vendors' data sheets; matched by substring of
# `device.device_kind`, most specific first.
PEAK_FLOPS_PER_CHIP = (
    ('TPU v6 lite', 918e12), ('TPU v6e', 918e12),
    ('TPU v5 lite', 197e12), ('TPU v5e', 197e12),
    ('TPU v5p', 459e12), ('TPU v5', 459e12),
    ('TPU v4', 275e12), ('TPU v3', 123e12),
    ('B200', 2250e12), ('H200', 989e12), ('H100 PCIe', 756e12), ('H100', 989e12),
    ('A100', 312e12), ('L4', 121e12), ('A10G', 125e12),
)


def flops_per_token(cfg: TransformerConfig, seq_len: int) -> float:
    attention = 6 * cfg.num_layers * cfg.num_heads * cfg.head_dim * seq_len
    return 6 * matmul_params(cfg) + attention


def measure_cpu_peak_flops(dtype: Any = jnp.bfloat16, n: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of a jitted square matmul chain in the model's dtypes (bf16 in, f32 accumulate):
    the physical ceiling that MFU is measured against on CPU, where no data sheet applies."""
    chain = 4

    @jax.jit
    def f(a: jax.Array, b: jax.Array) -> jax.Array:
        def body(_, x):
            return jnp.dot(x, b, preferred_element_type=jnp.float32).astype(dtype)
        return jax.lax.fori_loop(0, chain, body, a)

    a = jnp.ones((n, n), dtype) * 0.01
    b = jnp.ones((n, n), dtype) * 0.01
    f(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 * chain / float(np.median(times))


def peak_flops(devices: list[jax.Device], dtype: Any = jnp.bfloat16) -> tuple[float, str]:
    """Total peak FLOP/s of the devices in use, and where the number came from."""
    kind = devices[0].device_kind
    if devices[0].platform == 'cpu':
        # Simulated CPU devices share the same cores: the probe already measures all of them.
        return measure_cpu_peak_flops(dtype), f'measured matmul probe on CPU ({kind})'
    for name, flops in PEAK_FLOPS_PER_CHIP:
        if name.lower() in kind.lower():
            return flops * len(devices), f'{name} data sheet x {len(devices)}'
    return math.nan, f'unknown device kind {kind!r}: MFU not reported'


class MetricWriter:
    """Writes one JSON object per record to metrics.jsonl and scalars to TensorBoard.

    Only process 0 writes (every process holds the same global metrics).
    """

    def __init__(self, workdir: str, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = os.path.join(workdir, 'metrics.jsonl')
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter  # noqa: PLC0415 (only process 0 needs it)
            self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

    def truncate_after(self, step: int) -> None:
        """On resume, drop records of steps the restored checkpoint has not seen yet (a crash
        after logging but before the next checkpoint), so the file reads as one clean run."""
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            kept = [line for line in f if line.strip() and json.loads(line)['step'] <= step]
        tmp = self.path + '.tmp'
        with open(tmp, 'w') as f:
            f.writelines(kept)
        os.replace(tmp, self.path)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {'step': int(step), **{k: _to_float(v) for k, v in scalars.items()}}
        with open(self.path, 'a') as f:
            f.write(json.dumps(record) + '\n')
        for k, v in record.items():
            if k != 'step' and v is not None and math.isfinite(v):
                self._tb.add_scalar(k, v, step)
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _to_float(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


def memory_summary(compiled: Any) -> dict[str, int]:
    """Bytes per device of a compiled step (XLA's buffer assignment, before anything runs)."""
    m = compiled.memory_analysis()
    if m is None:
        return {}
    out = {k: int(getattr(m, k + '_size_in_bytes', 0))
           for k in ('argument', 'output', 'alias', 'temp', 'generated_code')}
    out['total'] = out['argument'] + out['output'] - out['alias'] + out['temp']
    return out


def format_bytes(n: float) -> str:
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if abs(n) < 1024 or unit == 'TiB':
            return f'{n:.1f} {unit}'
        n /= 1024
    return f'{n:.1f} TiB'
