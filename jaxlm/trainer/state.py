"""The train state pytree and its sharding, derived from the parameters' logical axis names.

State is a plain dict {'step', 'params', 'opt_state', 'rng'}: orbax, donation and jit shardings
all work on it directly.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxlm.models import params as param_lib
from jaxlm.sharding import Rules, logical_to_sharding

State = dict[str, Any]


def state_shardings(model: nn.Module, tx: optax.GradientTransformation, mesh: Mesh, rules: Rules,
                    seq_len: int) -> State:
    """NamedShardings for every leaf: params by their logical names, optimizer moments like the
    params they track, everything else (counts, step, rng) replicated."""
    param_sh = logical_to_sharding(param_lib.logical_specs(model, seq_len), mesh, rules)
    abstract = abstract_state(model, tx, seq_len)
    replicated = NamedSharding(mesh, P())
    opt_sh = optax.tree_map_params(
        tx, lambda _, sh: sh, abstract['opt_state'], param_sh,
        transform_non_params=lambda _: replicated)
    return {'step': replicated, 'params': param_sh, 'opt_state': opt_sh, 'rng': replicated}


def _init_state(model: nn.Module, tx: optax.GradientTransformation, seed: int,
                seq_len: int) -> State:
    init_key, rng = jax.random.split(jax.random.PRNGKey(seed))
    params = nn.unbox(param_lib.init_boxed(model, init_key, seq_len))
    return {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt_state': tx.init(params),
            'rng': rng}


def state_from_params(params: Any, tx: optax.GradientTransformation, seed: int,
                      shardings: State) -> State:
    """Step 0 with given parameters and a fresh optimizer state (fine-tuning)."""
    def build(p: Any) -> State:
        _, rng = jax.random.split(jax.random.PRNGKey(seed))
        return {'step': jnp.zeros((), jnp.int32), 'params': p, 'opt_state': tx.init(p),
                'rng': rng}
    return jax.jit(build, out_shardings=shardings, donate_argnums=0)(params)


def abstract_state(model: nn.Module, tx: optax.GradientTransformation, seq_len: int) -> State:
    return jax.eval_shape(lambda: _init_state(model, tx, 0, seq_len))


def init_state(model: nn.Module, tx: optax.GradientTransformation, seed: int, seq_len: int,
               shardings: State) -> State:
    """Initialises directly into the target sharding: no device ever holds the full state."""
    return jax.jit(lambda: _init_state(model, tx, seed, seq_len), out_shardings=shardings)()


def with_shardings(abstract: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)


def check_divisible(model: nn.Module, mesh: Mesh, rules: Rules, seq_len: int) -> None:
    """Every sharded parameter dim must split evenly over its mesh axes (XLA would otherwise fail
    deep inside compilation); the error names the parameter, its logical axis and the rule."""
    from jaxlm.config import ConfigError

    logical = param_lib.logical_specs(model, seq_len)
    shapes = param_lib.shapes(model, seq_len)
    shardings = logical_to_sharding(logical, mesh, rules)

    def check(path: tuple[Any, ...], shape: Any, names: Any, sh: NamedSharding) -> None:
        for dim, (size, name, axes) in enumerate(zip(shape.shape, names, sh.spec, strict=False)):
            axes = axes if isinstance(axes, tuple) else (axes,)
            parts = int(np.prod([mesh.shape[a] for a in axes if a is not None]))
            if size % parts:
                raise ConfigError(
                    f'parameter {jax.tree_util.keystr(path)} dim {dim} (logical axis `{name}`, '
                    f'size {size}) is not divisible by mesh axes {axes} = {parts}: change '
                    f'`logical_axis_rules` for `{name}`, the mesh, or the model size '
                    f'(e.g. pad `model.vocab_size` to a multiple of {parts * 64})')

    jax.tree_util.tree_map_with_path(check, shapes, logical, shardings,
                                     is_leaf=lambda x: isinstance(x, P))
