"""A model's parameters without running it: boxed initialisation, logical axis names and
abstract shapes (for restoring, sharding and checking checkpoints)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from jaxlm.models import registry


def init_boxed(model: nn.Module, key: jax.Array, seq_len: int) -> Any:
    """Parameters with their logical-axis metadata (`nn.Partitioned` boxes)."""
    inputs = registry.family(model.cfg).init_inputs(seq_len)
    return model.init({'params': key}, *inputs)['params']


def logical_specs(model: nn.Module, seq_len: int) -> Any:
    """The logical axis names of every parameter, as PartitionSpecs."""
    boxed = jax.eval_shape(lambda: init_boxed(model, jax.random.key(0), seq_len))
    return nn.get_partition_spec(boxed)


def shapes(model: nn.Module, seq_len: int) -> Any:
    """Unboxed parameter ShapeDtypeStructs."""
    return jax.eval_shape(lambda: nn.unbox(init_boxed(model, jax.random.key(0), seq_len)))


def abstract(model: nn.Module, seq_len: int, sharding: Any) -> Any:
    """Unboxed parameter shapes, all placed on one sharding (e.g. a single device)."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
                        shapes(model, seq_len))
