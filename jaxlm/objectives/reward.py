"""Reward modelling with the Bradley-Terry loss: -log sigmoid(r_chosen - r_rejected) per pair,
r read at the last token of each sequence (the `reward_model` family's per-token scores), as
TRL 1.16's `RewardTrainer` computes it on a sequence classifier's output.

Its data side is the preference pair rows (jaxlm/data/preference.py); the loss weight is the
number of pairs, so the logged `accuracy` (chosen scored above rejected), `margin`
(r_chosen - r_rejected) and `mean_reward` are means over pairs, under TRL's names; at evaluation
`eval_accuracy` is the held-out pairwise accuracy.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxlm.objectives.base import Batch, LossSums
from jaxlm.objectives.pairs import PairObjective


def pair_rewards(scores_BxL: jax.Array, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(r_chosen [B], r_rejected [B]): the score at each sequence's last token."""
    return ((scores_BxL * batch['chosen_last']).sum(axis=1),
            (scores_BxL * batch['rejected_last']).sum(axis=1))


def reward_loss(scores_BxL: jax.Array, batch: Batch) -> LossSums:
    """Bradley-Terry loss and metrics, summed over the pairs of `batch`."""
    chosen_B, rejected_B = pair_rewards(scores_BxL.astype(jnp.float32), batch)
    margin_B = chosen_B - rejected_B
    pair_B = batch['chosen_last'].sum(axis=1)  # 1 for a pair's row, 0 for padding
    per_pair = {'accuracy': (margin_B > 0).astype(jnp.float32), 'margin': margin_B,
                'mean_reward': (chosen_B + rejected_B) / 2}
    return LossSums((-jax.nn.log_sigmoid(margin_B) * pair_B).sum(), pair_B.sum(),
                    {k: (jax.lax.stop_gradient(v) * pair_B).sum() for k, v in per_pair.items()})


@dataclasses.dataclass(frozen=True)
class RewardModeling(PairObjective):
    name: str = 'reward'
    output = 'token_scalars'

    def loss(self, outputs: jax.Array, batch: Batch, reference: Any = None) -> LossSums:
        del reference
        return reward_loss(outputs, batch)
