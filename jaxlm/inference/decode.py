"""Autoregressive generation: prefill + KV-cache decoding, and the full-recompute reference.

`generate(..., use_cache=True)` left-pads the batch of prompts to a bucketed length, prefills
them in one call (each row at its own true positions 0..n-1, padding at position -1, which the
cache mask skips), then decodes one token per step for every row inside a `jax.lax.while_loop`
in the same jit. Prompt and cache lengths are rounded up to powers of two (capped at the model's
max_seq_len), and the step count is a traced value, so prompts of other lengths and other
max_new_tokens reuse the compiled code of their bucket. The loop stops early once every row has
produced an end token (`eos_id` or one of `stop_token_ids`).

`use_cache=False` re-runs the model over the whole buffer for every new token (O(length^2)); it
is kept as the reference the cached path is tested against.

Both model families that decode generate through the same loop: the family's decode module
(`family.decoder(model)`) prefills a cache and then takes one token per step. For the decoder-only
family the prompt is the start of the decoded sequence; for the encoder-decoder (the family's
`decoder_start` is a token id) the prompt is encoded once and the decoder starts from that token.

Pass `mesh` (and `rules`, default the project's) to run on a device mesh: parameters, cache and
activations are then sharded by the same logical axis rules as training (the batch is padded up
to a multiple of the batch-sharding degree).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.errors import UserError
from jaxlm.models import registry
from jaxlm.models.family import ModelFamily

_MIN_BUCKET = 16


def top_p_filter(logits_BxV: jax.Array, top_p: float) -> jax.Array:
    """Nucleus filtering: keeps the smallest set of most likely tokens whose probabilities sum
    to >= top_p (always at least the most likely one); the rest get -inf."""
    if top_p >= 1.0:
        return logits_BxV
    probs_BxV = jax.nn.softmax(logits_BxV.astype(jnp.float32), axis=-1)
    sorted_BxV = -jnp.sort(-probs_BxV, axis=-1)  # descending
    before_BxV = jnp.cumsum(sorted_BxV, axis=-1) - sorted_BxV  # mass strictly before each token
    keep_sorted = before_BxV < top_p
    # The smallest probability still kept; ties with it are kept too.
    threshold_Bx1 = jnp.min(jnp.where(keep_sorted, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(probs_BxV >= threshold_Bx1, logits_BxV, -jnp.inf)


def sample_logits(logits_BxV: jax.Array, key: jax.Array, temperature: float, top_k: int,
                  top_p: float = 1.0) -> jax.Array:
    """Greedy when temperature == 0, else softmax(logits / T) restricted to the top k (k=0: all)
    and then to the nucleus of mass top_p (1.0: all)."""
    if temperature == 0.0:
        return jnp.argmax(logits_BxV, axis=-1)
    logits_BxV = logits_BxV / temperature
    if top_k > 0:
        kth = jax.lax.top_k(logits_BxV, top_k)[0][:, -1:]
        logits_BxV = jnp.where(logits_BxV < kth, -jnp.inf, logits_BxV)
    logits_BxV = top_p_filter(logits_BxV, top_p)
    return jax.random.categorical(key, logits_BxV, axis=-1)


def bucket_length(n: int, cap: int, minimum: int = _MIN_BUCKET) -> int:
    """n rounded up to a power of two (at least `minimum`); capped at `cap` when n <= cap."""
    b = max(minimum, 1 << (max(n, 1) - 1).bit_length())
    return min(b, cap) if n <= cap else b


class SamplingError(UserError, ValueError):
    """Sampling arguments or prompts that `generate` cannot honour."""


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """Raises SamplingError for settings outside their meaning (see `sample_logits`)."""
    if not temperature >= 0:
        raise SamplingError(f'temperature must be >= 0 (0 = greedy), got {temperature}')
    if top_k < 0:
        raise SamplingError(f'top_k must be >= 0 (0 = no top-k filtering), got {top_k}')
    if not 0 < top_p <= 1:
        raise SamplingError(f'top_p must be in (0, 1] (1 = no nucleus filtering; a tiny value '
                            f'keeps only the most likely token), got {top_p}')


def prompt_tokens(family: ModelFamily, tokenizer: Any, text: str) -> list[int]:
    """A text prompt's tokens as the family reads prompts: after BOS for a decoder (as jaxlm
    trains), ending with EOS for an encoder (as T5 reads its inputs)."""
    if family.decoder_start is None:
        return [tokenizer.bos_id] + tokenizer.encode(text)
    return tokenizer.encode(text) + [tokenizer.eos_id]


def _prefix_length(family: ModelFamily, prompt_len: int) -> int:
    """Decoder positions a prompt of `prompt_len` tokens takes before the first new token."""
    return prompt_len if family.decoder_start is None else 1


def _check(model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> np.ndarray:
    family = registry.causal_lm(model.cfg)
    if not prompts or any(len(p) == 0 for p in prompts):
        raise SamplingError('every prompt needs at least one token (e.g. BOS)')
    if max_new_tokens < 1:
        raise SamplingError(f'max_new_tokens must be >= 1, got {max_new_tokens}')
    lengths = np.array([len(p) for p in prompts], np.int32)
    longest = int(lengths.max())
    total = max(_prefix_length(family, longest) + max_new_tokens, longest)
    max_len = model.cfg.max_seq_len
    if total > max_len:
        beyond = (f'prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) = '
                  f'{total} positions, beyond the trained context (model.max_seq_len '
                  f'{max_len})')
        if model.cfg.positions == 'learned':
            raise SamplingError(f'{beyond}: learned position embeddings have no entry there; '
                                'shorten the prompt or lower max_new_tokens')
        logging.warning('%s: %s positions were never trained, expect degraded text', beyond,
                        model.cfg.positions)
    return lengths


def _stop_array(eos_id: int | None, stop_token_ids: Sequence[int] | None) -> np.ndarray:
    ids = ([] if eos_id is None else [eos_id]) + list(stop_token_ids or [])
    return np.array(ids or [-1], np.int32)  # -1 never matches a token


def _cut(tokens: Sequence[int], stop_ids: np.ndarray,
         stop_sequences: Sequence[Sequence[int]] | None) -> list[int]:
    """Tokens up to (not including) the first stop token or stop sequence."""
    tokens = list(tokens)
    end = len(tokens)
    for i, t in enumerate(tokens):
        if t in stop_ids:
            end = i
            break
    for seq in stop_sequences or []:
        n = len(seq)
        for i in range(0, end - n + 1):
            if tokens[i:i + n] == list(seq):
                end = i
                break
    return tokens[:end]


# ---------------------------------------------------------------------------------- KV cache


def sampled_logprobs(logits_BxV: jax.Array, tokens_B: jax.Array,
                     temperature: float) -> jax.Array:
    """Float32 log-probabilities of `tokens_B` under softmax(logits / temperature) (temperature
    1 when greedy), before any top-k / top-p truncation: the distribution a policy-gradient
    objective differentiates (jaxlm/objectives/grpo.py computes the same from a training
    forward)."""
    scaled_BxV = logits_BxV.astype(jnp.float32) / (temperature or 1.0)
    logp_BxV = jax.nn.log_softmax(scaled_BxV, axis=-1)
    return jnp.take_along_axis(logp_BxV, tokens_B[:, None], axis=-1)[:, 0]


@functools.lru_cache(maxsize=64)
def _cached_decoder(model: nn.Module, temperature: float, top_k: int, top_p: float,
                    with_logits: bool, cache_len: int, mesh: Any, rules: Any) -> Any:
    """One jitted prefill + while_loop decode per (model, sampling settings, cache bucket, mesh
    and rules: the logical constraints are baked in when tracing); jit specialises it further
    per (batch, prompt bucket) shape. Returns the tokens, their logits (`with_logits`) and
    their log-probabilities (`sampled_logprobs`)."""
    del mesh, rules  # only part of the cache key
    cfg = model.cfg
    family = registry.causal_lm(cfg)
    decoder = family.decoder(model)

    @jax.jit
    def run(params: Any, tokens_BxP: jax.Array, lengths_B: jax.Array, key: jax.Array,
            max_new: jax.Array, stop_ids: jax.Array):
        b, p = tokens_BxP.shape
        # static size of the output buffer (>= max_new)
        steps = cache_len - _prefix_length(family, p) + 1
        # Left padding: row i's prompt fills slots p - n_i .. p - 1 at positions 0 .. n_i - 1.
        positions_BxP = jnp.arange(p)[None] - (p - lengths_B)[:, None]
        positions_BxP = jnp.where(positions_BxP >= 0, positions_BxP, -1)
        logits_BxV, cache, next_B = decoder.apply({'params': params}, tokens_BxP, positions_BxP,
                                                  cache_len, method=decoder.prefill)
        tok_B = sample_logits(logits_BxV, jax.random.fold_in(key, 0), temperature, top_k,
                              top_p).astype(jnp.int32)
        out_BxN = jnp.zeros((b, steps), jnp.int32).at[:, 0].set(tok_B)
        logps_BxN = jnp.zeros((b, steps), jnp.float32).at[:, 0].set(
            sampled_logprobs(logits_BxV, tok_B, temperature))
        logits_BxNxV = (jnp.zeros((b, steps, cfg.vocab_size), jnp.float32)
                        .at[:, 0].set(logits_BxV) if with_logits else None)
        done_B = jnp.isin(tok_B, stop_ids)

        def cond(state):
            i, _, _, done_B, _, _, _ = state
            return (i < max_new) & ~jnp.all(done_B)

        def body(state):
            i, tok_B, cache, done_B, out_BxN, logps_BxN, logits_BxNxV = state
            logits, cache = decoder.apply({'params': params}, tok_B[:, None], cache,
                                          (next_B + i - 1)[:, None])
            logits_BxV = logits[:, -1]
            tok_B = sample_logits(logits_BxV, jax.random.fold_in(key, i), temperature, top_k,
                                  top_p).astype(jnp.int32)
            out_BxN = out_BxN.at[:, i].set(tok_B)
            logps_BxN = logps_BxN.at[:, i].set(sampled_logprobs(logits_BxV, tok_B, temperature))
            if logits_BxNxV is not None:
                logits_BxNxV = logits_BxNxV.at[:, i].set(logits_BxV)
            return (i + 1, tok_B, cache, done_B | jnp.isin(tok_B, stop_ids), out_BxN, logps_BxN,
                    logits_BxNxV)

        state = (jnp.ones((), jnp.int32), tok_B, cache, done_B, out_BxN, logps_BxN,
                 logits_BxNxV)
        _, _, _, _, out_BxN, logps_BxN, logits_BxNxV = jax.lax.while_loop(cond, body, state)
        return out_BxN, logps_BxN, logits_BxNxV

    return run


def _mesh_context(mesh: Any, rules: Any) -> contextlib.AbstractContextManager:
    if mesh is None:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(mesh))
    stack.enter_context(nn.logical_axis_rules(rules))
    return stack


def _batch_multiple(mesh: Any, rules: Any) -> int:
    """How many shards the 'batch' logical axis is split into on `mesh`."""
    if mesh is None:
        return 1
    spec = nn.logical_to_mesh_axes(('batch',), rules)[0]
    axes = () if spec is None else (spec,) if isinstance(spec, str) else tuple(spec)
    return int(np.prod([mesh.shape[a] for a in axes])) if axes else 1


def _run_cached(model, params, prompts, max_new_tokens, temperature, top_k, top_p, seed,
                stop_ids, with_logits, mesh, rules):
    lengths = _check(model, prompts, max_new_tokens)
    family = registry.causal_lm(model.cfg)
    cap = model.cfg.max_seq_len
    max_prompt = int(lengths.max())
    prompt_len = bucket_length(max_prompt, cap)
    # The last token is sampled, never fed back.
    slots = _prefix_length(family, max_prompt) + max_new_tokens - 1
    if _prefix_length(family, prompt_len) + max_new_tokens - 1 > cap >= slots:
        prompt_len = cap - max_new_tokens + 1  # keep the cache within max_seq_len
    cache_len = bucket_length(_prefix_length(family, prompt_len) + max_new_tokens - 1, cap)
    n = len(prompts)
    if mesh is not None:
        if rules is None:
            from jaxlm.config import DEFAULT_LOGICAL_AXIS_RULES
            rules = DEFAULT_LOGICAL_AXIS_RULES
        rules = tuple((name, tuple(a) if isinstance(a, list) else a) for name, a in rules)
    else:
        rules = None
    with _mesh_context(mesh, rules):
        mult = _batch_multiple(mesh, rules)
        rows = -(-n // mult) * mult  # padding rows: a 1-token prompt, output dropped
        buf = np.zeros((rows, prompt_len), np.int32)
        row_lengths = np.ones((rows,), np.int32)
        for i, p in enumerate(prompts):
            buf[i, prompt_len - len(p):] = p
            row_lengths[i] = len(p)
        run = _cached_decoder(model, float(temperature), int(top_k), float(top_p), with_logits,
                              cache_len, mesh, rules)
        out, logps, logits = run(params, jnp.asarray(buf), jnp.asarray(row_lengths),
                                 jax.random.PRNGKey(seed),
                                 jnp.asarray(max_new_tokens, jnp.int32), jnp.asarray(stop_ids))
        out = np.asarray(out)[:n, :max_new_tokens]
        logps = np.asarray(logps)[:n, :max_new_tokens]
        logits = None if logits is None else np.asarray(logits)[:n, :max_new_tokens]
    return out, logps, logits


# ------------------------------------------------------------------------- full recompute


@functools.lru_cache(maxsize=64)
def _full_decoder(model: nn.Module, temperature: float, top_k: int, top_p: float,
                  with_logits: bool, max_new_tokens: int) -> Any:
    vocab = model.cfg.vocab_size
    family = registry.causal_lm(model.cfg)

    @jax.jit
    def run(params: Any, buf: jax.Array, lengths: jax.Array, key: jax.Array,
            encoder: dict[str, jax.Array] | None):
        rows = jnp.arange(buf.shape[0])
        layout = {'segment_ids': jnp.ones_like(buf),
                  'positions': jnp.broadcast_to(jnp.arange(buf.shape[1])[None], buf.shape)}

        def body(t, state):
            buf, logits_buf = state
            logits = family.apply(model, params, {'inputs': buf, **layout, **(encoder or {})})
            logits = logits[:, t - 1]
            nxt = sample_logits(logits, jax.random.fold_in(key, t), temperature, top_k, top_p)
            keep_prompt = t < lengths
            buf = buf.at[:, t].set(jnp.where(keep_prompt, buf[:, t], nxt.astype(buf.dtype)))
            if logits_buf is not None:  # logits of new token t - length (if it is one)
                step = t - lengths
                ok = (step >= 0) & (step < max_new_tokens)
                step = jnp.clip(step, 0, max_new_tokens - 1)
                logits_buf = logits_buf.at[rows, step].set(
                    jnp.where(ok[:, None], logits, logits_buf[rows, step]))
            return buf, logits_buf

        logits_buf = (jnp.zeros((buf.shape[0], max_new_tokens, vocab), jnp.float32)
                      if with_logits else None)
        return jax.lax.fori_loop(jnp.min(lengths), buf.shape[1], body, (buf, logits_buf))

    return run


def _right_padded(prompts: Sequence[Sequence[int]], length: int) -> np.ndarray:
    buf = np.zeros((len(prompts), length), np.int32)
    for i, p in enumerate(prompts):
        buf[i, :len(p)] = p
    return buf


def _encoder_fields(prompts: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """The right-padded prompts as the encoder-decoder family's encoder batch fields."""
    lengths = np.array([len(p) for p in prompts])
    positions = np.broadcast_to(np.arange(lengths.max())[None], (len(prompts), lengths.max()))
    return {'encoder_inputs': _right_padded(prompts, int(lengths.max())),
            'encoder_segment_ids': (positions < lengths[:, None]).astype(np.int32),
            'encoder_positions': positions.astype(np.int32)}


def _run_full(model, params, prompts, max_new_tokens, temperature, top_k, top_p, seed,
              with_logits):
    _check(model, prompts, max_new_tokens)
    family = registry.causal_lm(model.cfg)
    encoder = None
    if family.decoder_start is not None:  # the prompts go to the encoder
        encoder = _encoder_fields(prompts)
        prompts = [[family.decoder_start]] * len(prompts)
    lengths = np.array([len(p) for p in prompts], np.int32)
    buf = _right_padded(prompts, int(lengths.max()) + max_new_tokens)
    run = _full_decoder(model, float(temperature), int(top_k), float(top_p), with_logits,
                        max_new_tokens)
    out, logits = run(params, jnp.asarray(buf), jnp.asarray(lengths), jax.random.PRNGKey(seed),
                      encoder)
    out = np.asarray(out)
    out = np.stack([out[i, n:n + max_new_tokens] for i, n in enumerate(lengths)])
    return out, None if logits is None else np.asarray(logits)


# -------------------------------------------------------------------------------- public API


def generate_with_logits(model: nn.Module, params: Any, prompts: Sequence[Sequence[int]], *,
                         max_new_tokens: int, temperature: float = 0.0, top_k: int = 0,
                         top_p: float = 1.0, seed: int = 0, use_cache: bool = True,
                         mesh: Any = None, rules: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Exactly `max_new_tokens` new tokens per prompt (no stopping) and the float32 logits each
    was sampled from: arrays [batch, max_new_tokens] and [batch, max_new_tokens, vocab]."""
    check_sampling(temperature, top_k, top_p)
    if use_cache:
        out, _, logits = _run_cached(model, params, prompts, max_new_tokens, temperature, top_k,
                                     top_p, seed, _stop_array(None, None), True, mesh, rules)
        return out, logits
    return _run_full(model, params, prompts, max_new_tokens, temperature, top_k, top_p, seed,
                     True)


def generate(model: nn.Module, params: Any, prompts: Sequence[Sequence[int]], *,
             max_new_tokens: int, temperature: float = 0.0, top_k: int = 0, seed: int = 0,
             eos_id: int | None = None, top_p: float = 1.0,
             stop_token_ids: Sequence[int] | None = None,
             stop_sequences: Sequence[Sequence[int]] | None = None, use_cache: bool = True,
             mesh: Any = None, rules: Any = None) -> list[list[int]]:
    """Continues each prompt (prompts may differ in length); returns only the new tokens, cut
    before the first `eos_id`, any of `stop_token_ids`, or the first occurrence of any token
    sequence in `stop_sequences` (text-level stop strings are the caller's job).

    temperature 0 is greedy; otherwise top_k (0: off) then top_p (1.0: off) filter the
    distribution. A given seed gives the same tokens every time. use_cache=False is the slow
    full-recompute reference path. Settings outside these meanings raise SamplingError; a
    prompt running past the trained context raises it too with learned positions, and warns
    with relative ones (RoPE, ALiBi, ...)."""
    check_sampling(temperature, top_k, top_p)
    stop_ids = _stop_array(eos_id, stop_token_ids)
    if use_cache:
        out, _, _ = _run_cached(model, params, prompts, max_new_tokens, temperature, top_k,
                                top_p, seed, stop_ids, False, mesh, rules)
    else:
        out, _ = _run_full(model, params, prompts, max_new_tokens, temperature, top_k, top_p,
                           seed, False)
    real_stops = stop_ids[stop_ids >= 0]
    return [_cut(row.tolist(), real_stops, stop_sequences) for row in out]


def generate_with_logprobs(model: nn.Module, params: Any, prompts: Sequence[Sequence[int]], *,
                           max_new_tokens: int, temperature: float = 1.0, seed: int = 0,
                           eos_id: int | None = None,
                           stop_token_ids: Sequence[int] | None = None, mesh: Any = None,
                           rules: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rollouts for reinforcement learning, through the KV cache: the new tokens [batch,
    max_new_tokens], the log-probability of each under softmax(logits / temperature) (see
    `sampled_logprobs`; no top-k / top-p, so the sampled distribution is the one trained), and
    each row's completion length [batch], which counts its first stop token. Entries past a
    row's length are meaningless."""
    check_sampling(temperature, 0, 1.0)
    stop_ids = _stop_array(eos_id, stop_token_ids)
    out, logps, _ = _run_cached(model, params, prompts, max_new_tokens, temperature, 0, 1.0,
                                seed, stop_ids, False, mesh, rules)
    stopped_BxN = np.isin(out, stop_ids[stop_ids >= 0])
    first_B = np.where(stopped_BxN.any(axis=1), stopped_BxN.argmax(axis=1) + 1, max_new_tokens)
    return out, logps, first_B.astype(np.int32)
