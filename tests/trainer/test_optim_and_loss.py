"""Loss, schedule and weight-decay mask against hand-computed values."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.config import default_config
from jaxlm.objectives.lm import cross_entropy_sums
from jaxlm.trainer.optim import decay_mask, make_schedule


def test_cross_entropy_and_z_loss_by_hand():
    logits = jnp.array([[[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    targets = jnp.array([[0, 2]])
    weights = jnp.array([[1.0, 0.0]])  # the second token is padding
    lse = np.log(np.exp(2.0) + 2.0)
    loss, z, w = cross_entropy_sums(logits, targets, weights, z_loss_weight=1e-4)
    assert float(w) == 1.0
    assert float(z) == pytest.approx(1e-4 * lse ** 2, rel=1e-6)
    assert float(loss) == pytest.approx(lse - 2.0 + 1e-4 * lse ** 2, rel=1e-6)


def test_schedule_is_independent_of_num_train_steps():
    o = default_config().optimizer
    o.update(learning_rate=1.0, warmup_steps=10, decay_steps=110, end_learning_rate_ratio=0.1)
    s = make_schedule(o)
    assert float(s(0)) == 0.0
    assert float(s(5)) == pytest.approx(0.5)
    assert float(s(10)) == pytest.approx(1.0)
    assert float(s(60)) == pytest.approx(0.55)  # half-way down the cosine: (1 + 0.1) / 2
    assert float(s(110)) == pytest.approx(0.1)
    assert float(s(10_000)) == pytest.approx(0.1)  # continuing past decay_steps holds the end
    o.schedule = 'linear'
    assert float(make_schedule(o)(60)) == pytest.approx(0.55)


def test_weight_decay_only_on_matrices():
    params = {'layers': {'mlp': {'up': {'kernel': jnp.zeros((2, 4, 8))}},
                         'attention_norm': {'scale': jnp.zeros((2, 4))}},
              'final_norm': {'scale': jnp.zeros((4,))},
              'token_embed': {'embedding': jnp.zeros((10, 4))}}
    mask = decay_mask(params)
    assert mask['layers']['mlp']['up']['kernel']
    assert not mask['layers']['attention_norm']['scale']  # stacked [layers, d] is still a vector
    assert not mask['final_norm']['scale']
    assert mask['token_embed']['embedding']
