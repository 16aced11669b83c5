"""Autoregressive sampling by full recomputation (jitted once per buffer shape).

Each new token re-runs the model over the whole buffer: O(length^2) work, fine for the demo and
for checking a KV-cache decoder against, which is the next step for serving.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def sample_logits(logits_BxV: jax.Array, key: jax.Array, temperature: float,
                  top_k: int) -> jax.Array:
    """Greedy when temperature == 0, else softmax(logits / T) restricted to the top k (k=0: all)."""
    if temperature == 0.0:
        return jnp.argmax(logits_BxV, axis=-1)
    logits_BxV = logits_BxV / temperature
    if top_k > 0:
        kth = jax.lax.top_k(logits_BxV, top_k)[0][:, -1:]
        logits_BxV = jnp.where(logits_BxV < kth, -jnp.inf, logits_BxV)
    return jax.random.categorical(key, logits_BxV, axis=-1)


def generate(model: nn.Module, params: Any, prompts: Sequence[Sequence[int]], *,
             max_new_tokens: int, temperature: float = 0.0, top_k: int = 0, seed: int = 0,
             eos_id: int | None = None) -> list[list[int]]:
    """Continues each prompt (prompts may differ in length); returns only the new tokens, cut at
    the first `eos_id`."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError('every prompt needs at least one token (e.g. BOS)')
    lengths = np.array([len(p) for p in prompts], np.int32)
    total = int(lengths.max()) + max_new_tokens
    max_len = model.cfg.max_seq_len
    if total > max_len and model.cfg.positions == 'learned':
        raise ValueError(f'prompt + max_new_tokens = {total} exceeds model.max_seq_len {max_len}')
    buf = np.zeros((len(prompts), total), np.int32)
    for i, p in enumerate(prompts):
        buf[i, :len(p)] = p

    start = int(lengths.min())

    @jax.jit
    def run(params: Any, buf: jax.Array, lengths: jax.Array, key: jax.Array) -> jax.Array:
        def body(t, buf):
            logits = model.apply({'params': params}, buf)[:, t - 1]
            nxt = sample_logits(logits, jax.random.fold_in(key, t), temperature, top_k)
            keep_prompt = t < lengths
            return buf.at[:, t].set(jnp.where(keep_prompt, buf[:, t], nxt.astype(buf.dtype)))
        return jax.lax.fori_loop(start, total, body, buf)

    out = np.asarray(run(params, jnp.asarray(buf), jnp.asarray(lengths), jax.random.PRNGKey(seed)))
    result = []
    for i, n in enumerate(lengths):
        new = out[i, n:n + max_new_tokens].tolist()
        if eos_id is not None and eos_id in new:
            new = new[:new.index(eos_id)]
        result.append(new)
    return result
