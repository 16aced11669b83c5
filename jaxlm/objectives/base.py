"""What an objective is: the batch fields it adds to the model's inputs, and a pure loss over the
model's output that returns sums.

Losses return sums, not means (`LossSums`), so gradient-accumulation microbatches and data shards
add up to exactly the full-batch mean: the train step divides by the summed `weight` once.
An objective is a frozen dataclass built from the run config by `registry.build`; its data side
(`data_transform`) turns a source's documents into its batch fields.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.struct
import jax
import numpy as np

from jaxlm.models.family import Field

Batch = Mapping[str, jax.Array]
Example = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DataTransform:
    """An objective's data side for one run, in NumPy (no grain, no TensorFlow), which the shared
    pipeline (jaxlm/data/pipeline.py) runs between a source's documents and packing.

    `examples(docs)`: a split's `TokenDocuments` (jaxlm/data/documents.py) -> (random-access
    examples, stats about them); `noise(example, rng)`: an optional per-example random map (its
    generator comes from grain per index, so it resumes exactly); `lengths`: the packed row
    length of every example feature; `to_batch`: packing's outputs -> the objective's batch
    fields; `stats`: what it reports about itself. `packed`: `examples` returns rows already
    packed (dicts of [seq_len] arrays, e.g. best-fit decreasing done once), which the pipeline
    only shuffles every epoch and batches."""

    examples: Callable[[Any], tuple[Sequence[Any], dict]]
    lengths: dict[str, int]
    to_batch: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    noise: Callable[[Any, np.random.Generator], Example] | None = None
    stats: dict = dataclasses.field(default_factory=dict)
    packed: bool = False


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
    # The model output its loss reads (a family's `output`).
    output: str = 'vocab_logits'
    # Whether its loss compares against the frozen initial model (DPO's reference): the train
    # step then passes that model's outputs on the same batch as `reference`.
    uses_reference: bool = False

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

    def validate(self, data_cfg: Any) -> None:
        """Raises ConfigError when the data config cannot make its batches (run before any
        workdir is touched)."""
        del data_cfg

    def data_transform(self, data_cfg: Any, tokenizer: Any) -> DataTransform:
        """How its batches are made from a source's documents with this tokenizer."""
        raise NotImplementedError(f'objective {self.name!r} has no data transform')

    @abc.abstractmethod
    def loss(self, outputs: Any, batch: Batch, reference: Any = None) -> LossSums:
        """The loss sums of one (micro)batch from the model's output (and the reference
        model's, when `uses_reference`)."""
