"""Parameters-only checkpoints written leaf by leaf (`save_params`) and read by `restore_params`."""

from __future__ import annotations

import gc
import os
import weakref

import jax
import numpy as np
import pytest

from jaxlm.checkpoints import CheckpointError, restore_params, save_params


def _tree() -> dict:
    rng = np.random.default_rng(0)
    return {'embed': rng.standard_normal((16, 8), np.float32),
            'layers': {'attention': {'query': rng.standard_normal((2, 8, 4), np.float32)},
                       'mlp': {'up': rng.standard_normal((2, 8, 32), np.float32)}},
            'final_norm': {'scale': np.ones(8, np.float32)}}


def _leaves(tree: dict, prefix: tuple = ()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def test_streamed_save_restores_exactly_and_releases_each_leaf(tmp_path):
    expected = _tree()
    released = []

    def stream():
        # Fresh copies: once save_params has written a leaf, nothing may keep it alive.
        previous = None
        for path, value in _leaves(expected):
            if previous is not None:
                gc.collect()
                released.append(previous() is None)
            arr = value.copy()
            previous = weakref.ref(arr)
            yield path, arr
            del arr

    save_params(str(tmp_path / 'params'), 0, stream())
    assert released == [True] * 3
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                            expected)
    step, restored = restore_params(str(tmp_path / 'params'), abstract)
    assert step == 0
    jax.tree.map(np.testing.assert_array_equal, restored, expected)
    assert os.listdir(tmp_path) == ['params']  # the staging directory is gone


def test_failed_stream_leaves_nothing_and_existing_step_is_kept(tmp_path):
    def broken():
        yield ('embed',), np.zeros(3, np.float32)
        raise ValueError('tensor 7 is corrupt')

    with pytest.raises(ValueError, match='tensor 7 is corrupt'):
        save_params(str(tmp_path / 'params'), 0, broken())
    assert os.listdir(tmp_path) == []

    save_params(str(tmp_path / 'params'), 0, _leaves(_tree()))
    with pytest.raises(CheckpointError, match='already exists'):
        save_params(str(tmp_path / 'params'), 0, _leaves(_tree()))
