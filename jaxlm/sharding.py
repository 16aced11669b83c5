"""Device mesh and the mapping from logical axis names to mesh axes.

Model code names every parameter and key activation with logical axes (`batch`, `embed`, `heads`,
...); the single rule table in `config.logical_axis_rules` decides which mesh axis, if any, each
one is split over. Nothing below the trainer refers to a mesh axis directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# 'stage' (pipeline parallelism) sits outside fsdp/tensor so stage neighbours can be hosts apart:
# one activation per microbatch crosses it, while fsdp/tensor collectives move every weight.
MESH_AXES = ('data', 'stage', 'fsdp', 'tensor')

Rules = Sequence[tuple[str, Any]]


def make_mesh(shape: dict[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with Auto axes: Linen's logical constraints assert under the Explicit default.
    Axes missing from `shape` have size 1."""
    devices = list(jax.devices() if devices is None else devices)
    dims = tuple(shape.get(a, 1) for a in MESH_AXES)
    if len(devices) == int(np.prod(dims)) == len(jax.devices()):
        return jax.make_mesh(dims, MESH_AXES, axis_types=(AxisType.Auto,) * len(dims))
    # A subset of devices (tests compare a 1-device run against 8 in one process).
    return Mesh(np.asarray(devices).reshape(dims), MESH_AXES,
                axis_types=(AxisType.Auto,) * len(dims))


def logical_to_sharding(logical_specs: Any, mesh: Mesh, rules: Rules) -> Any:
    """Pytree of logical PartitionSpecs -> pytree of NamedShardings."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
    """Sharding of a [batch, length] input array."""
    return nn.logical_to_mesh_sharding(P('batch', 'length'), mesh, rules)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def describe_mesh(mesh: Mesh) -> str:
    return ' x '.join(f'{name}={size}' for name, size in mesh.shape.items()) + (
        f' ({mesh.devices.size} {mesh.devices.flat[0].platform} devices, '
        f'{jax.process_count()} process(es))')


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """Annotates an activation; a no-op outside `nn.logical_axis_rules` + a mesh context."""
    return nn.with_logical_constraint(x, tuple(logical_axes))
