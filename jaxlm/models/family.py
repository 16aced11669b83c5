"""What a model family is: the interface every entry of the registry (`registry.py`) implements.

A family owns, in its own file, everything that depends on its architecture: building its Linen
module, the batch fields it reads and their shapes, dummy inputs for `init`, applying the module
to a batch, closed-form parameter and FLOP counts, config checks, and its Hugging Face tensor
specs. Nothing outside the registry branches on `model.architecture`.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.layers.pipeline import NO_PIPELINE, PipelineSchedule
from jaxlm.models import hf_specs as hfs
from jaxlm.models.config import ModelConfig

Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Field:
    """One batch field: its shape per example (no batch dim) and dtype."""

    shape: tuple[int, ...]
    dtype: Any = np.int32


class ModelFamily(abc.ABC):
    """One model family. Subclasses are stateless; the registry holds one instance each."""

    name: str = ''
    # What `apply` returns, which the objective must expect: 'vocab_logits' [B, L, vocab] for
    # language models.
    output: str = 'vocab_logits'
    # Whether `jaxlm.inference.decode` can generate with it (it has a cached decode module).
    decodes: bool = False
    # None: a prompt is the start of the decoder's own sequence. A token id: the prompt goes to
    # an encoder, and the decoder starts from this token alone (T5).
    decoder_start: int | None = None
    # Top-level parameters (heads) that a checkpoint of another family lacks, started from the
    # seed's initialisation when `init_params_from` names one (e.g. a decoder for PPO's value
    # head or a reward model's score head).
    fresh_heads: tuple[str, ...] = ()

    @abc.abstractmethod
    def build(self, cfg: ModelConfig, pipeline: PipelineSchedule = NO_PIPELINE
              ) -> nn.Module:
        """The Linen module; its layer stacks are pipelined on `pipeline` when enabled."""

    @abc.abstractmethod
    def input_fields(self, data_cfg: Any) -> dict[str, Field]:
        """The batch fields `apply` reads, for the data config's lengths."""

    @abc.abstractmethod
    def init_inputs(self, seq_len: int) -> tuple[jax.Array, ...]:
        """Positional dummy inputs of `module.init` (no parameter shape depends on them)."""

    @abc.abstractmethod
    def apply(self, model: nn.Module, params: Any, batch: Batch, *, deterministic: bool = True,
              rngs: dict[str, jax.Array] | None = None) -> jax.Array:
        """The model's head output for `batch` (float32 logits for an LM head)."""

    @abc.abstractmethod
    def count_params(self, cfg: ModelConfig) -> int:
        """Closed-form parameter count (tests check it against `init`)."""

    @abc.abstractmethod
    def flops_per_example(self, cfg: ModelConfig, data_cfg: Any) -> float:
        """Training FLOPs (forward + backward) of one example of the data config's shape."""

    def validate(self, run_cfg: Any) -> str | None:
        """A message naming the field when the run config does not fit this family."""
        del run_cfg
        return None

    def token_logits(self, outputs: Any) -> jax.Array:
        """The next-token logits [B, L, V] among the model's outputs (for scoring text)."""
        return outputs

    def decoder(self, model: nn.Module) -> nn.Module:
        """The module with the same parameters that decodes over a cache. Its method
        `prefill(prompt_BxP, positions_BxP, cache_len)` (left-padded prompts, padding at position
        -1) returns (logits of each row's next token [B, V], the cache, the decoder position of
        the next token fed [B]); calling it with (tokens_BxS, cache, positions_BxS) feeds tokens
        and returns (logits [B, S, V], the updated cache)."""
        raise NotImplementedError(f'model family {self.name!r} has no cached decoding '
                                  '(registry.causal_lm refuses it first)')

    def hf_specs(self, m: dict[str, Any]) -> list[hfs.Spec]:
        """The Hugging Face tensors of a model with `model` fields `m`, each mapped onto its
        jaxlm parameters (raises ConversionError when `m` has no HF equivalent)."""
        raise hfs.no_mapping(self.name)

    def hf_config(self, m: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        """`base` (an HF config.json, possibly empty) with the architecture and shape fields
        of `m` written in."""
        raise hfs.no_mapping(self.name)


def default_layout(tokens_BxL: jax.Array, segment_ids_BxL: jax.Array | None,
                   positions_BxL: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Segment ids and positions of one unpacked example per row, where not given."""
    if segment_ids_BxL is None:
        segment_ids_BxL = jnp.ones_like(tokens_BxL)
    if positions_BxL is None:
        positions_BxL = jnp.broadcast_to(jnp.arange(tokens_BxL.shape[1])[None],
                                         tokens_BxL.shape)
    return segment_ids_BxL, positions_BxL


def dummy_tokens(seq_len: int) -> jax.Array:
    return jnp.zeros((1, seq_len), jnp.int32)
