"""Sampling: greedy equals step-by-step argmax, batching prompts of different lengths changes
nothing, seeded sampling is reproducible."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.inference.decode import generate
from jaxlm.models.transformer import Transformer, TransformerConfig

CFG = TransformerConfig(vocab_size=50, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                        head_dim=8, mlp_dim=64, max_seq_len=64, dtype=jnp.float32)


def _model():
    model = Transformer(CFG)
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
