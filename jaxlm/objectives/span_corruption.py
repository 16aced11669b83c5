"""T5's span corruption (Raffel et al. 2020): noised spans of the text become sentinels in the
encoder's input, and the decoder predicts the sentinels and the spans they replaced. The loss is
the decoder's next-token cross-entropy, as for language modelling.

Its data side: the documents back to back in raw chunks, each corrupted by T5's noise in NumPy
(jaxlm/data/span_corruption.py, shared with the seqio tasks), packed first-fit into rows of
`data.inputs_len` encoder and `data.seq_len` decoder tokens."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from jaxlm.data import span_corruption as t5_noise
from jaxlm.errors import ConfigError
from jaxlm.objectives.base import DataTransform
from jaxlm.objectives.lm import DECODER_INPUTS, LanguageModeling, packed_to_batch

ENCODER_INPUTS = ('encoder_inputs', 'encoder_segment_ids', 'encoder_positions')


def packed_to_encoder_decoder_batch(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """grain's packing outputs of corrupted examples -> decoder and encoder batch fields."""
    out = packed_to_batch(packed)
    out.update(encoder_inputs=packed['encoder_inputs'].astype(np.int32),
               encoder_segment_ids=packed['encoder_inputs_segment_ids'].astype(np.int32),
               encoder_positions=packed['encoder_inputs_positions'].astype(np.int32))
    return out


def raw_chunk_examples(docs: Any, raw_len: int) -> tuple[t5_noise.RawChunks, dict]:
    return t5_noise.RawChunks(t5_noise.token_stream(docs), raw_len), {}


@dataclasses.dataclass(frozen=True)
class SpanCorruption(LanguageModeling):
    name: str = 'span_corruption'

    def model_inputs(self) -> tuple[str, ...]:
        return DECODER_INPUTS + ENCODER_INPUTS

    def validate(self, data_cfg: Any) -> None:
        self._lengths(data_cfg)

    def _lengths(self, data_cfg: Any) -> tuple[int, int]:
        """(raw tokens per chunk, targets tokens), checked against the config."""
        density, mean_span = data_cfg.noise_density, data_cfg.mean_noise_span_length
        raw_len, targets_len = t5_noise.random_spans_helper(data_cfg.inputs_len, density,
                                                            mean_span)
        if targets_len > data_cfg.seq_len:
            raise ConfigError(
                f'data.seq_len ({data_cfg.seq_len}) is shorter than the span-corruption targets '
                f'({targets_len} tokens for data.inputs_len = {data_cfg.inputs_len}); raise it')
        t5_noise.check_sentinels(raw_len, density, mean_span, data_cfg.extra_ids)
        return raw_len, targets_len

    def data_transform(self, data_cfg: Any, tokenizer: Any) -> DataTransform:
        density, mean_span = data_cfg.noise_density, data_cfg.mean_noise_span_length
        raw_len, targets_len = self._lengths(data_cfg)
        noise = functools.partial(t5_noise.span_corrupt, noise_density=density,
                                  mean_noise_span_length=mean_span,
                                  vocab_size=tokenizer.vocab_size + data_cfg.extra_ids,
                                  eos_id=tokenizer.eos_id)
        lengths = {'encoder_inputs': data_cfg.inputs_len, 'inputs': data_cfg.seq_len,
                   'targets': data_cfg.seq_len}
        return DataTransform(
            examples=functools.partial(raw_chunk_examples, raw_len=raw_len), lengths=lengths,
            to_batch=packed_to_encoder_decoder_batch, noise=noise,
            stats={'raw_chunk_tokens': raw_len, 'targets_tokens': targets_len})
