"""Next-token language modelling: cross-entropy on the targets where `loss_mask` is set, with
optional z-loss (PaLM), over packed sequences.

Its data side: every document, read as `[bos] + tokens + [eos]`, cut into chunks of at most
seq_len + 1 tokens (jaxlm/data/chunking.py), packed first-fit into rows of seq_len."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.data.chunking import ChunkSource
from jaxlm.models.family import Field
from jaxlm.objectives.base import Batch, DataTransform, LossSums, Objective

DECODER_INPUTS = ('inputs', 'segment_ids', 'positions')


def cross_entropy_sums(logits_BxLxV: jax.Array, targets_BxL: jax.Array, weights_BxL: jax.Array,
                       z_loss_weight: float = 0.0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns (sum of token losses incl. z-loss, sum of z-loss terms, sum of weights)."""
    logits = logits_BxLxV.astype(jnp.float32)
    lse_BxL = jax.nn.logsumexp(logits, axis=-1)
    target_logit_BxL = jnp.take_along_axis(logits, targets_BxL[..., None], axis=-1)[..., 0]
    z_BxL = z_loss_weight * jnp.square(lse_BxL)
    loss_BxL = (lse_BxL - target_logit_BxL + z_BxL) * weights_BxL
    return loss_BxL.sum(), (z_BxL * weights_BxL).sum(), weights_BxL.sum()


def token_targets(data_cfg: Any) -> dict[str, Field]:
    """Next tokens [seq_len] and the float mask of the positions that are trained."""
    return {'targets': Field((data_cfg.seq_len,)),
            'loss_mask': Field((data_cfg.seq_len,), np.float32)}


def packed_to_batch(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """grain's packing outputs of {'inputs', 'targets'} examples -> the batch fields."""
    segment_ids = packed['inputs_segment_ids']
    # inputs and targets of a chunk have equal length, so packing must place them
    # identically; a mismatch would silently train on misaligned targets.
    if not (np.array_equal(segment_ids, packed['targets_segment_ids'])
            and np.array_equal(packed['inputs_positions'], packed['targets_positions'])):
        raise RuntimeError('packed inputs and targets have different segment layouts')
    return {
        'inputs': packed['inputs'].astype(np.int32),
        'targets': packed['targets'].astype(np.int32),
        'segment_ids': segment_ids.astype(np.int32),
        'positions': packed['inputs_positions'].astype(np.int32),
        'loss_mask': (segment_ids != 0).astype(np.float32),
    }


def chunk_examples(docs: Any, bos_id: int, seq_len: int) -> tuple[ChunkSource, dict]:
    """A split's chunks and its token count (BOS and EOS included)."""
    return ChunkSource(docs, bos_id, seq_len), {'tokens': int(docs.lengths.sum() + len(docs))}


@dataclasses.dataclass(frozen=True)
class LanguageModeling(Objective):
    z_loss_weight: float = 0.0
    name: str = 'lm'

    @classmethod
    def from_config(cls, cfg: Any) -> LanguageModeling:
        return cls(z_loss_weight=cfg.optimizer.z_loss_weight)

    def model_inputs(self) -> tuple[str, ...]:
        return DECODER_INPUTS

    def target_fields(self, data_cfg: Any) -> dict[str, Field]:
        return token_targets(data_cfg)

    def data_transform(self, data_cfg: Any, tokenizer: Any) -> DataTransform:
        seq_len = data_cfg.seq_len
        return DataTransform(
            examples=functools.partial(chunk_examples, bos_id=tokenizer.bos_id, seq_len=seq_len),
            lengths={'inputs': seq_len, 'targets': seq_len}, to_batch=packed_to_batch)

    def loss(self, outputs: jax.Array, batch: Batch, reference: Any = None) -> LossSums:
        del reference
        loss, z_loss, weight = cross_entropy_sums(outputs, batch['targets'], batch['loss_mask'],
                                                  self.z_loss_weight)
        return LossSums(loss, weight, {'z_loss': z_loss})
