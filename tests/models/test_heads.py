"""Heads compose with the decoder backbone: same backbone parameters, the head's own on top."""

import dataclasses

import jax
import numpy as np
from flax import linen as nn

from jaxlm.config import default_config
from jaxlm.models.config import ModelConfig
from jaxlm.models.decoder import Transformer
from jaxlm.models.heads import LMHead, ScalarHead

CFG = ModelConfig(vocab_size=64, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                  head_dim=8, mlp_dim=64, max_seq_len=16, dtype='float32')
TOKENS = np.array([[5, 9, 2, 7, 1, 3]], np.int32)


def _init(model):
    return nn.unbox(model.init(jax.random.key(0), TOKENS)['params'])


def test_scalar_heads_share_the_backbone_and_read_its_last_hidden_state():
    lm_params = _init(Transformer(CFG))
    for name in ('score', 'value'):
        model = Transformer(CFG, head=ScalarHead(name))
        params = _init(model)
        assert params[name].shape == (CFG.d_model, 1)
        backbone = {k: v for k, v in params.items() if k != name}
        assert jax.tree.map(np.shape, backbone) == jax.tree.map(
            np.shape, {k: v for k, v in lm_params.items() if k != 'lm_head'})
        # With the LM head's kernel column 0 as the scalar kernel, the scalar is that logit.
        as_lm_head = {**backbone, 'lm_head': np.tile(params[name], (1, CFG.vocab_size))}
        scores = model.apply({'params': params}, TOKENS)
        logits = Transformer(CFG).apply({'params': as_lm_head}, TOKENS)
        assert scores.shape == TOKENS.shape
        np.testing.assert_allclose(scores, logits[..., 0], rtol=1e-5, atol=1e-6)


def test_tied_lm_head_rescales_only_when_asked():
    cfg = dataclasses.replace(CFG, tie_embeddings=True)
    params = _init(Transformer(cfg))
    plain = Transformer(cfg).apply({'params': params}, TOKENS)
    rescaled = Transformer(cfg, head=LMHead(rescale_tied=True)).apply({'params': params}, TOKENS)
    np.testing.assert_allclose(rescaled, plain * CFG.d_model ** -0.5, rtol=1e-5, atol=1e-6)


def test_the_model_schema_is_the_config_section():
    """One definition: every ModelConfig field is a `model` config field with the same default,
    and nothing else is."""
    section = default_config().model
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    assert set(section.keys()) == fields
    assert ModelConfig.from_config(section) == ModelConfig()
