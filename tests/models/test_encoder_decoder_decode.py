"""Cached decoding of the encoder-decoder (T5): the prompt encoded once, the decoder stepped over a
KV cache, cross-attention keys/values projected once. Greedy tokens equal the argmax of the full
training forward token by token, the uncached reference path, and transformers'
`T5ForConditionalGeneration.generate` on a converted tiny model (no download)."""

import os

os.environ['HF_HUB_OFFLINE'] = '1'
os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.inference.decode import generate, generate_with_logits
from jaxlm.models.config import ModelConfig
from jaxlm.models.encoder_decoder import DECODER_START, EncoderDecoder

# num_kv_heads < num_heads: grouped cross-attention too. A large init spreads the predictions.
CFG = ModelConfig(vocab_size=64, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                  head_dim=8, mlp_dim=64, max_seq_len=32, architecture='encoder_decoder',
                  norm_eps=1e-6, mlp='geglu', positions='t5_relative', dtype=jnp.float32,
                  init_std=0.5)
MODEL = EncoderDecoder(CFG)
PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 1], [12, 13, 1], [40, 41, 42, 43, 1]]
NEW = 8


@pytest.fixture(scope='module')
def params():
    tokens = jnp.zeros((1, 8), jnp.int32)
    return nn.unbox(jax.jit(MODEL.init)(jax.random.PRNGKey(0), tokens, tokens)['params'])


def test_cached_greedy_equals_full_forward_argmax(params):
    tokens, logits = generate_with_logits(MODEL, params, PROMPTS, max_new_tokens=NEW)
    assert len({tuple(t) for t in tokens}) > 1  # the prompts matter
    # One forward of the right-padded prompts (encoder padding masked by segment id 0) and of
    # each row's start token + generated tokens.
    encoder = np.zeros((len(PROMPTS), max(map(len, PROMPTS))), np.int32)
    for i, p in enumerate(PROMPTS):
        encoder[i, :len(p)] = p
    decoder = np.concatenate([np.full((len(PROMPTS), 1), DECODER_START), tokens[:, :-1]], 1)
    want = np.asarray(jax.jit(MODEL.apply)({'params': params}, encoder, decoder,
                                          (encoder != 0).astype(np.int32)))
    np.testing.assert_array_equal(want.argmax(-1), tokens)
    np.testing.assert_allclose(logits, want, atol=2e-4, rtol=1e-4)


def test_batch_padding_and_reference_path_agree(params):
    """Left padding of a short prompt in the batch changes nothing; nor does the cache."""
    batched = generate(MODEL, params, PROMPTS, max_new_tokens=NEW)
    assert batched[1] == generate(MODEL, params, [PROMPTS[1]], max_new_tokens=NEW)[0]
    assert batched == generate(MODEL, params, PROMPTS, max_new_tokens=NEW, use_cache=False)


def test_greedy_equals_transformers_generate(tmp_path):
    torch = pytest.importorskip('torch')
    transformers = pytest.importorskip('transformers')
    from jaxlm.inference.load import load_run
    from jaxlm.interop import hf as hf_lib

    cfg = transformers.T5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2,
                                num_heads=4, relative_attention_num_buckets=8,
                                relative_attention_max_distance=20, feed_forward_proj='gated-gelu',
                                tie_word_embeddings=False, dropout_rate=0.0,
                                decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # a wide init, so that greedy paths differ between prompts
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.save_pretrained(str(tmp_path / 'hf'), safe_serialization=True)
    hf_lib.from_hf(str(tmp_path / 'hf'), str(tmp_path / 'run'))
    run = load_run(str(tmp_path / 'run'))
    prompts = [[5, 6, 7, 8, 9, 10, 11, 12, 1], [30, 31, 1]]
    ids = np.zeros((2, 9), np.int64)
    for i, p in enumerate(prompts):
        ids[i, :len(p)] = p
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(ids != 0),
                             max_new_tokens=12, do_sample=False, num_beams=1).numpy()
    want = [[t for t in row[1:]] for row in out.tolist()]  # after the start token
    want = [row[:row.index(1)] if 1 in row else row for row in want]  # before EOS, no padding
    got = generate(run.model, run.params, prompts, max_new_tokens=12, eos_id=1)
    assert got == want and len(set(map(tuple, got))) > 1
