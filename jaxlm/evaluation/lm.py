"""A jaxlm model behind lm-evaluation-harness's three request types.

`loglikelihood`, `loglikelihood_rolling` and `generate_until` follow lm-evaluation-harness 0.4
(`lm_eval/models/huggingface.py`, `lm_eval/utils.py:get_rolling_token_windows`) so that scores
mean the same as the harness's: the same context/continuation split at the token boundary, the
same left truncation, the same rolling windows. Where the harness truncates silently (or refuses
a continuation longer than the context, which is scored here in rolling windows, never in part),
the tasks ask `loglikelihood_truncated` / `generate_until_truncated` and report how many
documents did not fit.

Batches are formed within length buckets and padded to a fixed [batch_size, bucket] shape, so a
request is always computed by the same compiled program on the same shape, whatever else is in
its batch: padding never changes a score.

An encoder-decoder (T5) is scored T5 style: the context, ending with EOS, is the encoder's input,
and the continuation is scored by the decoder from its start token (each tokenized on its own,
the continuation without EOS; the harness's seq2seq models score it with the tokenizer's EOS);
`generate_until` encodes the prompt and decodes from the start token, so the whole context is
left for the new tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.data.tokenizers import Tokenizer
from jaxlm.inference.decode import bucket_length, generate, prompt_tokens
from jaxlm.models import registry

TokenPair = tuple[list[int], list[int]]  # (context tokens, continuation tokens)
DEFAULT_MAX_GEN_TOKS = 256  # the harness's HFLM default when a request sets no max_gen_toks


def rolling_token_windows(tokens: list[int], prefix_token: int, max_seq_len: int,
                          context_len: int = 1) -> Iterator[TokenPair]:
    """lm-evaluation-harness's `get_rolling_token_windows` + `make_disjoint_window`: windows
    that together predict every token exactly once, each with as much left context as fits."""
    if not tokens:
        return
    pred_len = max_seq_len - context_len + 1
    first = min(max_seq_len, len(tokens))
    windows = [([prefix_token] + tokens[:first - 1], tokens[:first])]
    predicted = first
    while predicted < len(tokens):
        window_pred = min(len(tokens) - predicted, pred_len)
        end = predicted + window_pred
        windows.append((tokens[end - max_seq_len - 1:end - 1], tokens[end - window_pred:end]))
        predicted += window_pred
    for inputs, targets in windows:
        yield inputs[:len(inputs) - (len(targets) - 1)], targets


def _padded_length(n: int, max_len: int) -> int:
    """The next power of two from 32, capped at the model's context (n <= max_len)."""
    return bucket_length(n, max_len, minimum=32)


class JaxLM:
    def __init__(self, model: nn.Module, params: Any, tokenizer: Tokenizer, *,
                 batch_size: int = 16, max_length: int | None = None,
                 add_bos: bool = True) -> None:
        """`add_bos`: condition every request on the tokenizer's BOS, as jaxlm trains. False
        scores as lm-evaluation-harness's HFLM does by default (e.g. for converted GPT-2): no
        prefix, except the EOS token before an empty context."""
        # scores are next-token log-likelihoods of the (decoder's) tokens
        self.family = registry.causal_lm(model.cfg)
        self.seq2seq = self.family.decoder_start is not None  # the context goes to an encoder
        self.model, self.params, self.tokenizer = model, params, tokenizer
        self.add_bos = add_bos
        self.batch_size = batch_size
        self.max_length = max_length or model.cfg.max_seq_len
        self._score = jax.jit(self._score_fn)

    @classmethod
    def from_workdir(cls, workdir: str, checkpoint: str | None = None, *,
                     dtype: str | None = None, **kwargs: Any) -> JaxLM:
        """`dtype` overrides the run's compute dtype (e.g. 'float32' for harness parity)."""
        from jaxlm.inference.load import load_run, read_run_config

        registry.causal_lm(read_run_config(workdir).model)  # before reading any checkpoint
        run = load_run(workdir, checkpoint, dtype=dtype)
        lm = cls(run.model, run.params, run.tokenizer, **kwargs)
        lm.step, lm.config = run.step, run.config
        return lm

    # -- scoring -------------------------------------------------------------------------------

    def _score_fn(self, params: Any, batch: dict[str, jax.Array],
                  targets: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = self.family.token_logits(self.family.apply(self.model, params, batch))
        logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        target_lp = jnp.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]
        return target_lp, jnp.argmax(logits, axis=-1) == targets

    def encode_pair(self, context: str, continuation: str) -> TokenPair:
        """Trailing whitespace of the context moves to the continuation, then the continuation's
        tokens are those of encode(context + continuation) after encode(context) (the harness's
        `_encode_pair`), so the boundary is tokenized as in running text."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        if self.seq2seq:
            return self._prompt(context), self.tokenizer.encode(continuation)
        whole = self.tokenizer.encode(context + continuation)
        ctx = self.tokenizer.encode(context)
        return self._prefix(ctx) + ctx, whole[len(ctx):]

    def _prefix(self, context_tokens: list[int]) -> list[int]:
        if self.add_bos:
            return [self.tokenizer.bos_id]
        return [] if context_tokens else [self.tokenizer.eos_id]

    def loglikelihood_tokens(self, pairs: Sequence[TokenPair],
                             progress: Callable[[int], None] | None = None
                             ) -> list[tuple[float, bool]]:
        """Sum of log p(continuation | context) and whether greedy decoding would produce it.

        A context that does not fit is cut on the left, `(context + continuation)[-(max_length
        + 1):]` (the harness's rule). A continuation longer than max_length, which the harness
        refuses, is scored in consecutive pieces of max_length tokens, each with as much left
        context as fits (the harness's rolling windows): every token is predicted once."""
        pieces, owner = [], []
        for i, (ctx, cont) in enumerate(pairs):
            if not cont:
                raise ValueError('empty continuation: nothing to score')
            for start in range(0, len(cont), self.max_length):
                pieces.append((ctx + cont[:start], cont[start:start + self.max_length]))
                owner.append(i)
        totals, greedy = [0.0] * len(pairs), [True] * len(pairs)
        for i, (lp, is_greedy) in zip(owner, self._score_pieces(pieces, progress), strict=True):
            totals[i] += lp
            greedy[i] = greedy[i] and is_greedy
        return list(zip(totals, greedy, strict=True))

    def _row(self, ctx: list[int], cont: list[int]) -> tuple[list[int], list[int], list[int]]:
        """(encoder tokens, decoder inputs, targets) of one piece; the decoder-only model has no
        encoder tokens and reads context and continuation, cut on the left to fit."""
        if self.seq2seq:
            return ctx[-self.max_length:], [self.family.decoder_start] + cont[:-1], cont
        full = (ctx + cont)[-(self.max_length + 1):]
        return [], full[:-1], full[1:]

    def _batch(self, rows: Sequence[tuple[list[int], ...]], lengths: tuple[int, int]
               ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The family's batch fields (one row each, padded to `lengths` = (decoder, encoder)
        tokens) and the targets."""
        fields: dict[str, np.ndarray] = {}
        for prefix, column, length in (('', 1, lengths[0]), ('encoder_', 0, lengths[1])):
            if not length:
                continue
            tokens = np.zeros((self.batch_size, length), np.int32)
            segments = np.zeros_like(tokens)
            for r, row in enumerate(rows):
                tokens[r, :len(row[column])] = row[column]
                segments[r, :len(row[column])] = 1
            fields.update({f'{prefix}inputs': tokens, f'{prefix}segment_ids': segments,
                           f'{prefix}positions': np.broadcast_to(np.arange(length, dtype=np.int32),
                                                                 tokens.shape)})
        targets = np.zeros((self.batch_size, lengths[0]), np.int32)
        for r, row in enumerate(rows):
            targets[r, :len(row[2])] = row[2]
        return fields, targets

    def _score_pieces(self, pieces: Sequence[TokenPair],
                      progress: Callable[[int], None] | None) -> list[tuple[float, bool]]:
        """`loglikelihood_tokens` of continuations of at most max_length tokens."""
        rows = [self._row(ctx, cont) for ctx, cont in pieces]
        results: list[tuple[float, bool] | None] = [None] * len(rows)
        buckets: dict[tuple[int, int], list[int]] = {}
        for i, (enc, inp, _) in enumerate(rows):
            key = (_padded_length(len(inp), self.max_length),
                   _padded_length(len(enc), self.max_length) if enc else 0)
            buckets.setdefault(key, []).append(i)
        for lengths, idx in sorted(buckets.items()):
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start:start + self.batch_size]
                batch, targets = self._batch([rows[i] for i in chunk], lengths)
                lp, greedy = jax.device_get(self._score(self.params, batch, targets))
                for r, i in enumerate(chunk):
                    n, n_cont = len(rows[i][1]), len(pieces[i][1])
                    sl = slice(n - n_cont, n)
                    results[i] = (float(lp[r, sl].astype(np.float64).sum()),
                                  bool(greedy[r, sl].all()))
                if progress:
                    progress(len(chunk))
        return results  # type: ignore[return-value]

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        return self.loglikelihood_tokens([self.encode_pair(c, x) for c, x in requests])

    def loglikelihood_truncated(self, requests: Sequence[tuple[str, str]]) -> list[bool]:
        """Whether a request does not fit the model: `loglikelihood` scores it on a context cut
        on the left (and a continuation longer than max_length in rolling windows)."""
        pairs = (self.encode_pair(c, x) for c, x in requests)
        if self.seq2seq:
            return [max(len(ctx), len(cont)) > self.max_length for ctx, cont in pairs]
        return [len(ctx) + len(cont) > self.max_length + 1 for ctx, cont in pairs]

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        """Total log-likelihood of each text, every token predicted once (perplexity)."""
        windows, owner = [], []
        for i, text in enumerate(texts):
            prefix = self.tokenizer.bos_id if self.add_bos else self.tokenizer.eos_id
            for pair in rolling_token_windows(self.tokenizer.encode(text), prefix,
                                              self.max_length):
                windows.append(pair)
                owner.append(i)
        totals = [0.0] * len(texts)
        for i, (lp, _) in zip(owner, self.loglikelihood_tokens(windows), strict=True):
            totals[i] += lp
        return totals

    # -- generation ----------------------------------------------------------------------------

    def generate_until(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
        """Greedy (or sampled, with `temperature` > 0) continuation of each context, cut at the
        first of `until` (the harness's stop strings), at most `max_gen_toks` tokens."""
        outputs: list[str] = [''] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, (_, kw) in enumerate(requests):
            groups.setdefault((self._max_gen(kw), float(kw.get('temperature', 0.0))), []).append(i)
        for (max_gen, temperature), idx in groups.items():
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start:start + self.batch_size]
                prompts = [self._prompt(requests[i][0])[-self._prompt_room(max_gen):]
                           for i in chunk]
                new = generate(self.model, self.params, prompts, max_new_tokens=max_gen,
                               temperature=temperature, eos_id=self.tokenizer.eos_id)
                for i, toks in zip(chunk, new, strict=True):
                    text = self.tokenizer.decode(toks)
                    for stop in requests[i][1].get('until', []) or []:
                        if stop and stop in text:
                            text = text[:text.index(stop)]
                    outputs[i] = text
        return outputs

    def generate_until_truncated(self, requests: Sequence[tuple[str, dict[str, Any]]]
                                 ) -> list[bool]:
        """Whether `generate_until` cuts each prompt on the left to leave room for the new
        tokens (the harness refuses to run such a request at all)."""
        return [len(self._prompt(ctx)) > self._prompt_room(self._max_gen(kw))
                for ctx, kw in requests]

    def _max_gen(self, kw: dict[str, Any]) -> int:
        # The harness's default of 256 new tokens would fill a small model's whole context:
        # keep at least half of it for the prompt (an encoder-decoder's prompt has its own).
        room = self.max_length if self.seq2seq else self.max_length // 2
        return min(int(kw.get('max_gen_toks', DEFAULT_MAX_GEN_TOKS)), room)

    def _prompt_room(self, max_gen: int) -> int:
        """Prompt tokens kept beside `max_gen` new ones."""
        return self.max_length if self.seq2seq else self.max_length - max_gen

    def _prompt(self, context: str) -> list[int]:
        if self.seq2seq:
            return prompt_tokens(self.family, self.tokenizer, context)
        encoded = self.tokenizer.encode(context)
        return self._prefix(encoded) + encoded
