"""The pipelined layer stack computes exactly what the sequential one does: same loss and
gradients (float32, rtol 1e-5) on meshes that mix `stage` with data, FSDP and tensor axes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import sharded_value_and_grad
from jax.sharding import PartitionSpec as P

from jaxlm.layers.pipeline import PipelineSchedule
from jaxlm.models.config import ModelConfig
from jaxlm.models.decoder import Transformer
from jaxlm.objectives.lm import cross_entropy_sums

CFG = ModelConfig(vocab_size=64, num_layers=4, d_model=32, num_heads=4, num_kv_heads=2,
                        head_dim=8, mlp_dim=64, max_seq_len=16, dtype=jnp.float32)
B, L = 16, 16

# (mesh, microbatches, repeats): the four layouts.
CASES = {
    'stage4_micro8': (dict(data=2, stage=4, fsdp=1, tensor=1), 8, 1),
    'stage2_circular2': (dict(data=1, stage=2, fsdp=4, tensor=1), 2, 2),
    'data2_stage2_tensor2': (dict(data=2, stage=2, fsdp=1, tensor=2), 4, 1),
    'fsdp2_stage4': (dict(data=1, stage=4, fsdp=2, tensor=1), 8, 1),
}


def _batch():
    k1, k2 = jax.random.split(jax.random.key(1))
    tokens = jax.random.randint(k1, (B, L + 1), 0, CFG.vocab_size)
    # Two packed documents per row, split at a random point: exercises segment ids/positions.
    cut = jax.random.randint(k2, (B, 1), 1, L)
    idx = jnp.arange(L)[None]
    segments = jnp.where(idx < cut, 1, 2)
    positions = jnp.where(idx < cut, idx, idx - cut)
    return tokens[:, :-1], tokens[:, 1:], segments, positions


def _loss(model, params, batch):
    inputs, targets, segments, positions = batch
    logits = model.apply({'params': params}, inputs, segments, positions)
    loss_sum, _, weights = cross_entropy_sums(logits, targets, jnp.ones_like(targets, jnp.float32),
                                              0.0)
    return loss_sum / weights


def _init(model):
    return jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, L), jnp.int32))['params'])()


@pytest.fixture(scope='module')
def reference():
    model = Transformer(CFG)
    params = nn.unbox(_init(model))
    loss, grads = jax.jit(jax.value_and_grad(lambda p: _loss(model, p, _batch())))(params)
    return params, loss, grads


@pytest.mark.parametrize('case', list(CASES))
def test_pipeline_matches_sequential_loss_and_gradients(case, reference):
    mesh_shape, micro, repeats = CASES[case]
    params, ref_loss, ref_grads = reference
    model = Transformer(CFG, PipelineSchedule(mesh_shape['stage'], micro, repeats))
    loss, grads, hlo = sharded_value_and_grad(lambda p, b: _loss(model, p, b),
                                              lambda: _init(model), params, _batch(), mesh_shape)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-7),
                 grads, ref_grads)
    # Activations really move between stages, and the stacked weights are split over `stage`.
    assert 'collective-permute' in hlo
    assert grads['layers']['mlp']['up']['kernel'].sharding.spec[0] == 'stage'


def test_parameter_layout_is_the_sequential_one():
    """Same tree, shapes and initial values: checkpoints move between the two unchanged."""
    plain = _init(Transformer(CFG))
    piped = _init(Transformer(CFG, PipelineSchedule(4, 8, 1)))
    jax.tree.map(np.testing.assert_array_equal, nn.unbox(plain), nn.unbox(piped))
    assert nn.get_partition_spec(plain)['layers']['mlp']['up']['kernel'] == P(
        'layers', 'embed', 'mlp')
    assert nn.get_partition_spec(piped)['layers']['mlp']['up']['kernel'] == P(
        'stage', 'embed', 'mlp')


def test_bubble_fraction_and_schedule_line():
    s = PipelineSchedule(stages=4, num_microbatches=8, num_repeats=2)
    assert s.bubble_fraction == pytest.approx(3 / 19)
    line = s.describe(num_layers=16)
    assert '4 stages x 2 repeat(s) x 2 layer(s)' in line and '8 microbatches' in line
    assert '0.158' in line
