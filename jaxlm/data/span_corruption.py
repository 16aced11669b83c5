"""T5 span corruption in NumPy (no TensorFlow, no grain): the data side of the span-corruption
objective (jaxlm/objectives/span_corruption.py), which also the seqio tasks
(jaxlm/data/seqio_tasks.py) run.

Same semantics as T5's `span_corruption` preprocessor (t5.data.preprocessors): the train
documents are concatenated and split into raw chunks of `random_spans_helper(inputs_len)`
tokens; in each chunk `noise_density` of the tokens, in spans of mean length
`mean_noise_span_length`, are noise (`random_spans_noise_mask`); the encoder reads the chunk with
each noise span replaced by one sentinel, the decoder predicts the sentinels each followed by its
span; both end in EOS. Sentinels count down from the top of the vocabulary: the first span of an
example gets `vocab_size - 1`, the next `vocab_size - 2`, ..., where vocab_size is the tokenizer's
plus `data.extra_ids`, exactly seqio's `SentencePieceVocabulary(extra_ids=...)` numbering.

Noise is drawn per example from grain's per-index generator (jaxlm/data/pipeline.py), so batches
are deterministic and resume exactly like the LM pipeline's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxlm.errors import ConfigError


def random_spans_helper(inputs_length: int, noise_density: float,
                        mean_noise_span_length: float) -> tuple[int, int]:
    """(raw tokens per chunk, targets length) so that the corrupted inputs, with one sentinel
    per span and EOS, fill `inputs_length` (T5's helper with one extra token per span)."""
    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise = int(round(tokens_length * noise_density))
        num_spans = int(round(num_noise / mean_noise_span_length))
        return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    return tokens_length, lengths(tokens_length)[1]


def _random_segmentation(num_items: int, num_segments: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Lengths of a uniformly random split of `num_items` into `num_segments` non-empty parts."""
    first_in_segment = np.zeros(num_items, np.int64)
    first_in_segment[1:] = rng.permutation(np.arange(num_items - 1) < num_segments - 1)
    return np.bincount(np.cumsum(first_in_segment), minlength=num_segments)


def random_spans_noise_mask(length: int, noise_density: float, mean_noise_span_length: float,
                            rng: np.random.Generator) -> np.ndarray:
    """Boolean [length]: round(length * density) noise tokens (at least 1, at most length - 1)
    in round(noise / mean span) spans (at least 1), alternating with as many non-noise spans,
    starting with non-noise; span lengths are random."""
    orig_length, length = length, max(length, 2)
    num_noise = min(max(int(np.round(length * noise_density)), 1), length - 1)
    num_spans = max(int(np.round(num_noise / mean_noise_span_length)), 1)
    noise_lengths = _random_segmentation(num_noise, num_spans, rng)
    nonnoise_lengths = _random_segmentation(length - num_noise, num_spans, rng)
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
    span_start = np.zeros(length, np.int64)
    span_start[np.cumsum(interleaved)[:-1]] = 1
    return (np.cumsum(span_start) % 2 == 1)[:orig_length]


def replace_spans_with_sentinels(tokens: np.ndarray, mask: np.ndarray,
                                 vocab_size: int) -> np.ndarray:
    """Each run of masked tokens becomes one sentinel, vocab_size - 1 for the first run,
    vocab_size - 2 for the second, ... (T5's noise_span_to_unique_sentinel)."""
    previous = np.concatenate([[False], mask[:-1]])
    first = mask & ~previous
    sentinels = vocab_size - np.cumsum(first)
    return np.where(first, sentinels, tokens)[~(mask & previous)].astype(np.int32)


def corrupt_spans(tokens: np.ndarray, rng: np.random.Generator, noise_density: float,
                  mean_noise_span_length: float,
                  vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of T5's span corruption of one raw chunk, without EOS."""
    mask = random_spans_noise_mask(len(tokens), noise_density, mean_noise_span_length, rng)
    return (replace_spans_with_sentinels(tokens, mask, vocab_size),
            replace_spans_with_sentinels(tokens, ~mask, vocab_size))


def span_corrupt(tokens: np.ndarray, rng: np.random.Generator, *, noise_density: float,
                 mean_noise_span_length: float, vocab_size: int,
                 eos_id: int) -> dict[str, np.ndarray]:
    """One raw chunk -> {'encoder_inputs', 'inputs' (decoder: targets shifted right, 0 first),
    'targets'}, the encoder and decoder sequences ending in EOS."""
    inputs, targets = corrupt_spans(tokens, rng, noise_density, mean_noise_span_length,
                                    vocab_size)
    eos = np.asarray([eos_id], np.int32)
    encoder_inputs = np.concatenate([inputs, eos])
    targets = np.concatenate([targets, eos])
    return {'encoder_inputs': encoder_inputs,
            'inputs': np.concatenate([[0], targets[:-1]]).astype(np.int32),
            'targets': targets}


class RawChunks:
    """Consecutive `length`-token chunks of one token stream (the last partial one dropped)."""

    def __init__(self, tokens: np.ndarray, length: int):
        self.tokens, self.length = tokens, length

    def __len__(self) -> int:
        return len(self.tokens) // self.length

    def __getitem__(self, index: int) -> np.ndarray:
        return self.tokens[index * self.length:(index + 1) * self.length]


def token_stream(docs: Any) -> np.ndarray:
    """T5's reduce_concat_tokens: `TokenDocuments` (jaxlm/data/documents.py) back to back, without
    their EOS, BOS or separators."""
    return np.concatenate([docs[i][:-1] for i in range(len(docs))]).astype(np.int32)


def check_sentinels(raw_len: int, noise_density: float, mean_noise_span_length: float,
                    extra_ids: int) -> None:
    """Every noise span needs its own sentinel among the `extra_ids` top ids."""
    spans = int(round(round(raw_len * noise_density) / mean_noise_span_length))
    if spans > extra_ids:
        raise ConfigError(f'data.extra_ids ({extra_ids}) is fewer than the {spans} noise spans '
                          f'of a {raw_len}-token chunk: raise it')
