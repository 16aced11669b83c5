"""The decoder-classifier family: a third registry entry built from the decoder's backbone and
a classification head."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxlm.config import ConfigError, default_config, validate
from jaxlm.models import params as param_lib
from jaxlm.models import registry
from jaxlm.models.config import ModelConfig

CFG = ModelConfig(architecture='decoder_classifier', vocab_size=64, num_layers=2, d_model=32,
                  num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64, max_seq_len=16,
                  num_classes=3, dtype='float32')
FAMILY = registry.get('decoder_classifier')


@pytest.fixture(scope='module')
def model_and_params():
    model = FAMILY.build(CFG)
    return model, nn.unbox(param_lib.init_boxed(model, jax.random.key(0), 16))


def test_backbone_is_the_decoders_with_a_classifier_kernel(model_and_params):
    _, params = model_and_params
    lm_params = param_lib.shapes(registry.get('decoder').build(CFG), 16)
    assert params['classifier'].shape == (CFG.d_model, CFG.num_classes)
    backbone = {k: v for k, v in params.items() if k != 'classifier'}
    assert jax.tree.map(np.shape, backbone) == jax.tree.map(
        np.shape, {k: v for k, v in lm_params.items() if k != 'lm_head'})
    assert sum(x.size for x in jax.tree.leaves(params)) == FAMILY.count_params(CFG)


def test_class_logits_come_from_each_rows_last_token(model_and_params):
    model, params = model_and_params
    tokens = np.array([[5, 9, 2, 7, 0, 0], [3, 4, 0, 0, 0, 0]], np.int32)
    segment_ids = (np.arange(6)[None] < np.array([[4], [2]])).astype(np.int32)
    batch = {'inputs': tokens, 'segment_ids': segment_ids,
             'positions': np.broadcast_to(np.arange(6)[None], (2, 6))}
    logits_BxC = FAMILY.apply(model, params, batch)
    assert logits_BxC.shape == (2, CFG.num_classes)
    for row, n in ((0, 4), (1, 2)):  # the same as the unpadded example alone
        alone = FAMILY.apply(model, params, {'inputs': tokens[row:row + 1, :n],
                                             'segment_ids': np.ones((1, n), np.int32),
                                             'positions': np.arange(n)[None]})
        np.testing.assert_allclose(logits_BxC[row], alone[0], atol=1e-5, rtol=1e-5)
    assert not np.allclose(logits_BxC[0], logits_BxC[1])
    assert jnp.isfinite(logits_BxC).all()


def test_no_language_modelling_objective_trains_class_logits():
    cfg = default_config()
    cfg.model.architecture = 'decoder_classifier'
    with pytest.raises(ConfigError, match="output 'class_logits'"):
        validate(cfg, 8)
