"""The encoder-decoder trains through the same trainer: data x fsdp x tensor on 8 devices
matches 1 device and a pipelined mesh, parameters shard by the same rule table, and checkpoints
resume bitwise."""

import jax
import numpy as np
import pytest
from conftest import small_config, train_losses

from jaxlm.trainer.loop import train

MESH = dict(data=2, fsdp=2, tensor=2)
PIPELINED = dict(data=2, stage=2, fsdp=2)
STEPS = 4


def _cfg(data_dir, steps=STEPS, **mesh):
    c = small_config(data_dir, **mesh)
    c.num_train_steps = steps
    c.checkpoint_every_steps = 2
    c.model.update(architecture='encoder_decoder', positions='t5_relative', mlp='geglu',
                   norm_eps=1e-6, vocab_size=280, max_seq_len=64)
    c.data.update(objective='span_corruption', inputs_len=64, seq_len=16, extra_ids=20)
    return c


@pytest.fixture(scope='module')
def sharded(shared_data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp('sharded')
    train(_cfg(shared_data_dir, **MESH), str(workdir))
    return workdir


def test_sharded_matches_single_device(sharded, shared_data_dir, tmp_path):
    train(_cfg(shared_data_dir), str(tmp_path), devices=jax.devices()[:1])
    single, losses = train_losses(tmp_path), train_losses(sharded)
    assert sorted(losses) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([losses[s] for s in sorted(losses)],
                               [single[s] for s in sorted(losses)], rtol=1e-5)
    assert losses[STEPS] < losses[1]


def test_resume_is_bitwise_identical(sharded, shared_data_dir, tmp_path, capsys):
    train(_cfg(shared_data_dir, steps=2, **MESH), str(tmp_path))
    capsys.readouterr()
    train(_cfg(shared_data_dir, **MESH), str(tmp_path))
    assert f'resumed from {tmp_path}/checkpoints/2' in capsys.readouterr().out
    resumed, full = train_losses(tmp_path), train_losses(sharded)
    assert [resumed[s] for s in (3, 4)] == [full[s] for s in (3, 4)]


def test_pipelined_training_matches_unpipelined(sharded, shared_data_dir, tmp_path, capsys):
    """Both stacks pipelined over 2 stages (4 microbatches) train like the unpipelined mesh."""
    cfg = _cfg(shared_data_dir, steps=2, **PIPELINED)
    cfg.pipeline.num_microbatches = 4
    train(cfg, str(tmp_path))
    assert 'pipeline: 2 stages x 1 repeat(s) x 1 layer(s)' in capsys.readouterr().out
    losses, reference = train_losses(tmp_path), train_losses(sharded)
    np.testing.assert_allclose([losses[1], losses[2]], [reference[1], reference[2]], rtol=1e-5)


def test_pipeline_needs_both_stacks_divisible(shared_data_dir):
    from jaxlm.config import ConfigError, validate

    cfg = _cfg(shared_data_dir, **PIPELINED)
    cfg.model.num_layers = 3  # of the encoder and of the decoder
    with pytest.raises(ConfigError, match=r'`model.num_layers` \(3\) must be divisible by '):
        validate(cfg, 8)


def test_parameters_shard_by_the_rule_table(shared_data_dir):
    from jax.sharding import PartitionSpec as P

    from jaxlm.config import validate
    from jaxlm.trainer.loop import compile_training

    cfg = _cfg(shared_data_dir, fsdp=4, tensor=2)
    sh = compile_training(cfg, jax.devices(), validate(cfg, 8)).state_shardings['params']
    decoder = sh['decoder']['layers']
    assert decoder['cross_attention']['query']['kernel'].spec == P(None, 'fsdp', 'tensor', None)
    assert decoder['mlp']['gate']['kernel'].spec == P(None, 'fsdp', 'tensor')
    assert sh['encoder']['relative_bias']['embedding'].spec == P(None, 'tensor')
    assert sh['lm_head'].spec == P('fsdp', 'tensor')
