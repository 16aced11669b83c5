"""KV-cache decoding: the same greedy tokens and (float32) logits as full recomputation, for MHA,
GQA and MQA, for a batch of prompts of different lengths and for each prompt alone; seeded
sampling; top-p; stop tokens; bucketed compilation; a sharded run."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.inference import decode
from jaxlm.inference.decode import generate, generate_with_logits, top_p_filter
from jaxlm.models.config import ModelConfig
from jaxlm.models.decoder import CachedTransformer, Transformer, init_cache

PROMPTS = [[1, 5, 7], [2, 9, 11, 13, 4, 6, 8, 3, 2, 10], [7], [4, 4, 12, 30, 2]]
NEW = 7
TOL = 1e-5


def _config(**kw):
    base = dict(vocab_size=50, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, head_dim=8,
                mlp_dim=64, max_seq_len=64, dtype=jnp.float32)
    return ModelConfig(**{**base, **kw})


_PARAMS = {}


def _model(**kw):
    cfg = _config(**kw)
    if cfg not in _PARAMS:
        model = Transformer(cfg)
        boxed = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))['params']
        _PARAMS[cfg] = nn.unbox(boxed)
    return Transformer(cfg), _PARAMS[cfg]


CONFIGS = {
    'mha': dict(num_kv_heads=4),
    'gqa': dict(num_kv_heads=2),
    'mqa': dict(num_kv_heads=1, qk_norm=True),
    'gpt2_learned': dict(num_kv_heads=4, positions='learned', norm='layernorm', mlp='gelu',
                         use_bias=True, tie_embeddings=True),
    # A score bias (T5; ALiBi takes the same path) computed from the cached positions.
    't5_relative': dict(positions='t5_relative', mlp='geglu'),
}


@pytest.mark.parametrize('name', list(CONFIGS))
def test_cache_matches_full_recompute_batched_and_alone(name):
    model, params = _model(**CONFIGS[name])
    ref_tok, ref_logits = generate_with_logits(model, params, PROMPTS, max_new_tokens=NEW,
                                               use_cache=False)
    tok, logits = generate_with_logits(model, params, PROMPTS, max_new_tokens=NEW)
    np.testing.assert_array_equal(tok, ref_tok)
    np.testing.assert_allclose(logits, ref_logits, atol=TOL, rtol=0)
    for i, prompt in enumerate(PROMPTS):
        alone_tok, alone_logits = generate_with_logits(model, params, [prompt],
                                                       max_new_tokens=NEW)
        np.testing.assert_array_equal(alone_tok[0], tok[i])
        np.testing.assert_allclose(alone_logits[0], logits[i], atol=TOL, rtol=0)
    # generate() is the same tokens, as lists.
    assert generate(model, params, PROMPTS, max_new_tokens=NEW) == tok.tolist()


def test_right_padded_prefill_through_the_model_api():
    """The cache mask works from stored positions, so right padding (position -1 on the pads)
    gives every row the logits of its prompt alone, as left padding does in generate()."""
    model, params = _model()
    prompts = [[3, 8, 1, 9, 22, 5], [6, 2]]
    width = 8
    buf = np.zeros((2, width), np.int32)
    pos = np.full((2, width), -1, np.int32)
    for i, p in enumerate(prompts):
        buf[i, :len(p)] = p
        pos[i, :len(p)] = np.arange(len(p))
    decoder = CachedTransformer(model.cfg)
    cache = init_cache(model.cfg, 2, 16)
    logits, cache = decoder.apply({'params': params}, jnp.asarray(buf), cache, pos)
    nxt = np.array([[17], [23]], np.int32)  # one decode step at each row's next position
    step, _ = decoder.apply({'params': params}, jnp.asarray(nxt), cache, np.array([[6], [2]]))
    for i, p in enumerate(prompts):
        full = model.apply({'params': params}, jnp.asarray([p + [int(nxt[i, 0])]]))[0]
        np.testing.assert_allclose(logits[i, :len(p)], full[:len(p)], atol=TOL, rtol=0)
        np.testing.assert_allclose(step[i, 0], full[len(p)], atol=TOL, rtol=0)


def test_sampling_is_seeded_cache_and_no_cache():
    model, params = _model()
    for kw in (dict(temperature=1.0), dict(temperature=0.7, top_k=5),
               dict(temperature=1.3, top_p=0.9), dict(temperature=1.0, top_k=20, top_p=0.8)):
        for use_cache in (True, False):
            a = generate(model, params, PROMPTS, max_new_tokens=12, seed=1, use_cache=use_cache,
                         **kw)
            assert a == generate(model, params, PROMPTS, max_new_tokens=12, seed=1,
                                 use_cache=use_cache, **kw), (kw, use_cache)
            assert a != generate(model, params, PROMPTS, max_new_tokens=12, seed=2,
                                 use_cache=use_cache, **kw), (kw, use_cache)
            assert all(0 <= t < model.cfg.vocab_size for row in a for t in row)


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = np.array([[0.05, 0.5, 0.15, 0.3], [0.25, 0.25, 0.25, 0.25]], np.float32)
    logits = jnp.log(jnp.asarray(probs))
    def kept(p):
        return np.isfinite(np.asarray(top_p_filter(logits, p)))

    # 0.5 < 0.75 <= 0.5 + 0.3: the two most likely tokens.
    assert kept(0.75)[0].tolist() == [False, True, False, True]
    # 0.8 < 0.85 <= 0.95: three tokens.
    assert kept(0.85)[0].tolist() == [False, True, True, True]
    # p below the top probability still keeps the top token; 1.0 keeps all.
    assert kept(0.1)[0].tolist() == [False, True, False, False]
    assert kept(1.0).all()
    # Ties with the last kept probability are kept.
    assert kept(0.3)[1].all()
    # Sampling under top_p only ever returns kept tokens.
    draws = jax.vmap(lambda k: decode.sample_logits(logits[:1], k, 1.0, 0, 0.75))(
        jax.random.split(jax.random.PRNGKey(0), 200))
    assert set(np.asarray(draws).ravel().tolist()) == {1, 3}


def test_stop_tokens_and_sequences_cut():
    model, params = _model()
    kw = dict(max_new_tokens=12, temperature=1.0, top_k=10, seed=3)
    full = generate(model, params, PROMPTS, **kw)
    row = full[1]
    stop = row[4]
    cut = generate(model, params, PROMPTS, stop_token_ids=[stop], **kw)
    for got, ref in zip(cut, full, strict=True):
        assert got == (ref[:ref.index(stop)] if stop in ref else ref)
    assert generate(model, params, PROMPTS, eos_id=stop, **kw) == cut
    seq = row[5:7]
    by_seq = generate(model, params, PROMPTS, stop_sequences=[seq], **kw)
    assert by_seq[1] == row[:5]
    # Every row stopping at once ends the loop early; the outputs are unaffected.
    firsts = [r[0] for r in full]
    assert generate(model, params, PROMPTS, stop_token_ids=firsts, **kw) == [[]] * len(PROMPTS)


def test_prompt_lengths_in_one_bucket_compile_once():
    model, params = _model(num_kv_heads=1)
    decode._cached_decoder.cache_clear()
    generate(model, params, [[1, 2, 3, 4, 5]], max_new_tokens=3)
    generate(model, params, [[1, 2, 3, 4, 5, 6, 7, 8, 9]], max_new_tokens=4)
    generate(model, params, [[9]], max_new_tokens=6)
    info = decode._cached_decoder.cache_info()
    assert info.currsize == 1
    # prompts bucket to 16 slots, prompt + new tokens to 32 cache slots
    run = decode._cached_decoder(model, 0.0, 0, 1.0, False, 32, None, None)
    assert run._cache_size() == 1


def test_errors_name_the_problem():
    model, params = _model(positions='learned')
    with pytest.raises(ValueError, match='at least one token'):
        generate(model, params, [[1, 2], []], max_new_tokens=2)
    with pytest.raises(ValueError, match='max_seq_len'):
        generate(model, params, [[1] * 60], max_new_tokens=5)
    # RoPE has no table: it may run past max_seq_len (the bucket is then not capped).
    model, params = _model()
    assert len(generate(model, params, [[1] * 60], max_new_tokens=5)[0]) == 5


def test_sharded_generation_matches_single_device():
    from jaxlm.config import DEFAULT_LOGICAL_AXIS_RULES
    from jaxlm.sharding import make_mesh

    if len(jax.devices()) < 8:
        pytest.skip('needs 8 devices')
    model, params = _model()
    mesh = make_mesh({'data': 2, 'fsdp': 2, 'tensor': 2})
    ref_tok, ref_logits = generate_with_logits(model, params, PROMPTS[:3], max_new_tokens=NEW)
    tok, logits = generate_with_logits(model, params, PROMPTS[:3], max_new_tokens=NEW, mesh=mesh,
                                       rules=DEFAULT_LOGICAL_AXIS_RULES)
    np.testing.assert_array_equal(tok, ref_tok)
    np.testing.assert_allclose(logits, ref_logits, atol=TOL, rtol=0)
