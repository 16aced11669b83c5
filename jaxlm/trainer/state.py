"""The train state pytree and its sharding, derived from the parameters' logical axis names.

State is a plain dict {'step', 'params', 'opt_state', 'rng'}, plus 'frozen' when the run keeps
frozen parameters (jaxlm/trainer/tuning.py): orbax, donation and jit shardings all work on it
directly. 'params' are what the optimizer trains: the model's parameters, or LoRA adapters.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxlm.models import lora as lora_lib
from jaxlm.models import params as param_lib
from jaxlm.sharding import Rules, logical_to_sharding
from jaxlm.trainer.tuning import FULL, Tuning

State = dict[str, Any]


def state_shardings(model: nn.Module, tx: optax.GradientTransformation, mesh: Mesh, rules: Rules,
                    seq_len: int, tuning: Tuning = FULL) -> State:
    """NamedShardings for every leaf: params by their logical names, optimizer moments like the
    params they track, everything else (counts, step, rng) replicated."""
    base_specs = param_lib.logical_specs(model, seq_len)
    base_sh = logical_to_sharding(base_specs, mesh, rules)
    param_sh = base_sh
    if tuning.lora is not None:
        param_sh = logical_to_sharding(lora_lib.logical_specs(base_specs, tuning.lora), mesh,
                                       rules)
    abstract = abstract_state(model, tx, seq_len, tuning)
    replicated = NamedSharding(mesh, P())
    opt_sh = optax.tree_map_params(
        tx, lambda _, sh: sh, abstract['opt_state'], param_sh,
        transform_non_params=lambda _: replicated)
    out = {'step': replicated, 'params': param_sh, 'opt_state': opt_sh, 'rng': replicated}
    if tuning.keep_frozen:
        out['frozen'] = base_sh
    return out


def _from_base(base: Any, tx: optax.GradientTransformation, seed: int, tuning: Tuning,
               base_specs: Any) -> State:
    """Step 0 over the model parameters `base`: trained as they are, or frozen under fresh
    LoRA adapters; the frozen copy kept when the run needs it."""
    init_key, rng = jax.random.split(jax.random.PRNGKey(seed))
    params = base
    if tuning.lora is not None:
        params = lora_lib.init_adapters(jax.random.fold_in(init_key, 1), base, base_specs,
                                        tuning.lora)
    state = {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt_state': tx.init(params),
             'rng': rng}
    if tuning.keep_frozen:
        state['frozen'] = base
    return state


def seed_params(model: nn.Module, seed: int, seq_len: int) -> Any:
    """The model parameters a run with this seed initialises."""
    init_key, _ = jax.random.split(jax.random.PRNGKey(seed))
    return nn.unbox(param_lib.init_boxed(model, init_key, seq_len))


def _init_state(model: nn.Module, tx: optax.GradientTransformation, seed: int,
                seq_len: int, tuning: Tuning) -> State:
    base = seed_params(model, seed, seq_len)
    return _from_base(base, tx, seed, tuning, param_lib.logical_specs(model, seq_len))


def state_from_params(params: Any, tx: optax.GradientTransformation, seed: int,
                      shardings: State, tuning: Tuning = FULL, model: nn.Module | None = None,
                      seq_len: int = 0) -> State:
    """Step 0 with given model parameters and a fresh optimizer state (fine-tuning); `model`
    and `seq_len` give the logical axes LoRA adapters need."""
    specs = param_lib.logical_specs(model, seq_len) if tuning.lora is not None else None
    build = functools.partial(_from_base, tx=tx, seed=seed, tuning=tuning, base_specs=specs)
    return jax.jit(build, out_shardings=shardings, donate_argnums=0)(params)


def abstract_state(model: nn.Module, tx: optax.GradientTransformation, seq_len: int,
                   tuning: Tuning = FULL) -> State:
    return jax.eval_shape(functools.partial(_init_state, model, tx, 0, seq_len, tuning))


def init_state(model: nn.Module, tx: optax.GradientTransformation, seed: int, seq_len: int,
               shardings: State, tuning: Tuning = FULL) -> State:
    """Initialises directly into the target sharding: no device ever holds the full state."""
    return jax.jit(functools.partial(_init_state, model, tx, seed, seq_len, tuning),
                   out_shardings=shardings)()


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
