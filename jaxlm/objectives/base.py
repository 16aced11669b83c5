"""What an objective is: the batch fields it adds to the model's inputs, and a pure loss over the
model's output that returns sums.

Losses return sums, not means (`LossSums`), so gradient-accumulation microbatches and data shards
add up to exactly the full-batch mean: the train step divides by the summed `weight` once.
An objective is a frozen dataclass built from the run config by `registry.build`; its data side
(`transform`) turns a source's documents or records into its batch fields.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import flax.struct
import jax

from jaxlm.models.family import Field

Batch = Mapping[str, jax.Array]


@flax.struct.dataclass
class LossSums:
    """`loss`: the summed loss that is differentiated (with any regulariser); `weight`: what it
    is divided by (target tokens, examples, ...); `metrics`: other sums logged divided by
    `weight` (e.g. 'z_loss')."""

    loss: jax.Array
    weight: jax.Array
    metrics: dict[str, jax.Array]


class Objective(abc.ABC):
    """One training objective (a frozen dataclass in each subclass's file)."""

    name: str = ''

    @classmethod
    def from_config(cls, cfg: Any) -> Objective:
        """The objective with its settings from the run config."""
        del cfg
        return cls()

    @abc.abstractmethod
    def model_inputs(self) -> tuple[str, ...]:
        """The model-input fields its batches carry: they must be the model family's."""

    @abc.abstractmethod
    def target_fields(self, data_cfg: Any) -> dict[str, Field]:
        """The fields its loss reads beyond the model's inputs."""

    @abc.abstractmethod
    def loss(self, outputs: jax.Array, batch: Batch) -> LossSums:
        """The loss sums of one (micro)batch from the model's output."""
