"""Pipelined training (mesh.stage > 1) trains exactly like the sequential model, and its
checkpoints restore onto a non-pipelined mesh and back."""

import shutil

import jax
import numpy as np
import pytest
from conftest import small_config, train_losses

from jaxlm.config import ConfigError, validate
from jaxlm.trainer.loop import train

PIPELINED = dict(data=2, stage=2, fsdp=2)
PLAIN = dict(data=2, fsdp=2, tensor=2)


def _cfg(data_dir, steps, **mesh):
    c = small_config(data_dir, **mesh)
    c.num_train_steps = steps
    c.checkpoint_every_steps = 2
    c.eval_every_steps = 1000
    c.pipeline.num_microbatches = 4
    return c


@pytest.fixture(scope='module')
def plain_run(shared_data_dir, tmp_path_factory):
    """4 steps on a non-pipelined mesh, checkpoints at 2 and 4."""
    workdir = tmp_path_factory.mktemp('plain')
    train(_cfg(shared_data_dir, 4, **PLAIN), str(workdir))
    return workdir, train_losses(workdir)


def _close(losses, reference, steps):
    np.testing.assert_allclose([losses[s] for s in steps], [reference[s] for s in steps],
                               rtol=1e-5)


def test_pipelined_training_matches_and_checkpoints_cross_meshes(plain_run, shared_data_dir,
                                                                 tmp_path, capsys):
    plain_dir, reference = plain_run
    piped = tmp_path / 'piped'
    train(_cfg(shared_data_dir, 2, **PIPELINED), str(piped))
    assert 'pipeline: 2 stages x 1 repeat(s) x 1 layer(s)' in capsys.readouterr().out
    _close(train_losses(piped), reference, (1, 2))

    # pipelined checkpoint (step 2) -> non-pipelined mesh
    to_plain = tmp_path / 'to_plain'
    shutil.copytree(piped, to_plain)
    train(_cfg(shared_data_dir, 4, **PLAIN), str(to_plain))
    assert 'resumed from' in capsys.readouterr().out
    _close(train_losses(to_plain), reference, (3, 4))

    # non-pipelined checkpoint (step 2) -> pipelined mesh
    to_piped = tmp_path / 'to_piped'
    shutil.copytree(plain_dir, to_piped)
    shutil.rmtree(to_piped / 'checkpoints' / '4')
    train(_cfg(shared_data_dir, 4, **PIPELINED), str(to_piped))
    assert 'resumed from' in capsys.readouterr().out
    _close(train_losses(to_piped), reference, (3, 4))


@pytest.mark.parametrize('change,message', [
    (dict(layers=3), r'`model.num_layers` \(3\) must be divisible by mesh.stage x '
                     r'pipeline.num_repeats = 2 x 1'),
    (dict(layers=4, repeats=4), r'`model.num_layers` \(4\) must be divisible'),
    (dict(micro=3), r'`pipeline.num_microbatches` \(3\) must divide the rows'),
    (dict(micro=8), r'`pipeline.num_microbatches` \(8\) must divide the rows'),
    (dict(layers=4, repeats=2, micro=1), r'must be >= mesh.stage \(2\)'),
])
def test_config_errors_name_the_problem(change, message, shared_data_dir):
    cfg = _cfg(shared_data_dir, 1, **PIPELINED)  # 16 rows / (data 2 x fsdp 2) = 4 per shard
    cfg.model.num_layers = change.get('layers', 2)
    cfg.pipeline.num_repeats = change.get('repeats', 1)
    cfg.pipeline.num_microbatches = change.get('micro', 4)
    with pytest.raises(ConfigError, match=message):
        validate(cfg, len(jax.devices()))
