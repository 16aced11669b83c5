"""Sliding-window attention (Mistral semantics: a query at i sees keys j with i - w < j <= i) in
training, packed and KV-cache paths, and RoPE frequency scaling ('linear', 'llama3') against
transformers' definitions."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.config import ConfigError, default_config, validate
from jaxlm.inference.decode import generate_with_logits
from jaxlm.layers.attention import attention_mask
from jaxlm.layers.cache import CacheView
from jaxlm.layers.positions import RopeScaling, rope, rope_inv_freq
from jaxlm.models.config import ModelConfig
from jaxlm.models.decoder import Transformer

BASE = ModelConfig(vocab_size=61, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                         head_dim=8, mlp_dim=64, max_seq_len=64, dtype=jnp.float32)
LLAMA32 = RopeScaling('llama3', factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                      original_max_seq_len=8192)


def _model(cfg, length=16):
    model = Transformer(cfg)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0),
                                          jnp.zeros((1, length), jnp.int32))['params'])
    return model, params, jax.jit(model.apply)


def test_masks_match_the_mistral_window():
    w, n = 3, 7
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    expected = (j <= i) & (i - j < w)
    got = np.asarray(attention_mask(jnp.ones((1, n), jnp.int32), w))[0, 0, 0]
    np.testing.assert_array_equal(got, expected)
    # Packed: the window applies within each document, never across.
    seg = jnp.array([[1, 1, 1, 1, 2, 2, 2]])
    got = np.asarray(attention_mask(seg, w))[0, 0, 0]
    same = np.asarray(seg[0][:, None] == seg[0][None, :])
    np.testing.assert_array_equal(got, expected & same)
    # Cache: by stored positions; empty slots (-1) stay hidden.
    keys = jnp.array([[-1, 0, 1, 2, 3, 4, 5]])
    view = CacheView(jnp.zeros((), jnp.int32), jnp.array([[5]]), keys)
    got = np.asarray(view.mask(w))[0, 0, 0, 0]
    np.testing.assert_array_equal(got, [False, False, False, False, True, True, True])
    np.testing.assert_array_equal(np.asarray(attention_mask(seg, 0)),
                                  np.asarray(attention_mask(seg)))


def test_window_hides_tokens_outside_it_and_sees_those_inside():
    w = 4
    model, params, apply = _model(dataclasses.replace(BASE, sliding_window=w))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (1, 16), 0, BASE.vocab_size)
    base = apply({'params': params}, tokens)
    i = 12
    # Changing a token before i - w + 1 moves nothing at i within one layer; with L layers the
    # receptive field is L * (w - 1) tokens, so change a token further back than that.
    far = i - BASE.num_layers * (w - 1) - 1
    changed = apply({'params': params}, tokens.at[0, far].set((tokens[0, far] + 1) % 61))
    np.testing.assert_allclose(changed[0, i:i + 1], base[0, i:i + 1], atol=1e-6)
    assert not np.allclose(changed[0, far], base[0, far])  # the changed position itself moves
    near = i - w + 1
    changed = apply({'params': params}, tokens.at[0, near].set((tokens[0, near] + 1) % 61))
    assert not np.allclose(changed[0, i], base[0, i], atol=1e-4)


def test_single_layer_window_is_exact():
    """One layer: position i depends on exactly tokens i - w + 1 .. i."""
    w = 3
    model, params, apply = _model(dataclasses.replace(BASE, num_layers=1, sliding_window=w))
    tokens = jax.random.randint(jax.random.PRNGKey(2), (1, 12), 0, BASE.vocab_size)
    base = apply({'params': params}, tokens)
    i = 9
    for j in range(i + 1):
        changed = apply({'params': params}, tokens.at[0, j].set((tokens[0, j] + 7) % 61))
        moved = not np.allclose(changed[0, i], base[0, i], atol=1e-6)
        assert moved == (i - j < w), (j, moved)


def test_window_at_least_length_equals_full_attention():
    _, params, full = _model(BASE)
    _, _, windowed = _model(dataclasses.replace(BASE, sliding_window=16))
    _, _, wider = _model(dataclasses.replace(BASE, sliding_window=1000))
    tokens = jax.random.randint(jax.random.PRNGKey(3), (2, 16), 0, BASE.vocab_size)
    ref = full({'params': params}, tokens)
    np.testing.assert_array_equal(windowed({'params': params}, tokens), ref)
    np.testing.assert_array_equal(wider({'params': params}, tokens), ref)


def test_kv_cache_generation_with_window_matches_full_recompute():
    cfg = dataclasses.replace(BASE, sliding_window=5)
    model, params, _ = _model(cfg)
    prompts = [[1, 5, 7, 3, 9, 2, 8], [2, 9, 11]]
    toks_c, logits_c = generate_with_logits(model, params, prompts, max_new_tokens=10,
                                            use_cache=True)
    toks_f, logits_f = generate_with_logits(model, params, prompts, max_new_tokens=10,
                                            use_cache=False)
    np.testing.assert_array_equal(toks_c, toks_f)
    np.testing.assert_allclose(logits_c, logits_f, atol=1e-4, rtol=1e-4)
    # And the window matters: full attention generates different logits.
    full_model, _, _ = _model(BASE)
    _, logits_full = generate_with_logits(full_model, params, prompts, max_new_tokens=10,
                                          use_cache=True)
    assert not np.allclose(logits_full, logits_c, atol=1e-4)


def _angles(x_len, positions, theta, scaling=None, d=8):
    """Recovers the rotation angles from rope applied to unit vectors on the first channel."""
    x = jnp.zeros((1, x_len, 1, d)).at[..., : d // 2].set(1.0)
    out = rope(x, positions, theta, scaling)
    return np.arctan2(np.asarray(out[0, :, 0, d // 2:]), np.asarray(out[0, :, 0, : d // 2]))


def test_none_scaling_is_unchanged():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 3, 16))
    pos = jnp.broadcast_to(jnp.arange(5) * 37, (2, 5))
    ref = rope(x, pos, 1e4)
    np.testing.assert_array_equal(rope(x, pos, 1e4, RopeScaling()), ref)
    np.testing.assert_array_equal(rope(x, pos, 1e4, None), ref)
    np.testing.assert_allclose(rope_inv_freq(16, 1e4), 1e4 ** (-np.arange(0, 16, 2) / 16),
                               rtol=1e-6)


def test_linear_scaling_equals_positions_divided_by_factor():
    f = 4.0
    pos = jnp.array([[0, 1, 3, 8, 21, 40]])
    scaled = _angles(6, pos, 1e4, RopeScaling('linear', factor=f))
    ref = _angles(6, pos / f, 1e4)
    np.testing.assert_allclose(scaled, ref, atol=1e-5)
    assert not np.allclose(scaled, _angles(6, pos, 1e4), atol=1e-3)


def test_llama3_inv_freq_matches_hand_reference():
    d, theta = 64, 500000.0
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    got = rope_inv_freq(d, theta, LLAMA32)
    for k, f in enumerate(inv):
        wavelen = 2 * math.pi / f
        if wavelen < 8192 / 4:  # high frequency: kept
            want = f
        elif wavelen > 8192 / 1:  # low frequency: divided by the factor
            want = f / 32
        else:
            s = (8192 / wavelen - 1) / (4 - 1)
            want = (1 - s) * f / 32 + s * f
        np.testing.assert_allclose(got[k], want, rtol=1e-5, err_msg=str(k))
    # The three regimes are all exercised for Llama 3.2's head_dim 64 / theta 5e5.
    wl = 2 * math.pi / inv
    assert (wl < 2048).any() and (wl > 8192).any() and ((wl >= 2048) & (wl <= 8192)).any()


@pytest.mark.parametrize('scaling', [
    RopeScaling('linear', factor=8.0),
    LLAMA32,
    RopeScaling('llama3', factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                original_max_seq_len=8192),
])
def test_inv_freq_matches_transformers(scaling):
    torch = pytest.importorskip('torch')
    rope_utils = pytest.importorskip('transformers.modeling_rope_utils')
    from transformers import LlamaConfig

    d, theta = 64, 500000.0
    params = {'rope_type': scaling.kind, 'rope_theta': theta, 'factor': scaling.factor}
    if scaling.kind == 'llama3':
        params.update(low_freq_factor=scaling.low_freq_factor,
                      high_freq_factor=scaling.high_freq_factor,
                      original_max_position_embeddings=scaling.original_max_seq_len)
    hf_cfg = LlamaConfig(hidden_size=d * 4, num_attention_heads=4, head_dim=d,
                         max_position_embeddings=131072, rope_parameters=params)
    ref, attention_factor = rope_utils.ROPE_INIT_FUNCTIONS[scaling.kind](hf_cfg, 'cpu')
    assert attention_factor == 1.0
    ref = ref.to(torch.float32).numpy()
    np.testing.assert_allclose(rope_inv_freq(d, theta, scaling), ref, rtol=1e-6)


def test_model_with_rope_scaling_runs_and_differs():
    _, params, plain = _model(BASE)
    _, _, scaled = _model(dataclasses.replace(BASE, rope_scaling=RopeScaling('linear', 2.0)))
    tokens = jax.random.randint(jax.random.PRNGKey(4), (1, 16), 0, BASE.vocab_size)
    a, b = plain({'params': params}, tokens), scaled({'params': params}, tokens)
    assert np.isfinite(np.asarray(b)).all() and not np.allclose(a, b, atol=1e-5)
    hash(dataclasses.replace(BASE, rope_scaling=LLAMA32, sliding_window=4))


def test_config_fields_defaults_and_validation():
    c = default_config()
    cfg = ModelConfig.from_config(c.model)
    assert cfg.sliding_window == 0 and cfg.rope_scaling == RopeScaling()
    c.model.sliding_window = 128
    c.model.rope_scaling.update(kind='llama3', factor=32.0, original_max_seq_len=8192)
    validate(c, 1)
    cfg = ModelConfig.from_config(c.model)
    assert cfg.sliding_window == 128
    assert cfg.rope_scaling == RopeScaling('llama3', 32.0, 1.0, 4.0, 8192)
    hash(cfg)
    bad = default_config()
    bad.model.sliding_window = -1
    with pytest.raises(ConfigError, match=r'model\.sliding_window'):
        validate(bad, 1)
    for key, value, match in [('kind', 'yarn', 'model.rope_scaling.kind'),
                              ('factor', 0.0, 'model.rope_scaling.factor')]:
        bad = default_config()
        bad.model.rope_scaling[key] = value
        with pytest.raises(ConfigError, match=match.replace('.', r'\.')):
            validate(bad, 1)


def test_llama_1b_experiment_sets_llama32_scaling():
    import importlib
    cfg = importlib.import_module('experiments.llama_1b').get_config()
    assert ModelConfig.from_config(cfg.model).rope_scaling == LLAMA32
