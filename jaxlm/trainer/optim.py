"""optax optimizer and learning-rate schedule built from `config.optimizer`.

The schedule depends on `warmup_steps`/`decay_steps` only, never on `num_train_steps`, so raising
`num_train_steps` on an existing workdir continues the same run instead of reshaping its LR curve.
"""

from __future__ import annotations

from typing import Any

import jax
import optax


def make_schedule(o: Any) -> optax.Schedule:
    peak, end = o.learning_rate, o.learning_rate * o.end_learning_rate_ratio
    if o.schedule == 'cosine':
        return optax.warmup_cosine_decay_schedule(0.0, peak, o.warmup_steps, o.decay_steps, end)
    if o.schedule == 'linear':
        warmup = optax.linear_schedule(0.0, peak, o.warmup_steps)
        decay = optax.linear_schedule(peak, end, o.decay_steps - o.warmup_steps)
        return optax.join_schedules([warmup, decay], [o.warmup_steps])
    if o.schedule == 'constant':
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, o.warmup_steps), optax.constant_schedule(peak)],
            [o.warmup_steps])
    raise ValueError(f'unknown optimizer.schedule {o.schedule!r}')


def decay_mask(params: Any) -> Any:
    """Weight decay on matrices only: norms' scales and biases are left alone (as in GPT-2,
    LLaMA and MaxText). Scanned layers add a leading axis, so compare against that."""
    def is_matrix(path: tuple[Any, ...], x: jax.Array) -> bool:
        stacked = any(getattr(k, 'key', None) == 'layers' for k in path)
        return x.ndim - int(stacked) >= 2
    return jax.tree_util.tree_map_with_path(is_matrix, params)


def make_optimizer(o: Any) -> optax.GradientTransformation:
    parts = []
    if o.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
    parts.append(optax.adamw(make_schedule(o), b1=o.b1, b2=o.b2, eps=o.eps,
                             weight_decay=o.weight_decay, mask=decay_mask))
    return optax.chain(*parts)
