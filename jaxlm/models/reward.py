"""A reward model: the decoder backbone with a scalar head, one score per token.

`ScalarHead('score')` (a [D, 1] `score` kernel) replaces the LM head; the objective reads the
score at each sequence's last token (jaxlm/objectives/reward.py), as Hugging Face's
`*ForSequenceClassification` with `num_labels=1` reads it at the last non-padding token. The
other parameters are the decoder's, so a pre-trained or SFT decoder's backbone fits as it is,
and the model exports to `LlamaForSequenceClassification` / `GPT2ForSequenceClassification`
(`score.weight` [1, D]).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax

from jaxlm.layers.pipeline import NO_PIPELINE, PipelineSchedule
from jaxlm.models import decoder
from jaxlm.models import hf_specs as hfs
from jaxlm.models.config import ModelConfig
from jaxlm.models.family import Batch, Field, ModelFamily
from jaxlm.models.heads import ScalarHead

_SEQUENCE_CLASSIFIERS = {'gpt2': 'GPT2ForSequenceClassification',
                         'llama': 'LlamaForSequenceClassification',
                         'mistral': 'MistralForSequenceClassification'}


def _without_lm_head(m: dict[str, Any]) -> dict[str, Any]:
    return {**m, 'tie_embeddings': True}


class RewardModelFamily(ModelFamily):
    name = 'reward_model'
    output = 'token_scalars'  # [B, L] float32
    fresh_heads = ('score',)  # an SFT decoder checkpoint initialises the backbone

    def build(self, cfg: ModelConfig, pipeline: PipelineSchedule = NO_PIPELINE
              ) -> decoder.Transformer:
        return decoder.Transformer(cfg, pipeline, head=ScalarHead('score'))

    def input_fields(self, data_cfg: Any) -> dict[str, Field]:
        return decoder.FAMILY.input_fields(data_cfg)

    def init_inputs(self, seq_len: int) -> tuple[jax.Array, ...]:
        return decoder.FAMILY.init_inputs(seq_len)

    def apply(self, model: nn.Module, params: Any, batch: Batch, *, deterministic: bool = True,
              rngs: dict[str, jax.Array] | None = None) -> jax.Array:
        return decoder.FAMILY.apply(model, params, batch, deterministic=deterministic,
                                    rngs=rngs)

    def count_params(self, cfg: ModelConfig) -> int:
        return decoder.count_params(dataclasses.replace(cfg, tie_embeddings=True)) + cfg.d_model

    def flops_per_example(self, cfg: ModelConfig, data_cfg: Any) -> float:
        return decoder.FAMILY.flops_per_example(dataclasses.replace(cfg, vocab_size=1),
                                                data_cfg)

    def hf_specs(self, m: dict[str, Any]) -> list[hfs.Spec]:
        return [*decoder.FAMILY.hf_specs(_without_lm_head(m)),
                hfs.transposed('score.weight', ('score',), (1, m['d_model']))]

    def hf_config(self, m: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        out = decoder.FAMILY.hf_config(m, base)
        out.update(architectures=[_SEQUENCE_CLASSIFIERS[decoder.FAMILY.hf_kind(m)]],
                   num_labels=1, id2label={'0': 'LABEL_0'}, label2id={'LABEL_0': 0})
        return out


FAMILY = RewardModelFamily()
