"""A decoder with two heads for PPO: next-token logits (the policy) and a scalar value per
token (the critic), sharing one backbone.

The parameters are the decoder family's plus the `value` kernel [D, 1], so an SFT or
pre-trained decoder checkpoint initialises everything but the value head (the RL loop starts
that fresh). Sampling uses the decoder's cached path with the LM head alone: the value kernel
sits unused in the parameters it is given.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax

from jaxlm.layers.embeddings import Embed
from jaxlm.layers.pipeline import NO_PIPELINE, PipelineSchedule
from jaxlm.models import decoder
from jaxlm.models.config import ModelConfig
from jaxlm.models.family import Batch, Field, ModelFamily
from jaxlm.models.heads import LMHead, ScalarHead

# The parameters a decoder checkpoint lacks: started fresh when initialising from one.
FRESH_HEADS = ('value',)


@dataclasses.dataclass(frozen=True)
class PolicyValueHead:
    """(float32 logits [B, L, vocab], float32 values [B, L]) from the same hidden states."""

    def __call__(self, model: nn.Module, x_BxLxD: jax.Array,
                 embed: Embed) -> tuple[jax.Array, jax.Array]:
        return LMHead()(model, x_BxLxD, embed), ScalarHead('value')(model, x_BxLxD, embed)


class PolicyValueFamily(ModelFamily):
    name = 'policy_value'
    output = 'logits_and_values'
    decodes = True
    fresh_heads = FRESH_HEADS

    def build(self, cfg: ModelConfig, pipeline: PipelineSchedule = NO_PIPELINE
              ) -> decoder.Transformer:
        return decoder.Transformer(cfg, pipeline, head=PolicyValueHead())

    def input_fields(self, data_cfg: Any) -> dict[str, Field]:
        return decoder.FAMILY.input_fields(data_cfg)

    def init_inputs(self, seq_len: int) -> tuple[jax.Array, ...]:
        return decoder.FAMILY.init_inputs(seq_len)

    def apply(self, model: nn.Module, params: Any, batch: Batch, *, deterministic: bool = True,
              rngs: dict[str, jax.Array] | None = None) -> tuple[jax.Array, jax.Array]:
        return decoder.FAMILY.apply(model, params, batch, deterministic=deterministic,
                                    rngs=rngs)

    def count_params(self, cfg: ModelConfig) -> int:
        return decoder.count_params(cfg) + cfg.d_model

    def flops_per_example(self, cfg: ModelConfig, data_cfg: Any) -> float:
        return decoder.FAMILY.flops_per_example(cfg, data_cfg)

    def token_logits(self, outputs: tuple[jax.Array, jax.Array]) -> jax.Array:
        return outputs[0]

    def decoder(self, model: nn.Module) -> decoder.CachedTransformer:
        return decoder.CachedTransformer(model.cfg, head=LMHead())


FAMILY = PolicyValueFamily()
