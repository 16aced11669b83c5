"""HF T5.1.1 (T5ForConditionalGeneration, gated GELU) <-> jaxlm's encoder-decoder: logits parity
and a bit-identical round trip, on a tiny random transformers model (no download)."""

from __future__ import annotations

import os

os.environ['HF_HUB_OFFLINE'] = '1'
os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')

import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from jaxlm.interop import hf as hf_lib  # noqa: E402

# T5 checkpoints may also store the stacks' views of the shared embedding.
TIED_COPIES = ('encoder.embed_tokens.weight', 'decoder.embed_tokens.weight')


@pytest.fixture(scope='module', params=[False, True], ids=['t5_1_1_unscaled', 't5_scaled'])
def converted(request, tmp_path_factory):
    root = tmp_path_factory.mktemp('t5')
    hf_dir, workdir = str(root / 'hf'), str(root / 'run')
    cfg = transformers.T5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2,
                                num_heads=4, relative_attention_num_buckets=8,
                                relative_attention_max_distance=20, feed_forward_proj='gated-gelu',
                                tie_word_embeddings=request.param, dropout_rate=0.0,
                                decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # HF initialises the norms to ones: make them matter
        for name, p in model.named_parameters():
            if 'layer_norm' in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(hf_dir, safe_serialization=True)
    hf_lib.from_hf(hf_dir, workdir)
    from jaxlm.inference.load import load_run

    return hf_dir, workdir, model, load_run(workdir)


def test_logits_match(converted):
    _, _, model, run = converted
    rng = np.random.default_rng(0)
    # Long enough (40 > max_distance 20) to reach the logarithmic buckets.
    enc, dec = rng.integers(2, 96, (2, 40)), rng.integers(2, 96, (2, 30))
    enc_mask = np.ones_like(enc)
    enc_mask[1, 25:] = 0  # padding in the second row
    with torch.no_grad():
        want = model(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc_mask),
                     decoder_input_ids=torch.tensor(dec)).logits.numpy()
    got = np.asarray(run.model.apply({'params': run.params}, enc, dec, enc_mask,
                                     np.ones_like(dec)))
    diff = float(np.abs(got - want).max())
    print(f'T5 scaled={model.config.scale_decoder_outputs}: max |logits diff| = {diff:.2e}')
    assert diff <= 1e-4, diff


def test_round_trip_bit_identical(converted, tmp_path):
    from safetensors import safe_open

    hf_dir, workdir, model, _ = converted
    out = str(tmp_path / 'back')
    hf = hf_lib.to_hf(workdir, out)
    assert hf['architectures'] == ['T5ForConditionalGeneration']
    with safe_open(os.path.join(hf_dir, 'model.safetensors'), framework='numpy') as a, \
            safe_open(os.path.join(out, 'model.safetensors'), framework='numpy') as b:
        theirs = set(a.keys()) - set(TIED_COPIES)
        # transformers >= 5 stores a T5.1.1's (unscaled, tied) head only as `shared`; jaxlm
        # writes it out as the untied lm_head it is.
        extra = set() if 'lm_head.weight' in theirs or model.config.scale_decoder_outputs \
            else {'lm_head.weight'}
        assert set(b.keys()) == theirs | extra
        for name in theirs:
            x, y = a.get_tensor(name), b.get_tensor(name)
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert x.tobytes() == y.tobytes(), name
        for name in extra:
            assert b.get_tensor(name).tobytes() == a.get_tensor('shared.weight').tobytes()
    back = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        np.testing.assert_array_equal(back(input_ids=ids, decoder_input_ids=ids).logits.numpy(),
                                      model(input_ids=ids, decoder_input_ids=ids).logits.numpy())


def test_relu_t5_is_rejected():
    with pytest.raises(hf_lib.ConversionError, match='gated-gelu'):
        hf_lib.model_fields({'architectures': ['T5ForConditionalGeneration'],
                             'feed_forward_proj': 'relu', 'num_layers': 2})
