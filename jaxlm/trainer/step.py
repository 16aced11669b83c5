"""Pure train and eval steps: (state, batch) -> (state, metrics), and the host-side check of the
step's finiteness flag."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxlm.errors import UserError
from jaxlm.sharding import constrain
from jaxlm.trainer.losses import cross_entropy_sums
from jaxlm.trainer.state import State

Batch = dict[str, jax.Array]

log = logging.getLogger(__name__)


def _logits(model: nn.Module, params: Any, batch: Batch, dropout_key: jax.Array,
            deterministic: bool) -> jax.Array:
    """The decoder's logits; an encoder-decoder batch also carries the encoder's fields."""
    rngs = {'dropout': dropout_key}
    if 'encoder_inputs' in batch:
        return model.apply({'params': params}, batch['encoder_inputs'], batch['inputs'],
                           batch['encoder_segment_ids'], batch['segment_ids'],
                           batch['encoder_positions'], batch['positions'],
                           deterministic=deterministic, rngs=rngs)
    return model.apply({'params': params}, batch['inputs'], batch['segment_ids'],
                       batch['positions'], deterministic=deterministic, rngs=rngs)


def _loss_sums(model: nn.Module, params: Any, batch: Batch, dropout_key: jax.Array,
               z_loss_weight: float, deterministic: bool) -> tuple[jax.Array, tuple]:
    logits = _logits(model, params, batch, dropout_key, deterministic)
    loss_sum, z_sum, weight_sum = cross_entropy_sums(logits, batch['targets'], batch['loss_mask'],
                                                     z_loss_weight)
    return loss_sum, (z_sum, weight_sum)


def _split_microbatches(batch: Batch, num_micro: int) -> Batch:
    """[B, L] -> [A, B/A, L] taking rows i::A, so every microbatch spans all data shards."""
    def split(x: jax.Array) -> jax.Array:
        b = x.shape[0]
        x = x.reshape(b // num_micro, num_micro, *x.shape[1:]).swapaxes(0, 1)
        return constrain(x, (None, 'batch', 'length'))
    return jax.tree.map(split, batch)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, optimizer_cfg: Any,
                    deterministic: bool) -> Callable[[State, Batch], tuple[State, dict]]:
    num_micro = optimizer_cfg.grad_accum_steps
    z_w = optimizer_cfg.z_loss_weight
    value_and_grad = jax.value_and_grad(_loss_sums, argnums=1, has_aux=True)

    def train_step(state: State, batch: Batch) -> tuple[State, dict]:
        params, step = state['params'], state['step']
        dropout_key = jax.random.fold_in(state['rng'], step)
        grad_fn = lambda mb, k: value_and_grad(model, params, mb, k, z_w, deterministic)  # noqa: E731

        if num_micro == 1:
            (loss_sum, (z_sum, w_sum)), grads = grad_fn(batch, dropout_key)
        else:
            def micro(carry, xs):
                mb, i = xs
                g_acc, l_acc, z_acc, w_acc = carry
                (loss, (z, w)), g = grad_fn(mb, jax.random.fold_in(dropout_key, i))
                return (jax.tree.map(jnp.add, g_acc, g), l_acc + loss, z_acc + z, w_acc + w), None
            zeros = jax.tree.map(jnp.zeros_like, params)
            init = (zeros, jnp.zeros(()), jnp.zeros(()), jnp.zeros(()))
            (grads, loss_sum, z_sum, w_sum), _ = jax.lax.scan(
                micro, init, (_split_microbatches(batch, num_micro), jnp.arange(num_micro)))

        denom = jnp.maximum(w_sum, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        loss, grad_norm = loss_sum / denom, optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state['opt_state'], params)
        new_params = optax.apply_updates(params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & _all_finite(new_params)
        # A non-finite step leaves parameters and optimizer state as they were (optax's
        # apply_if_finite rule), so no saved state is ever non-finite; the step counter still
        # advances with the data. `NonFiniteGuard` decides on the host whether to stop.
        new_params, opt_state = jax.tree.map(functools.partial(jnp.where, finite),
                                             (new_params, opt_state),
                                             (params, state['opt_state']))
        new_state = {'step': step + 1, 'params': new_params, 'opt_state': opt_state,
                     'rng': state['rng']}
        metrics = {'loss': loss, 'z_loss': z_sum / denom, 'grad_norm': grad_norm,
                   'learning_rate': schedule(step), 'num_tokens': w_sum,
                   'skipped': jnp.logical_not(finite)}
        return new_state, metrics

    return train_step


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


def make_eval_step(model: nn.Module) -> Callable[[Any, Batch], dict]:
    def eval_step(params: Any, batch: Batch) -> dict:
        loss_sum, (_, w_sum) = _loss_sums(model, params, batch, jax.random.PRNGKey(0), 0.0, True)
        return {'loss_sum': loss_sum, 'num_tokens': w_sum}
    return eval_step
