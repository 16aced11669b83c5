"""Supervised fine-tuning throughput: best-fit-decreasing packed rows against padded rows (one
conversation per row), on the mixed-length conversations of a post-training mixture.

Both layouts run the same jitted train step (forward, backward, Adam) on [batch, seq_len] rows,
so a step costs the same either way; what packing changes is how many of a row's tokens are real
(not padding). Reported per layout: rows needed for the set, fill (real tokens / row tokens),
the median step time over --steps steps (after one compile step), and real tokens/s = the median
of (real tokens in the step's batch / its time). Conversations are tokenized with the ChatML
byte tokenizer (no tokenizer training); those longer than seq_len are dropped, as
`data.truncation = 'drop'` does.

  PYTHONPATH=. python benchmarks/sft_packing.py --seq_len 1024 --batch 4 --steps 10
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from jaxlm.data import mixture, packing
from jaxlm.data.chat import ChatTemplate
from jaxlm.data.chat_format import ChatByteTokenizer
from jaxlm.models.config import ModelConfig
from jaxlm.models.decoder import Transformer
from jaxlm.objectives.sft import ConversationPacker, SupervisedFineTuning


def _examples(args: argparse.Namespace) -> tuple[ConversationPacker, list]:
    cfg = ConfigDict({'mixture': args.mixture, 'data_dir': args.data_dir, 'eval_fraction': 0.01,
                      'cache_dir': '', 'tokenizer': {'kind': 'byte', 'vocab_size': 0,
                                                     'path': ''}})
    drawn = mixture.open_mixture(cfg, seed=0).train  # dataset by dataset: sample across them
    pick = np.random.default_rng(0).permutation(len(drawn))[:args.conversations]
    records = [drawn[i] for i in pick]
    packer = ConversationPacker(ChatTemplate(), ChatByteTokenizer(), args.seq_len)
    examples = [packer.example(r, i) for i, r in enumerate(records)]
    return packer, [e for e in examples if len(e[0]) <= args.seq_len + 1]


def _train_step(model: nn.Module, tx: optax.GradientTransformation):
    objective = SupervisedFineTuning()

    def loss_fn(params, rows):
        logits = model.apply({'params': params}, rows['inputs'], rows['segment_ids'],
                             rows['positions'])
        sums = objective.loss(logits, rows)
        return sums.loss / jnp.maximum(sums.weight, 1.0)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, rows):
        loss, grads = jax.value_and_grad(loss_fn)(params, rows)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss
    return step


def _run(layouts: dict[str, dict[str, np.ndarray]], args: argparse.Namespace,
         model: nn.Module, params) -> dict[str, dict]:
    """Steps of the layouts interleaved (A, B, A, B, ...), so that a busy host slows both
    alike."""
    tx = optax.adamw(1e-3)
    step = _train_step(model, tx)
    state = {name: (jax.tree.map(jnp.copy, params), tx.init(params)) for name in layouts}
    times = {name: [] for name in layouts}
    real = {name: [] for name in layouts}
    for i in range(args.steps + 1):
        for name, rows in layouts.items():
            at = (i * args.batch) % (len(rows['inputs']) - args.batch + 1)
            batch = {k: v[at:at + args.batch] for k, v in rows.items()}
            t0 = time.perf_counter()
            *state[name], loss = step(*state[name], batch)
            loss.block_until_ready()
            if i:  # the first step compiles
                times[name].append(time.perf_counter() - t0)
                real[name].append(float((batch['segment_ids'] > 0).sum()))
    out = {}
    for name, rows in layouts.items():
        rates = [n / t for n, t in zip(real[name], times[name], strict=True)]
        out[name] = {'rows': len(rows['inputs']),
                     'fill': float((rows['segment_ids'] > 0).mean()),
                     'step_s': statistics.median(times[name]),
                     'tokens_per_s': statistics.median(rates)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--mixture', default='gsm8k:1,fastchat:1,self_instruct:1,alpaca_eval:1')
    ap.add_argument('--data_dir', default='')
    ap.add_argument('--conversations', type=int, default=2000)
    ap.add_argument('--seq_len', type=int, default=1024)
    ap.add_argument('--batch', type=int, default=4)
    ap.add_argument('--steps', type=int, default=10)
    ap.add_argument('--json', default=None)
    args = ap.parse_args()

    packer, examples = _examples(args)
    layouts = {'packed (BFD)': packing.pack(examples, args.seq_len),
               'padded (1 per row)': {k: np.concatenate([packing.pack([e], args.seq_len)[k]
                                                         for e in examples])
                                      for k in packing.FIELDS}}
    cfg = ModelConfig(vocab_size=264, num_layers=4, d_model=128, num_heads=4, num_kv_heads=2,
                      head_dim=32, mlp_dim=384, max_seq_len=args.seq_len, dtype='float32')
    model = Transformer(cfg)
    init = jax.jit(model.init)
    params = nn.unbox(init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params'])
    lengths = [len(t) - 1 for t, _ in examples]
    print(f'# {len(examples)} conversations of {args.mixture} (byte ChatML), lengths '
          f'{min(lengths)}-{max(lengths)} (median {int(np.median(lengths))}), seq_len '
          f'{args.seq_len}, batch {args.batch}, {jax.devices()[0].device_kind} '
          f'x{len(jax.devices())}, median of {args.steps} steps')
    print('| layout | rows | fill | step s | real tokens/s |\n|---|---:|---:|---:|---:|')
    out = _run(layouts, args, model, params)
    for name, r in out.items():
        print(f"| {name} | {r['rows']} | {r['fill']:.3f} | {r['step_s']:.3f} | "
              f"{r['tokens_per_s']:,.0f} |")
    ratio = out['packed (BFD)']['tokens_per_s'] / out['padded (1 per row)']['tokens_per_s']
    print(f'ratio packed / padded real tokens/s: {ratio:.2f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({**out, 'ratio': ratio, 'args': vars(args)}, f, indent=2)


if __name__ == '__main__':
    main()
