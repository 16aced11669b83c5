"""Sampling: greedy equals step-by-step argmax, batching prompts of different lengths changes
nothing, seeded sampling is reproducible."""

import dataclasses
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.errors import UserError
from jaxlm.inference.decode import SamplingError, generate
from jaxlm.models.config import ModelConfig
from jaxlm.models.decoder import Transformer

CFG = ModelConfig(vocab_size=50, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                        head_dim=8, mlp_dim=64, max_seq_len=64, dtype=jnp.float32)


def _model(cfg=CFG):
    model = Transformer(cfg)
    params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))['params'])
    return model, params


def test_greedy_matches_manual_argmax_and_batching():
    model, params = _model()
    prompts = [[1, 5, 7], [2, 9, 11, 13, 4, 6]]
    out = generate(model, params, prompts, max_new_tokens=6)
    apply = jax.jit(model.apply)
    for prompt, got in zip(prompts, out, strict=True):
        seq = list(prompt)
        for _ in range(6):
            seq.append(int(jnp.argmax(apply({'params': params}, jnp.array([seq]))[0, -1])))
        assert got == seq[len(prompt):]
        assert generate(model, params, [prompt], max_new_tokens=6) == [got]


def test_sampling_is_seeded_and_eos_stops():
    model, params = _model()
    kw = dict(max_new_tokens=10, temperature=1.0, top_k=5)
    a = generate(model, params, [[1, 2, 3]], seed=1, **kw)
    assert a == generate(model, params, [[1, 2, 3]], seed=1, **kw)
    assert a != generate(model, params, [[1, 2, 3]], seed=2, **kw)
    eos = a[0][3]
    cut = generate(model, params, [[1, 2, 3]], seed=1, eos_id=eos, **kw)[0]
    assert cut == a[0][:a[0].index(eos)]
    assert np.all(np.asarray(a) < CFG.vocab_size)


@pytest.mark.parametrize('kwargs,message', [
    ({'temperature': -0.5}, 'temperature must be >= 0'),
    ({'temperature': float('nan')}, 'temperature must be >= 0'),
    ({'top_p': 0.0}, r'top_p must be in \(0, 1\]'),
    ({'top_p': 1.5}, r'top_p must be in \(0, 1\]'),
    ({'top_k': -1}, 'top_k must be >= 0'),
    ({'max_new_tokens': 0}, 'max_new_tokens must be >= 1'),
])
def test_bad_sampling_arguments_are_user_errors(kwargs, message):
    model, params = _model()
    kwargs = {'max_new_tokens': 4, 'temperature': 1.0} | kwargs
    with pytest.raises(SamplingError, match=message) as e:
        generate(model, params, [[1, 2, 3]], **kwargs)
    assert isinstance(e.value, UserError)


def test_tiny_top_p_keeps_only_the_most_likely_token():
    model, params = _model()
    greedy = generate(model, params, [[1, 2, 3], [4, 5]], max_new_tokens=8)
    for seed in range(3):
        assert generate(model, params, [[1, 2, 3], [4, 5]], max_new_tokens=8, temperature=1.0,
                        top_p=1e-9, seed=seed) == greedy


def test_prompt_beyond_the_trained_context(caplog):
    """Relative positions (RoPE) extrapolate with a one-line warning; learned ones cannot."""
    model, params = _model()
    prompt = list(range(1, 50)) + list(range(1, 20))  # 68 tokens, max_seq_len 64
    with caplog.at_level(logging.WARNING):
        assert len(generate(model, params, [prompt], max_new_tokens=2)[0]) == 2
    warnings = [r.getMessage() for r in caplog.records if 'trained context' in r.getMessage()]
    assert len(warnings) == 1 and '\n' not in warnings[0] and 'rope' in warnings[0], warnings
    model, params = _model(dataclasses.replace(CFG, positions='learned'))
    with pytest.raises(SamplingError, match=r'beyond the trained context \(model.max_seq_len 64\)'):
        generate(model, params, [prompt], max_new_tokens=2)
