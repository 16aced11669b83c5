"""Direct preference optimisation (Rafailov et al. 2023) against a frozen reference model, with
the losses and logged metrics of TRL 1.16's `DPOTrainer` (tests/objectives/test_trl_parity.py).

For each pair, log pi(y | x) is the sum of the policy's token log-probabilities over the reply
(its `chosen_mask` / `rejected_mask` tokens), the same for the reference, and
  delta = (log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r)).
Losses per pair (`preference.loss_type`, beta = `preference.beta`):
- 'sigmoid' (DPO):  -log sigmoid(beta delta)
- 'hinge' (SLiC):   max(0, 1 - beta delta)
- 'ipo' (IPO, with TRL's length normalisation: each log-ratio divided by its reply's tokens):
                    (delta_per_token - 1 / (2 beta))^2
- 'robust' (rDPO, the one TRL 1.16 loss that reads `label_smoothing` = eps):
                    ((1 - eps) (-log sigmoid(beta delta)) - eps (-log sigmoid(-beta delta)))
                    / (1 - 2 eps)
TRL 1.16 ignores `label_smoothing` for the others, so it must be 0 with them here.

Its data side is the preference pair rows (jaxlm/data/preference.py); the loss weight is the
number of pairs, so every logged metric is a mean over pairs, as TRL's are.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxlm.errors import ConfigError
from jaxlm.objectives.base import Batch, LossSums
from jaxlm.objectives.pairs import PairObjective

LOSS_TYPES = ('sigmoid', 'hinge', 'ipo', 'robust')


def sequence_logps(logits_BxLxV: jax.Array, targets_BxL: jax.Array,
                   mask_BxL: jax.Array) -> jax.Array:
    """[B]: the sum over `mask_BxL` of each target token's log-probability."""
    logits = logits_BxLxV.astype(jnp.float32)
    target_logit_BxL = jnp.take_along_axis(logits, targets_BxL[..., None], axis=-1)[..., 0]
    logp_BxL = target_logit_BxL - jax.nn.logsumexp(logits, axis=-1)
    return (logp_BxL * mask_BxL).sum(axis=1)


def _per_pair_loss(delta_B: jax.Array, chosen_ratio_B: jax.Array, rejected_ratio_B: jax.Array,
                   batch: Batch, beta: float, loss_type: str,
                   label_smoothing: float) -> jax.Array:
    if loss_type == 'sigmoid':
        return -jax.nn.log_sigmoid(beta * delta_B)
    if loss_type == 'hinge':
        return jax.nn.relu(1.0 - beta * delta_B)
    if loss_type == 'ipo':
        chosen_len_B = jnp.maximum(batch['chosen_mask'].sum(axis=1), 1.0)
        rejected_len_B = jnp.maximum(batch['rejected_mask'].sum(axis=1), 1.0)
        per_token_B = chosen_ratio_B / chosen_len_B - rejected_ratio_B / rejected_len_B
        return jnp.square(per_token_B - 1.0 / (2.0 * beta))
    if loss_type == 'robust':
        clean_B = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * delta_B)
        flipped_B = -label_smoothing * jax.nn.log_sigmoid(-beta * delta_B)
        return (clean_B - flipped_B) / (1.0 - 2.0 * label_smoothing)
    raise ValueError(f'unknown DPO loss type {loss_type!r} (known: {LOSS_TYPES})')


def dpo_loss(policy_logits_BxLxV: jax.Array, reference_logits_BxLxV: jax.Array, batch: Batch,
             beta: float = 0.1, loss_type: str = 'sigmoid',
             label_smoothing: float = 0.0) -> LossSums:
    """Loss and TRL's metrics, summed over the pairs of `batch` (one per row with a pair)."""
    targets = batch['targets']
    logps = {side: sequence_logps(policy_logits_BxLxV, targets, batch[f'{side}_mask'])
             for side in ('chosen', 'rejected')}
    ref = {side: sequence_logps(reference_logits_BxLxV, targets, batch[f'{side}_mask'])
           for side in ('chosen', 'rejected')}
    chosen_ratio_B = logps['chosen'] - ref['chosen']
    rejected_ratio_B = logps['rejected'] - ref['rejected']
    delta_B = chosen_ratio_B - rejected_ratio_B
    loss_B = _per_pair_loss(delta_B, chosen_ratio_B, rejected_ratio_B, batch, beta, loss_type,
                            label_smoothing)
    pair_B = batch['chosen_last'].sum(axis=1)  # 1 for a pair's row, 0 for padding
    chosen_reward_B = beta * jax.lax.stop_gradient(chosen_ratio_B)
    rejected_reward_B = beta * jax.lax.stop_gradient(rejected_ratio_B)
    per_pair = {
        'rewards/chosen': chosen_reward_B,
        'rewards/rejected': rejected_reward_B,
        'rewards/accuracies': (chosen_reward_B > rejected_reward_B).astype(jnp.float32),
        'rewards/margins': chosen_reward_B - rejected_reward_B,
        'logps/chosen': jax.lax.stop_gradient(logps['chosen']),
        'logps/rejected': jax.lax.stop_gradient(logps['rejected']),
    }
    return LossSums((loss_B * pair_B).sum(), pair_B.sum(),
                    {k: (v * pair_B).sum() for k, v in per_pair.items()})


def check_settings(beta: float, loss_type: str, label_smoothing: float) -> None:
    """ConfigError naming the `preference.*` field that TRL's definitions do not allow."""
    if loss_type not in LOSS_TYPES:
        raise ConfigError(f'`preference.loss_type` = {loss_type!r} is not one of {LOSS_TYPES}')
    if not beta > 0:
        raise ConfigError(f'`preference.beta` must be positive, got {beta}')
    if loss_type == 'robust' and not 0.0 <= label_smoothing < 0.5:
        raise ConfigError('`preference.label_smoothing` must be in [0, 0.5) for the robust '
                          f'loss, got {label_smoothing}')
    if loss_type != 'robust' and label_smoothing != 0.0:
        raise ConfigError(
            f'`preference.label_smoothing` = {label_smoothing} has no effect on the '
            f'{loss_type!r} loss (as in TRL 1.16): set it to 0, or use loss_type = \'robust\'')


@dataclasses.dataclass(frozen=True)
class DPO(PairObjective):
    beta: float = 0.1
    loss_type: str = 'sigmoid'
    label_smoothing: float = 0.0
    name: str = 'dpo'
    uses_reference = True

    def __post_init__(self) -> None:
        check_settings(self.beta, self.loss_type, self.label_smoothing)

    @classmethod
    def from_config(cls, cfg: Any) -> DPO:
        p = cfg.preference
        return cls(beta=p.beta, loss_type=p.loss_type, label_smoothing=p.label_smoothing)

    def loss(self, outputs: jax.Array, batch: Batch, reference: Any = None) -> LossSums:
        if reference is None:
            raise ValueError('DPO needs the reference model\'s logits (uses_reference)')
        return dpo_loss(outputs, reference, batch, self.beta, self.loss_type,
                        self.label_smoothing)
