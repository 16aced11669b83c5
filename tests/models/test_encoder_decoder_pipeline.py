"""The pipelined encoder-decoder (both stacks over the `stage` mesh axis) computes exactly what
the sequential one does: same loss and gradients (float32, rtol 1e-5), same parameter layout.
Pipelined training and checkpoints across meshes: tests/trainer/test_encoder_decoder_training.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import sharded_value_and_grad
from jax.sharding import PartitionSpec as P

from jaxlm.layers.pipeline import PipelineSchedule
from jaxlm.models.config import ModelConfig
from jaxlm.models.encoder_decoder import EncoderDecoder
from jaxlm.objectives.lm import cross_entropy_sums

CFG = ModelConfig(vocab_size=64, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                        head_dim=8, mlp_dim=64, max_seq_len=32, architecture='encoder_decoder',
                        norm_eps=1e-6, mlp='geglu', positions='t5_relative', dtype=jnp.float32)
B, S, L = 16, 16, 8  # rows, encoder length, decoder length

# (mesh, microbatches): a stage x FSDP and a data x stage x tensor layout on 8 devices.
CASES = {
    'stage2_micro4': (dict(data=1, stage=2, fsdp=4, tensor=1), 4),
    'data2_stage2_tensor2': (dict(data=2, stage=2, fsdp=1, tensor=2), 4),
}


def _packed(key: jax.Array, length: int) -> tuple[jax.Array, jax.Array]:
    """Segment ids / positions of two packed examples per row, cut at a random point, and
    padding after a random end: the microbatches must keep each row's own masks."""
    cut_key, end_key = jax.random.split(key)
    cut = jax.random.randint(cut_key, (B, 1), 1, length - 2)
    end = jax.random.randint(end_key, (B, 1), length - 2, length + 1)
    idx = jnp.arange(length)[None]
    segments = jnp.where(idx < cut, 1, 2) * (idx < end)
    positions = jnp.where(idx < cut, idx, idx - cut) * (idx < end)
    return segments, positions


def _batch() -> tuple[jax.Array, ...]:
    keys = jax.random.split(jax.random.key(1), 5)
    enc_seg, enc_pos = _packed(keys[0], S)
    dec_seg, dec_pos = _packed(keys[1], L)
    inputs = jax.random.randint(keys[2], (B, S), 1, CFG.vocab_size) * (enc_seg > 0)
    decoder_in = jax.random.randint(keys[3], (B, L), 1, CFG.vocab_size) * (dec_seg > 0)
    targets = jax.random.randint(keys[4], (B, L), 1, CFG.vocab_size) * (dec_seg > 0)
    return inputs, decoder_in, targets, enc_seg, dec_seg, enc_pos, dec_pos


def _loss(model: EncoderDecoder, params, batch) -> jax.Array:
    inputs, decoder_in, targets, enc_seg, dec_seg, enc_pos, dec_pos = batch
    logits = model.apply({'params': params}, inputs, decoder_in, enc_seg, dec_seg, enc_pos,
                         dec_pos)
    loss_sum, _, weights = cross_entropy_sums(logits, targets, (dec_seg > 0).astype(jnp.float32),
                                              0.0)
    return loss_sum / weights


def _init(model: EncoderDecoder):
    tokens = jnp.zeros((1, 8), jnp.int32)
    return jax.jit(lambda: model.init(jax.random.key(0), tokens, tokens)['params'])()


@pytest.fixture(scope='module')
def reference():
    model = EncoderDecoder(CFG)
    params = nn.unbox(_init(model))
    loss, grads = jax.jit(jax.value_and_grad(lambda p: _loss(model, p, _batch())))(params)
    return params, loss, grads


@pytest.mark.parametrize('case', list(CASES))
def test_pipeline_matches_sequential_loss_and_gradients(case, reference):
    mesh_shape, micro = CASES[case]
    params, ref_loss, ref_grads = reference
    model = EncoderDecoder(CFG, PipelineSchedule(mesh_shape['stage'], micro))
    loss, grads, hlo = sharded_value_and_grad(lambda p, b: _loss(model, p, b),
                                              lambda: _init(model), params, _batch(), mesh_shape)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-7),
                 grads, ref_grads)
    # Activations really move between stages, and both stacks' weights are split over `stage`.
    assert 'collective-permute' in hlo
    for stack in ('encoder', 'decoder'):
        assert grads[stack]['layers']['mlp']['up']['kernel'].sharding.spec[0] == 'stage'


def test_parameter_layout_is_the_sequential_one():
    """Same tree and shapes, only the stacked dim's logical name changes: checkpoints move
    between the two unchanged (both initialise through the same `nn.scan`)."""
    plain = jax.eval_shape(lambda: _init(EncoderDecoder(CFG)))
    piped = jax.eval_shape(lambda: _init(EncoderDecoder(CFG, PipelineSchedule(2, 4))))
    assert jax.tree.map(lambda x: x.shape, nn.unbox(plain)) == jax.tree.map(lambda x: x.shape,
                                                                             nn.unbox(piped))
    plain_specs, piped_specs = nn.get_partition_spec(plain), nn.get_partition_spec(piped)
    for stack in ('encoder', 'decoder'):
        assert plain_specs[stack]['layers']['mlp']['up']['kernel'] == P('layers', 'embed', 'mlp')
        assert piped_specs[stack]['layers']['mlp']['up']['kernel'] == P('stage', 'embed', 'mlp')
    assert piped_specs['decoder']['layers']['cross_attention']['query']['kernel'][0] == 'stage'
    assert piped_specs['decoder']['relative_bias'] == plain_specs['decoder']['relative_bias']
