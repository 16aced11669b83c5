"""A decoder-only backbone with a classification head: sequence classification (e.g. a safety
classifier) from the class logits at each row's last token.

The backbone is the decoder family's `Transformer` with `ClassifierHead` (a [D, num_classes]
`classifier` kernel) in place of the LM head; parameters are otherwise the decoder's, so a
pretrained decoder's backbone loads as it is. Rows are one example each, right-padded with
segment id 0.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.layers.pipeline import NO_PIPELINE, PipelineSchedule
from jaxlm.models import decoder
from jaxlm.models.config import ModelConfig
from jaxlm.models.family import Batch, Field, ModelFamily
from jaxlm.models.heads import ClassifierHead


class DecoderClassifierFamily(ModelFamily):
    name = 'decoder_classifier'
    output = 'class_logits'  # [B, num_classes]

    def build(self, cfg: ModelConfig, pipeline: PipelineSchedule = NO_PIPELINE
              ) -> decoder.Transformer:
        return decoder.Transformer(cfg, pipeline, head=ClassifierHead())

    def input_fields(self, data_cfg: Any) -> dict[str, Field]:
        return decoder.FAMILY.input_fields(data_cfg)

    def init_inputs(self, seq_len: int) -> tuple[jax.Array, ...]:
        return decoder.FAMILY.init_inputs(seq_len)

    def apply(self, model: nn.Module, params: Any, batch: Batch, *, deterministic: bool = True,
              rngs: dict[str, jax.Array] | None = None) -> jax.Array:
        logits_BxLxC = decoder.FAMILY.apply(model, params, batch, deterministic=deterministic,
                                            rngs=rngs)
        last_B = jnp.maximum((batch['segment_ids'] > 0).sum(axis=1) - 1, 0)
        return jnp.take_along_axis(logits_BxLxC, last_B[:, None, None], axis=1)[:, 0]

    def count_params(self, cfg: ModelConfig) -> int:
        without_lm_head = dataclasses.replace(cfg, tie_embeddings=True)
        return decoder.count_params(without_lm_head) + cfg.d_model * cfg.num_classes

    def flops_per_example(self, cfg: ModelConfig, data_cfg: Any) -> float:
        head_as_vocab = dataclasses.replace(cfg, vocab_size=cfg.num_classes)
        return decoder.FAMILY.flops_per_example(head_as_vocab, data_cfg)


FAMILY = DecoderClassifierFamily()
