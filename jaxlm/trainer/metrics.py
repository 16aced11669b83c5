"""Peak FLOP/s, MFU and the metric writers (metrics.jsonl, TensorBoard, a console line).

Model FLOPs come from each family's closed form (`flops_per_example`, e.g.
jaxlm/models/decoder.py:flops_per_token); remat recomputation is not counted (MFU counts model
FLOPs, not hardware FLOPs).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import struct
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger(__name__)

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


def measure_cpu_peak_flops(devices: list[jax.Device], dtype: Any = jnp.bfloat16, n: int = 1024,
                           repeats: int = 5) -> float:
    """FLOP/s of jitted square matmul chains in the model's dtypes (bf16 in, f32 accumulate), one
    chain per device, all at once: the physical ceiling that MFU is measured against on CPU,
    where no data sheet applies. Simulated devices share the host's cores, so they are measured
    together (a probe replicated over a mesh would count one device's work for all of them)."""
    chain = 4
    mesh = jax.sharding.Mesh(np.asarray(devices), ('probe',))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('probe'))

    @functools.partial(jax.jit, out_shardings=sharding)
    def f(a_DxNxN: jax.Array, b_DxNxN: jax.Array) -> jax.Array:
        def body(_, x_DxNxN):
            return jnp.einsum('dij,djk->dik', x_DxNxN, b_DxNxN,
                              preferred_element_type=jnp.float32).astype(dtype)
        return jax.lax.fori_loop(0, chain, body, a_DxNxN)

    ones = np.full((len(devices), n, n), 0.01, dtype=np.float32)
    with jax.set_mesh(mesh):  # the probe's own mesh, whatever mesh the caller has set
        a = jax.device_put(ones.astype(dtype), sharding)
        b = jax.device_put(ones.astype(dtype), sharding)
        f(a, b).block_until_ready()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f(a, b).block_until_ready()
            times.append(time.perf_counter() - t0)
    return 2 * n ** 3 * chain * len(devices) / min(times)  # a peak: the best repeat


def peak_flops(devices: list[jax.Device], dtype: Any = jnp.bfloat16) -> tuple[float, str]:
    """Total peak FLOP/s of the devices in use, and where the number came from."""
    kind = devices[0].device_kind
    if devices[0].platform == 'cpu':
        # Each process measures its own devices (hosts may differ); the peak is their total.
        local = [d for d in devices if d.process_index == jax.process_index()]
        peak = measure_cpu_peak_flops(local, dtype) * jax.process_count()
        return peak, (f'measured matmul probe on {len(local)} CPU device(s) sharing the host '
                      f'x {jax.process_count()} process(es)')
    for name, flops in PEAK_FLOPS_PER_CHIP:
        if name.lower() in kind.lower():
            return flops * len(devices), f'{name} data sheet x {len(devices)}'
    return math.nan, f'unknown device kind {kind!r}: MFU not reported'


class MetricWriter:
    """Writes one JSON object per record to metrics.jsonl and scalars to TensorBoard.

    Only process 0 writes (every process holds the same global metrics). A run resumed at
    `start_step` first drops the records of later steps (logged after the checkpoint it resumes
    from, or half-written by a kill) from metrics.jsonl and from the TensorBoard event files, so
    both read as one clean run to any reader.
    """

    def __init__(self, workdir: str, start_step: int = 0, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = os.path.join(workdir, 'metrics.jsonl')
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter
            self._truncate_after(start_step)
            tb_dir = os.path.join(workdir, 'tensorboard')
            _truncate_tensorboard(tb_dir, start_step)
            self._tb = SummaryWriter(tb_dir)

    def _truncate_after(self, step: int) -> None:
        if not os.path.exists(self.path):
            return
        with open(self.path) as f:
            lines = f.read().splitlines()
        kept = []
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                if number < len(lines):  # not a kill mid-write: keep it for the user to see
                    log.warning('%s:%d is not JSON; kept as it is', self.path, number)
                    kept.append(line)
                else:
                    log.warning('%s: dropped its last line, half-written when the run was '
                                'stopped: %r', self.path, line[:80])
                continue
            if record is not None and record.get('step', 0) <= step:
                kept.append(line)
        tmp = self.path + '.tmp'
        with open(tmp, 'w') as f:
            f.writelines(line + '\n' for line in kept)
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


def _event_records(path: str) -> Iterator[bytes]:
    """The serialized events of a TFRecord file; a record cut short by a kill ends it."""
    with open(path, 'rb') as f:
        while len(header := f.read(12)) == 12:  # length (u64), its masked crc (u32)
            (length,) = struct.unpack('<Q', header[:8])
            data = f.read(length)
            if len(data) < length or len(f.read(4)) < 4:
                return
            yield data


def _truncate_tensorboard(tb_dir: str, step: int) -> None:
    """Rewrites the event files without the events of steps after `step` (TensorBoard's UI
    would hide them, but tbparse, pandas exports and event iterators would see duplicates)."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import RecordWriter

    if not os.path.isdir(tb_dir):
        return
    for name in sorted(os.listdir(tb_dir)):
        path = os.path.join(tb_dir, name)
        if not name.startswith('events.out.tfevents') or not os.path.isfile(path):
            continue
        records = list(_event_records(path))
        kept = [r for r in records if Event.FromString(r).step <= step]
        if len(kept) == len(records) and os.path.getsize(path) == sum(16 + len(r)
                                                                      for r in records):
            continue
        writer = RecordWriter(path + '.tmp')
        for record in kept:
            writer.write(record)
        writer.close()
        os.replace(path + '.tmp', path)


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
