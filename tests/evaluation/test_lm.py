"""JaxLM scoring: exact values, padding invariance, rolling windows, the context boundary."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.data.tokenizers import ByteTokenizer
from jaxlm.evaluation.lm import JaxLM, rolling_token_windows
from jaxlm.models.config import ModelConfig
from jaxlm.models.decoder import Transformer

CFG = ModelConfig(vocab_size=259, num_layers=1, d_model=32, num_heads=4, num_kv_heads=2,
                        head_dim=8, mlp_dim=64, max_seq_len=64, dtype=jnp.float32)


@pytest.fixture(scope='module')
def lm():
    model = Transformer(CFG)
    params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))['params'])
    return JaxLM(model, params, ByteTokenizer(), batch_size=4)


def _manual(lm, context_tokens, cont_tokens):
    seq = jnp.array([context_tokens + cont_tokens])
    logp = jax.nn.log_softmax(lm.model.apply({'params': lm.params}, seq)[0], axis=-1)
    n = len(context_tokens)
    return float(sum(logp[n - 1 + i, t] for i, t in enumerate(cont_tokens)))


def test_loglikelihood_equals_manual_sum(lm):
    (lp, _), = lm.loglikelihood([('The cat', ' sat')])
    tok = lm.tokenizer
    assert lp == pytest.approx(_manual(lm, [tok.bos_id] + tok.encode('The cat'),
                                       tok.encode(' sat')), abs=1e-4)


def test_padding_and_batch_mates_never_change_a_score(lm):
    request = ('Question: why?', ' because')
    alone = lm.loglikelihood([request])[0]
    mixed = lm.loglikelihood([('a', ' b'), ('a much longer context than the others', ' x'),
                              request, ('xy', ' z' * 9), ('q', ' r')])
    assert mixed[2] == alone  # identical, not approximately equal


def test_trailing_whitespace_moves_to_the_continuation(lm):
    ctx, cont = lm.encode_pair('Answer: ', 'yes')
    ctx2, cont2 = lm.encode_pair('Answer:', ' yes')
    assert (ctx, cont) == (ctx2, cont2)
    assert lm.tokenizer.decode(cont) == ' yes'


def test_rolling_windows_predict_every_token_once():
    tokens = list(range(10, 23))
    windows = list(rolling_token_windows(tokens, prefix_token=1, max_seq_len=5))
    predicted = [t for _, cont in windows for t in cont]
    assert predicted == tokens
    for ctx, cont in windows:
        assert len(ctx) + len(cont) - 1 <= 5
    assert windows[0][0] == [1]  # the first window is conditioned on the prefix token only


def test_rolling_equals_plain_loglikelihood_when_it_fits(lm):
    text = 'To be, or not to be'
    total = lm.loglikelihood_rolling([text])[0]
    tok = lm.tokenizer
    assert total == pytest.approx(_manual(lm, [tok.bos_id], tok.encode(text)), abs=1e-4)
    # Longer than the context: windows of 64 tokens still cover every token exactly once.
    long = 'abcdefghij' * 20
    assert np.isfinite(lm.loglikelihood_rolling([long])[0])


def test_generate_until_cuts_at_stop_strings(lm):
    out = lm.generate_until([('Hello', {'until': [], 'max_gen_toks': 12})])[0]
    assert 2 < len(out) <= 12  # byte tokenizer: at most one character per new token
    stop = out[1:3]
    cut = lm.generate_until([('Hello', {'until': [stop], 'max_gen_toks': 12})])[0]
    assert cut == out[:out.index(stop)]


def test_without_bos_scores_like_the_harness_default(lm):
    """add_bos=False: no prefix before a non-empty context, EOS before an empty one (HFLM)."""
    plain = JaxLM(lm.model, lm.params, lm.tokenizer, batch_size=4, add_bos=False)
    tok = lm.tokenizer
    ctx, cont = plain.encode_pair('The cat', ' sat')
    assert ctx == tok.encode('The cat') and cont == tok.encode(' sat')
    assert plain.encode_pair('', 'Hi')[0] == [tok.eos_id]
    (lp, _), = plain.loglikelihood([('The cat', ' sat')])
    assert lp == pytest.approx(_manual(plain, ctx, cont), abs=1e-4)
    assert lp != pytest.approx(lm.loglikelihood([('The cat', ' sat')])[0][0], abs=1e-6)


def test_continuation_longer_than_the_context_scores_every_token(lm):
    """A 100-token continuation with a 64-token context: two rolling windows of 64 input
    tokens (predicting 64 + 36 tokens, each window with as much left context as fits), never
    a sum over its last few tokens."""
    tok = lm.tokenizer
    ctx, cont = tok.encode('Once upon a time'), tok.encode('abcdefghij' * 10)
    (lp, _), = lm.loglikelihood([('Once upon a time', 'abcdefghij' * 10)])
    full = [tok.bos_id] + ctx + cont
    first = _manual(lm, full[:-100][-1:], cont[:64])
    rest = _manual(lm, full[:-36][-(64 + 1 - 36):], cont[64:])
    assert lp == pytest.approx(first + rest, abs=1e-3)
    assert lm.loglikelihood_truncated([('Once upon a time', 'abcdefghij' * 10),
                                       ('Once upon a time', ' yes')]) == [True, False]


def test_truncated_contexts_are_reported(lm):
    # BOS + 62 context tokens + 2 continuation tokens = 65 = max_length + 1 still fits.
    assert lm.loglikelihood_truncated([('x' * 62, 'ab'), ('x' * 63, 'ab')]) == [False, True]
    kw = {'until': [], 'max_gen_toks': 12}  # room for BOS + 51 prompt tokens
    assert lm.generate_until_truncated([('y' * 51, kw), ('y' * 52, kw)]) == [False, True]
