"""Conversion time and peak memory for a random Llama-3.2-1B-shaped HF checkpoint
(experiments/llama_1b.py: 16 x 2048, 32/8 heads, SwiGLU 8192, vocab 128256, tied).

    python benchmarks/convert_memory.py [--dir /tmp/convert_bench] [--dtype bfloat16]

The HF folder is written with numpy, one shard per layer (never the whole model in memory, no
torch). Each conversion then runs in a fresh process; its peak RSS (getrusage ru_maxrss) is
reported beside the size of the parameters it must hold.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import ml_dtypes
import numpy as np

SHAPE = dict(vocab=128256, layers=16, d=2048, heads=32, kv=8, head_dim=64, mlp=8192)


def write_random_hf(directory: str, dtype: str) -> int:
    from safetensors.numpy import save_file

    s = SHAPE
    np_dtype = {'bfloat16': ml_dtypes.bfloat16, 'float32': np.float32}[dtype]
    rng = np.random.default_rng(0)
    def rand(*shape):
        return (rng.standard_normal(shape, np.float32) * 0.02).astype(np_dtype)

    os.makedirs(directory, exist_ok=True)
    weight_map, total, count = {}, 0, 0
    n = s['layers'] + 1  # shard 0: embedding + final norm; then one shard per layer
    for k in range(n):  # one shard in memory at a time
        if k == 0:
            tensors = {'model.embed_tokens.weight': rand(s['vocab'], s['d']),
                       'model.norm.weight': np.ones(s['d'], np_dtype)}
        else:
            p, hd = f'model.layers.{k - 1}.', s['head_dim']
            tensors = {p + 'input_layernorm.weight': np.ones(s['d'], np_dtype),
                       p + 'post_attention_layernorm.weight': np.ones(s['d'], np_dtype),
                       p + 'self_attn.q_proj.weight': rand(s['heads'] * hd, s['d']),
                       p + 'self_attn.k_proj.weight': rand(s['kv'] * hd, s['d']),
                       p + 'self_attn.v_proj.weight': rand(s['kv'] * hd, s['d']),
                       p + 'self_attn.o_proj.weight': rand(s['d'], s['heads'] * hd),
                       p + 'mlp.gate_proj.weight': rand(s['mlp'], s['d']),
                       p + 'mlp.up_proj.weight': rand(s['mlp'], s['d']),
                       p + 'mlp.down_proj.weight': rand(s['d'], s['mlp'])}
        name = f'model-{k + 1:05d}-of-{n:05d}.safetensors'
        save_file(tensors, os.path.join(directory, name), metadata={'format': 'pt'})
        for t, a in tensors.items():
            weight_map[t] = name
            total += a.nbytes
            count += a.size
        del tensors
    with open(os.path.join(directory, 'model.safetensors.index.json'), 'w') as f:
        json.dump({'metadata': {'total_size': total}, 'weight_map': weight_map}, f)
    config = dict(architectures=['LlamaForCausalLM'], model_type='llama',
                  vocab_size=s['vocab'], hidden_size=s['d'], intermediate_size=s['mlp'],
                  num_hidden_layers=s['layers'], num_attention_heads=s['heads'],
                  num_key_value_heads=s['kv'], head_dim=s['head_dim'],
                  max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True,
                  rope_parameters=dict(rope_type='llama3', rope_theta=500000.0, factor=32.0,
                                       low_freq_factor=1.0, high_freq_factor=4.0,
                                       original_max_position_embeddings=8192),
                  bos_token_id=128000, eos_token_id=128001, dtype=dtype)
    with open(os.path.join(directory, 'config.json'), 'w') as f:
        json.dump(config, f, indent=2)
    return count


def run_convert(args: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS GiB) of `python -m jaxlm.convert args` in a fresh process."""
    code = ('import resource, sys; from jaxlm.convert import main; rc = main(sys.argv[1:]); '
            'print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); '
            'sys.exit(rc)')
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True,
                         env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    seconds = time.perf_counter() - t0
    if out.returncode:  # e.g. -9: killed for memory
        print(f'  failed (rc {out.returncode}): {(out.stdout + out.stderr)[-500:]}')
        return seconds, float('nan')
    kb = int(out.stdout.split('PEAK_RSS_KB')[1].split()[0])
    return seconds, kb / 2**20


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--dir', default='/tmp/convert_bench')
    p.add_argument('--dtype', default='bfloat16', choices=('bfloat16', 'float32'))
    p.add_argument('--keep', action='store_true')
    a = p.parse_args()
    hf, run, back = (os.path.join(a.dir, n) for n in ('hf', 'run', 'back'))
    shutil.rmtree(a.dir, ignore_errors=True)
    t0 = time.perf_counter()
    count = write_random_hf(hf, a.dtype)
    gen_s = time.perf_counter() - t0
    gen_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f'random HF checkpoint: {count:,} params ({a.dtype}) written in {gen_s:.1f}s, '
          f'generator peak RSS {gen_rss:.2f} GiB')
    f32_gib = count * 4 / 2**30
    for label, args in (
        ('HF -> jaxlm', ['--from-hf', hf, '--workdir', run]),
        ('jaxlm -> HF', ['--to-hf', back, '--workdir', run]),
    ):
        s, rss = run_convert(args)
        print(f'{label:32s} {s:7.1f} s   peak RSS {rss:6.2f} GiB   '
              f'(f32 params alone: {f32_gib:.2f} GiB)', flush=True)
    if not a.keep:
        shutil.rmtree(a.dir, ignore_errors=True)


if __name__ == '__main__':
    main()
