"""T5 span corruption in NumPy (no TensorFlow) and the grain pipeline of encoder-decoder batches.

Same semantics as T5's `span_corruption` preprocessor (t5.data.preprocessors): the train
documents are concatenated and split into raw chunks of `random_spans_helper(inputs_len)`
tokens; in each chunk `noise_density` of the tokens, in spans of mean length
`mean_noise_span_length`, are noise (`random_spans_noise_mask`); the encoder reads the chunk with
each noise span replaced by one sentinel, the decoder predicts the sentinels each followed by its
span; both end in EOS. Sentinels count down from the top of the vocabulary: the first span of an
example gets `vocab_size - 1`, the next `vocab_size - 2`, ..., where vocab_size is the tokenizer's
plus `data.extra_ids`, exactly seqio's `SentencePieceVocabulary(extra_ids=...)` numbering.

Noise is drawn per example from grain's per-index generator, so batches are deterministic and
resume exactly like the LM pipeline's.
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np

from jaxlm.data import grain_pipeline
from jaxlm.data.grain_pipeline import DataPipeline


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


class _RawChunks:
    """Consecutive `length`-token chunks of one token stream (the last partial one dropped)."""

    def __init__(self, tokens: np.ndarray, length: int):
        self.tokens, self.length = tokens, length

    def __len__(self) -> int:
        return len(self.tokens) // self.length

    def __getitem__(self, index: int) -> np.ndarray:
        return self.tokens[index * self.length:(index + 1) * self.length]


def _token_stream(docs: list[str], tokenizer: Any) -> np.ndarray:
    """T5's reduce_concat_tokens: documents back to back, without BOS or separators."""
    return np.concatenate([np.asarray(tokenizer.encode(d), np.int32) for d in docs])


def _to_encoder_decoder_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = grain_pipeline.to_model_batch(batch)
    out.update(encoder_inputs=batch['encoder_inputs'].astype(np.int32),
               encoder_segment_ids=batch['encoder_inputs_segment_ids'].astype(np.int32),
               encoder_positions=batch['encoder_inputs_positions'].astype(np.int32))
    return out


def check_sentinels(raw_len: int, noise_density: float, mean_noise_span_length: float,
                    extra_ids: int) -> None:
    """Every noise span needs its own sentinel among the `extra_ids` top ids."""
    spans = int(round(round(raw_len * noise_density) / mean_noise_span_length))
    if spans > extra_ids:
        raise ValueError(f'data.extra_ids ({extra_ids}) is fewer than the {spans} noise spans '
                         f'of a {raw_len}-token chunk: raise it')


def build_span_corruption_pipeline(data_cfg: Any, *, seed: int, process_index: int = 0,
                                   process_count: int = 1) -> DataPipeline:
    """Packed encoder-decoder batches: encoder fields [batch, inputs_len], decoder fields
    [batch, seq_len], several corrupted chunks per row (first-fit packing)."""
    batch = grain_pipeline.local_batch_size(data_cfg, process_index, process_count)
    raw_len, targets_len = random_spans_helper(data_cfg.inputs_len, data_cfg.noise_density,
                                               data_cfg.mean_noise_span_length)
    if targets_len > data_cfg.seq_len:
        raise ValueError(
            f'data.seq_len ({data_cfg.seq_len}) is shorter than the span-corruption targets '
            f'({targets_len} tokens for data.inputs_len = {data_cfg.inputs_len}); raise it')
    train_docs, eval_docs, stats = grain_pipeline.load_documents(data_cfg)
    tokenizer = grain_pipeline.make_tokenizer(data_cfg, lambda: train_docs)
    train_src = _RawChunks(_token_stream(train_docs, tokenizer), raw_len)
    eval_src = _RawChunks(_token_stream(eval_docs, tokenizer), raw_len)
    stats.update(raw_chunk_tokens=raw_len, targets_tokens=targets_len,
                 train_chunks=len(train_src), eval_chunks=len(eval_src))
    if len(train_src) < process_count or not len(eval_src):
        raise ValueError(f'too few {raw_len}-token chunks for {process_count} process(es): '
                         f'{stats}')
    vocab_size = tokenizer.vocab_size + data_cfg.extra_ids
    check_sentinels(raw_len, data_cfg.noise_density, data_cfg.mean_noise_span_length,
                    data_cfg.extra_ids)

    def corrupt(tokens: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return span_corrupt(tokens, rng, noise_density=data_cfg.noise_density,
                            mean_noise_span_length=data_cfg.mean_noise_span_length,
                            vocab_size=vocab_size, eos_id=tokenizer.eos_id)

    lengths = {'encoder_inputs': data_cfg.inputs_len, 'inputs': data_cfg.seq_len,
               'targets': data_cfg.seq_len}
    shuffle_seed = grain_pipeline.shard_seed(seed, process_index)
    train = grain_pipeline.shuffled_shard(train_src, shuffle_seed, process_index, process_count)
    train = train.random_map(corrupt, seed=shuffle_seed).to_iter_dataset()
    train = grain_pipeline.pack_and_batch(train, lengths, batch, seed=shuffle_seed,
                                          shuffle_bins=True,
                                          to_model_batch=_to_encoder_decoder_batch)
    train = grain_pipeline.with_workers(train, data_cfg.num_workers)

    eval_ds = grain.MapDataset.source(eval_src).repeat(None).random_map(corrupt, seed=0)
    eval_iter = iter(grain_pipeline.pack_and_batch(
        eval_ds.to_iter_dataset(), lengths, data_cfg.global_batch_size, seed=0,
        shuffle_bins=False, to_model_batch=_to_encoder_decoder_batch))
    eval_batches = grain_pipeline.process_rows(eval_iter, data_cfg.num_eval_batches,
                                               process_index, process_count)
    return DataPipeline(tokenizer, iter(train), eval_batches, stats)
