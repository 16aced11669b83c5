"""Sharded training equals unsharded training, and shardings are really applied."""

import jax
import numpy as np
import pytest
from conftest import small_config, train_losses

from jaxlm.trainer.loop import train

MESHES = {
    'data8': dict(data=8),
    'fsdp8': dict(fsdp=8),
    'fsdp4_tensor2': dict(fsdp=4, tensor=2),
    'data2_fsdp2_tensor2': dict(data=2, fsdp=2, tensor=2),
}


@pytest.fixture(scope='module')
def single_device_losses(shared_data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp('one')
    train(small_config(shared_data_dir), str(workdir), devices=jax.devices()[:1])
    return train_losses(workdir)


@pytest.mark.parametrize('mesh', list(MESHES))
def test_mesh_matches_single_device(mesh, single_device_losses, shared_data_dir, tmp_path):
    assert len(jax.devices()) == 8
    train(small_config(shared_data_dir, **MESHES[mesh]), str(tmp_path))
    losses = train_losses(tmp_path)
    assert sorted(losses) == [1, 2, 3]
    np.testing.assert_allclose([losses[s] for s in (1, 2, 3)],
                               [single_device_losses[s] for s in (1, 2, 3)], rtol=1e-5)
    # The run must actually learn something for the comparison to mean anything.
    assert losses[3] < losses[1]


def test_gradient_accumulation_matches_full_batch(single_device_losses, shared_data_dir, tmp_path):
    cfg = small_config(shared_data_dir, data=2, fsdp=2)
    cfg.optimizer.grad_accum_steps = 4
    train(cfg, str(tmp_path), devices=jax.devices()[:4])
    losses = train_losses(tmp_path)
    np.testing.assert_allclose([losses[s] for s in (1, 2, 3)],
                               [single_device_losses[s] for s in (1, 2, 3)], rtol=1e-5)


def test_parameters_and_optimizer_state_are_sharded(shared_data_dir):
    from jax.sharding import PartitionSpec as P

    from jaxlm.config import validate
    from jaxlm.trainer.loop import compile_training

    cfg = small_config(shared_data_dir, fsdp=4, tensor=2)
    setup = compile_training(cfg, jax.devices(), validate(cfg, 8))
    sh = setup.state_shardings
    # embed -> fsdp, mlp -> tensor on the stacked [layers, embed, mlp] kernel.
    assert sh['params']['layers']['mlp']['up']['kernel'].spec == P(None, 'fsdp', 'tensor')
    assert sh['params']['layers']['attention']['query']['kernel'].spec == P(
        None, 'fsdp', 'tensor', None)
    # Adam moments follow the parameters they track.
    mu = sh['opt_state'][1][0].mu
    assert mu['layers']['mlp']['up']['kernel'].spec == P(None, 'fsdp', 'tensor')
    assert sh['step'].spec == P()
    # The compiled step keeps the state layout (no resharding between steps).
    out_sh = setup.train_step.output_shardings[0]
    assert out_sh['params']['layers']['mlp']['up']['kernel'].spec == P(None, 'fsdp', 'tensor')
