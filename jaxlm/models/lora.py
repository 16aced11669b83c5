"""Low-rank adapters (LoRA, Hu et al. 2021) as their own parameter pytree.

An adapted kernel W keeps its shape; the model runs with W + (alpha / rank) * A @ B, where A
[*stack, in, rank] and B [*stack, rank, out] act on W flattened to [*stack, in, out]. `stack` are
W's layer-stack axes (logical names 'layers' / 'stage', the leading axes of an `nn.scan`ned
stack), so one adapter pair per layer rides along in the same scan. Which of W's other axes are
its inputs follows from the logical names: a kernel whose first one is 'embed' reads the model
dimension (query, key, value, up, gate: in = that axis), any other reads its leading axes and
writes the model dimension last (out, down).

The adapters are the only trained (and checkpointed) parameters: the base stays in the train
state's frozen pytree, so the optimizer never holds moments of it and `merge` is the only place
the two meet. B starts at zero, so step 0 is exactly the base model (PEFT's initialisation).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util
from jax.sharding import PartitionSpec as P

from jaxlm.errors import ConfigError

STACK_AXES = ('layers', 'stage')
# PEFT's default for LLaMA-style models: the query and value projections.
DEFAULT_TARGETS = r'attention/(query|value)/kernel'


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    rank: int
    alpha: float
    targets: str  # a regular expression searched in each parameter's '/'-joined path

    @classmethod
    def from_config(cls, lora_cfg: Any) -> LoraConfig | None:
        """None when `lora.rank` is 0 (full fine-tuning)."""
        if not lora_cfg.rank:
            return None
        return cls(int(lora_cfg.rank), float(lora_cfg.alpha), str(lora_cfg.targets))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How an adapted kernel splits: its stack axes, then input and output axes."""

    stack: int
    num_in: int

    def sizes(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], int, int]:
        stack, rest = shape[:self.stack], shape[self.stack:]
        return stack, math.prod(rest[:self.num_in]), math.prod(rest[self.num_in:])


def _layout(names: tuple[Any, ...]) -> _Layout:
    stack = 0
    while stack < len(names) and names[stack] in STACK_AXES:
        stack += 1
    rest = names[stack:]
    return _Layout(stack, 1 if rest and rest[0] == 'embed' else len(rest) - 1)


def targets(logical_specs: Any, lora: LoraConfig) -> dict[tuple[str, ...], _Layout]:
    """The adapted kernels (flattened paths) and their layouts; at least one, else ConfigError."""
    pattern = re.compile(lora.targets)
    found = {path: _layout(tuple(spec))
             for path, spec in traverse_util.flatten_dict(logical_specs).items()
             if len(spec) - _layout(tuple(spec)).stack >= 2 and pattern.search('/'.join(path))}
    if not found:
        paths = sorted('/'.join(p) for p in traverse_util.flatten_dict(logical_specs))
        raise ConfigError(f'`lora.targets` {lora.targets!r} matches no kernel (parameters: '
                         f'{", ".join(paths)})')
    return found


def _unflatten(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    return traverse_util.unflatten_dict({(*path, part): v for path, parts in flat.items()
                                         for part, v in parts.items()})


def init_adapters(key: jax.Array, shapes: Any, logical_specs: Any, lora: LoraConfig,
                  dtype: Any = jnp.float32) -> dict[str, Any]:
    """{kernel path...: {'a': A, 'b': B}}: A ~ N(0, 1/in) (variance-preserving), B = 0."""
    flat_shapes = traverse_util.flatten_dict(shapes)
    out = {}
    for i, (path, layout) in enumerate(sorted(targets(logical_specs, lora).items())):
        stack, n_in, n_out = layout.sizes(tuple(flat_shapes[path].shape))
        a = jax.random.normal(jax.random.fold_in(key, i), (*stack, n_in, lora.rank), dtype)
        out[path] = {'a': a * n_in ** -0.5, 'b': jnp.zeros((*stack, lora.rank, n_out), dtype)}
    return _unflatten(out)


def logical_specs(base_specs: Any, lora: LoraConfig) -> dict[str, Any]:
    """Adapters are small: sharded along the layer stack like their kernel, else replicated."""
    out = {}
    for path, layout in targets(base_specs, lora).items():
        spec = tuple(traverse_util.flatten_dict(base_specs)[path])
        stack = spec[:layout.stack]
        out[path] = {'a': P(*stack, None, None), 'b': P(*stack, None, None)}
    return _unflatten(out)


def delta(adapter: dict[str, jax.Array], shape: tuple[int, ...], scale: float) -> jax.Array:
    """scale * A @ B in the kernel's shape (float32)."""
    ab = jnp.einsum('...ir,...ro->...io', adapter['a'].astype(jnp.float32),
                    adapter['b'].astype(jnp.float32))
    return (scale * ab).reshape(shape)


def merge(base: Any, adapters: dict[str, Any], lora: LoraConfig) -> Any:
    """The model's parameters: every adapted kernel W + scale * A @ B (in W's dtype), the rest
    of `base` as it is. Differentiable in `adapters`."""
    flat = dict(traverse_util.flatten_dict(base))
    for path, adapter in _adapter_items(adapters):
        w = flat[path]
        flat[path] = (w.astype(jnp.float32) + delta(adapter, w.shape, lora.scale)).astype(w.dtype)
    return traverse_util.unflatten_dict(flat)


def _adapter_items(adapters: dict[str, Any]) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    flat = traverse_util.flatten_dict(adapters)
    kernels = sorted({path[:-1] for path in flat})
    return [(k, {'a': flat[(*k, 'a')], 'b': flat[(*k, 'b')]}) for k in kernels]


def count(tree: Any) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
