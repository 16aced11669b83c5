"""Generated tokens/s of `jaxlm.inference.decode.generate` with and without the KV cache.

For each batch size and total length L (prompt + new tokens) it times greedy generation of a
random-weight model (weights do not change the cost) after one compile call, median of --runs:

* cache: prompts of L/2 tokens, L/2 new tokens; the time covers the prefill and the decode
  loop (one jit call), tokens/s = batch x L/2 / time.
* no cache: the reference path re-runs the model over the whole L-token buffer for every new
  token, so each step costs the same whatever the prompt length; to keep the run short it
  generates the last --nocache_steps tokens of the L-token buffer,
  tokens/s = batch x nocache_steps / time.

  PYTHONPATH=. python benchmarks/decode_throughput.py --batches 1,8 --lengths 128,256,512
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.inference.decode import generate
from jaxlm.models.config import ModelConfig
from jaxlm.models.decoder import Transformer, count_params

CONFIGS = {
    # The 25M config of train_throughput.py, with a 1024-token context.
    '25m': dict(vocab_size=8192, num_layers=6, d_model=512, num_heads=8, num_kv_heads=4,
                head_dim=64, mlp_dim=1408, max_seq_len=1024),
    'tiny': dict(vocab_size=256, num_layers=2, d_model=64, num_heads=4, num_kv_heads=2,
                 head_dim=16, mlp_dim=128, max_seq_len=256),
}


def _time(fn, runs: int) -> tuple[float, float, float]:
    fn()  # compile
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--config', default='25m', choices=sorted(CONFIGS))
    ap.add_argument('--batches', default='1,8')
    ap.add_argument('--lengths', default='128,256,512')
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--nocache_steps', type=int, default=16)
    ap.add_argument('--no-nocache', dest='nocache', action='store_false',
                    help='skip the full-recompute path')
    ap.add_argument('--dtype', default='bfloat16')
    ap.add_argument('--json', default=None)
    args = ap.parse_args()

    cfg = ModelConfig(**CONFIGS[args.config], dtype=jnp.dtype(args.dtype))
    model = Transformer(cfg)
    params = jax.jit(lambda k: nn.unbox(model.init(k, jnp.zeros((1, 8), jnp.int32))['params']))(
        jax.random.PRNGKey(0))
    n_params = count_params(cfg)
    print(f'# {args.config}: {n_params:,} params, {args.dtype} compute, float32 params, '
          f'{jax.devices()[0].device_kind} x{len(jax.devices())}, jax {jax.__version__}')
    rng = np.random.default_rng(0)
    rows = []
    for batch in [int(b) for b in args.batches.split(',')]:
        for length in [int(n) for n in args.lengths.split(',')]:
            new = length // 2
            prompts = rng.integers(1, cfg.vocab_size, (batch, length - new)).tolist()
            med, lo, hi = _time(lambda p=prompts, n=new: generate(
                model, params, p, max_new_tokens=n), args.runs)
            row = {'batch': batch, 'length': length, 'prompt': length - new, 'new_tokens': new,
                   'cache_s': med, 'cache_min_max': [lo, hi], 'cache_tok_s': batch * new / med}
            if args.nocache:
                k = min(args.nocache_steps, new)
                long_prompts = rng.integers(1, cfg.vocab_size, (batch, length - k)).tolist()
                med, lo, hi = _time(lambda p=long_prompts, n=k: generate(
                    model, params, p, max_new_tokens=n, use_cache=False), args.runs)
                row.update(nocache_steps=k, nocache_s=med, nocache_min_max=[lo, hi],
                           nocache_tok_s=batch * k / med)
                row['speedup'] = row['cache_tok_s'] / row['nocache_tok_s']
            rows.append(row)
            print(f'# done batch {batch} length {length}', flush=True)

    print('\n| batch | total length | prompt + new | cache tok/s | no-cache tok/s | speed-up |')
    print('| --- | --- | --- | --- | --- | --- |')
    for r in rows:
        nc = f"{r['nocache_tok_s']:,.1f}" if 'nocache_tok_s' in r else '-'
        sp = f"{r['speedup']:.1f}x" if 'speedup' in r else '-'
        print(f"| {r['batch']} | {r['length']} | {r['prompt']} + {r['new_tokens']} | "
              f"{r['cache_tok_s']:,.1f} | {nc} | {sp} |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'config': args.config, 'params': n_params, 'dtype': args.dtype,
                       'rows': rows}, f, indent=1)


if __name__ == '__main__':
    main()
