"""Pure train and eval steps: (state, batch) -> (state, metrics), and the host-side check of the
step's finiteness flag."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxlm.errors import UserError
from jaxlm.layers.pipeline import split_microbatches
from jaxlm.objectives.base import LossSums, Objective
from jaxlm.sharding import constrain
from jaxlm.trainer.state import State
from jaxlm.trainer.tuning import FULL, Tuning

Batch = dict[str, jax.Array]
# (params, batch, deterministic=..., rngs=...) -> model output: `family.apply` bound to the model.
ApplyFn = Callable[..., jax.Array]

log = logging.getLogger(__name__)


def _split_microbatches(batch: Batch, num_micro: int) -> Batch:
    """[B, L] -> [A, B/A, L] taking rows i::A, so every microbatch spans all data shards."""
    def split(x_BxL: jax.Array) -> jax.Array:
        return constrain(split_microbatches(x_BxL, num_micro), (None, 'batch', 'length'))
    return jax.tree.map(split, batch)


def _loss_sums(apply_fn: ApplyFn, objective: Objective, tuning: Tuning, deterministic: bool,
               params: Any, frozen: Any, batch: Batch,
               dropout_key: jax.Array) -> tuple[jax.Array, LossSums]:
    outputs = apply_fn(tuning.model_params(params, frozen), batch, deterministic=deterministic,
                       rngs={'dropout': dropout_key})
    reference = None
    if objective.uses_reference:  # the frozen initial model, without dropout
        reference = jax.lax.stop_gradient(apply_fn(frozen, batch, deterministic=True))
    sums = objective.loss(outputs, batch, reference)
    return sums.loss, sums


def _accumulated_grads(grad_fn: Callable, params: Any, batch: Batch, dropout_key: jax.Array,
                       num_micro: int) -> tuple[LossSums, Any]:
    """Summed loss sums and gradients of the batch, in `num_micro` sequential microbatches."""
    if num_micro == 1:
        (_, sums), grads = grad_fn(params, batch, dropout_key)
        return sums, grads

    def micro(carry: tuple[LossSums, Any], xs: tuple[Batch, jax.Array]):
        (_, sums), grads = grad_fn(params, xs[0], jax.random.fold_in(dropout_key, xs[1]))
        return jax.tree.map(jnp.add, carry, (sums, grads)), None

    first = jax.eval_shape(grad_fn, params, batch, dropout_key)  # shapes of (sums, grads)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (first[0][1], first[1]))
    (sums, grads), _ = jax.lax.scan(
        micro, zeros, (_split_microbatches(batch, num_micro), jnp.arange(num_micro)))
    return sums, grads


def make_train_step(apply_fn: ApplyFn, objective: Objective, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, grad_accum_steps: int, deterministic: bool,
                    tuning: Tuning = FULL) -> Callable[[State, Batch], tuple[State, dict]]:
    loss_fn = functools.partial(_loss_sums, apply_fn, objective, tuning, deterministic)

    def train_step(state: State, batch: Batch) -> tuple[State, dict]:
        params, step = state['params'], state['step']
        grad_fn = jax.value_and_grad(
            functools.partial(_with_frozen, loss_fn, state.get('frozen')), has_aux=True)
        dropout_key = jax.random.fold_in(state['rng'], step)
        sums, grads = _accumulated_grads(grad_fn, params, batch, dropout_key, grad_accum_steps)
        denom = jnp.maximum(sums.weight, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        loss, grad_norm = sums.loss / denom, optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state['opt_state'], params)
        new_params = optax.apply_updates(params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & _all_finite(new_params)
        # A non-finite step leaves parameters and optimizer state as they were (optax's
        # apply_if_finite rule), so no saved state is ever non-finite; the step counter still
        # advances with the data. `NonFiniteGuard` decides on the host whether to stop.
        new_params, opt_state = jax.tree.map(functools.partial(jnp.where, finite),
                                             (new_params, opt_state),
                                             (params, state['opt_state']))
        new_state = {**state, 'step': step + 1, 'params': new_params, 'opt_state': opt_state}
        metrics = {'loss': loss, 'grad_norm': grad_norm, 'learning_rate': schedule(step),
                   'num_tokens': sums.weight, 'skipped': jnp.logical_not(finite),
                   **{k: v / denom for k, v in sums.metrics.items()}}
        return new_state, metrics

    return train_step


def _with_frozen(loss_fn: Callable, frozen: Any, params: Any, batch: Batch,
                 dropout_key: jax.Array) -> tuple[jax.Array, LossSums]:
    return loss_fn(params, frozen, batch, dropout_key)


def _all_finite(tree: Any) -> jax.Array:
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in jax.tree.leaves(tree)]))


class NonFiniteError(UserError):
    """Training produced a non-finite loss, gradient norm or parameters too often."""


class NonFiniteGuard:
    """Counts the steps the train step skipped as non-finite and stops the run once there are
    more than `max_skipped` (0: at the first). Each step's flag is read one step late, when the
    next step is already queued, so the check never leaves the device idle."""

    def __init__(self, max_skipped: int, skipped: int = 0) -> None:
        self.max_skipped = max_skipped
        self.skipped = skipped  # over the whole run: restored from the checkpoint
        self._pending: tuple[int, dict] | None = None

    def observe(self, step: int, metrics: dict) -> None:
        """Checks the previous step, then holds `step`'s metrics for the next call."""
        self.check()
        self._pending = (step, metrics)

    def check(self) -> None:
        """Checks the held step now (before a save, a log line or the end of the run)."""
        if self._pending is None:
            return
        step, metrics = self._pending
        self._pending = None
        if not bool(metrics['skipped']):
            return
        self.skipped += 1
        what = (f'step {step}: non-finite loss ({float(metrics["loss"])}), gradient norm '
                f'({float(metrics["grad_norm"])}) or parameters; its update was not applied')
        if self.skipped > self.max_skipped:
            raise NonFiniteError(
                f'{what}. {self.skipped} such step(s) in this run, more than '
                f'max_skipped_steps={self.max_skipped}: stopped. Every checkpoint holds finite '
                'parameters; lower --config.optimizer.learning_rate or raise '
                '--config.max_skipped_steps and run the same command to resume from the last one')
        log.warning('%s (%d of max_skipped_steps=%d)', what, self.skipped, self.max_skipped)


def make_eval_step(apply_fn: ApplyFn, objective: Objective,
                   tuning: Tuning = FULL) -> Callable[[Any, Batch], dict]:
    """(weights: the state's 'params' and 'frozen' (tuning.weights), batch) -> loss sums."""
    def eval_step(weights: dict[str, Any], batch: Batch) -> dict:
        _, sums = _loss_sums(apply_fn, objective, tuning, True, weights['params'],
                             weights.get('frozen'), batch, jax.random.PRNGKey(0))
        return {'loss_sum': sums.loss, 'num_tokens': sums.weight, 'metric_sums': sums.metrics}
    return eval_step
