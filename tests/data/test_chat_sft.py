"""Supervised fine-tuning on chat data: the assistant mask through the SFT packer (multi-turn,
system prompt, a template with a footer), token ids equal to transformers' apply_chat_template
for an HF tokenizer with its own chat_template, one-line errors for bad conversations, packed
per-token losses equal to unpacked ones, mixture proportions, and a CLI run whose loss falls and
that resumes bitwise."""

import functools
import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
from conftest import train_losses
from flax import linen as nn
from ml_collections import ConfigDict
from tokenizers import decoders, models, pre_tokenizers, trainers

from jaxlm.data import chat_format, mixture, packing
from jaxlm.data.chat import ChatFormatError, ChatTemplate, Message
from jaxlm.data.chat_format import ChatByteTokenizer
from jaxlm.data.records import Conversation, Preference
from jaxlm.models.config import ModelConfig
from jaxlm.models.decoder import Transformer
from jaxlm.objectives.sft import ConversationPacker, SupervisedFineTuning

SEQ_LEN = 128
CHAT = (Message('system', 'Be brief.'), Message('user', 'What is 2+3?'),
        Message('assistant', '5.'), Message('user', 'Times 4?'), Message('assistant', '20.'))
FOOTER = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}{{ '### END' }}")
# Llama 2's template: BOS and EOS written by the template itself.
LLAMA2 = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + ' ' + eos_token }}"
    "{% endif %}{% endfor %}")


def _trained_spans(rows, tok):
    """The decoded text of each run of trained targets, row by row."""
    spans = []
    for r in range(len(rows['inputs'])):
        mask = rows['loss_mask'][r] > 0
        edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
        spans += [tok.decode(rows['targets'][r, s:e].tolist())
                  for s, e in zip(edges[::2], edges[1::2], strict=True)]
    return spans


@pytest.mark.parametrize('source,expected', [
    (ChatTemplate().source, ['5.<|im_end|>\n', '20.<|im_end|>\n']),
    (FOOTER, ['5.\n', '20.\n']),  # the footer '### END' after the last answer is never trained
])
def test_packer_trains_exactly_the_assistant_turns(source, expected):
    tok = ChatByteTokenizer()
    packer = ConversationPacker(ChatTemplate(source), tok, SEQ_LEN)
    rows, stats = packer.rows([Conversation(CHAT, origin='t:0')])
    assert _trained_spans(rows.arrays, tok) == expected
    assert rows.arrays['inputs'][0, 0] == tok.bos_id  # BOS first, as pre-training reads text
    assert stats['trained_tokens'] == sum(len(tok.encode(t)) for t in expected)


def test_chat_byte_tokenizer_has_the_markers_as_single_tokens():
    tok = ChatByteTokenizer()
    text = '<|im_start|>user\nhé<|im_end|>\n'
    ids = tok.encode(text)
    assert ids[0] == 259 and ids.count(260) == 1 and len(ids) == 2 + len('user\nhé\n'.encode())
    assert tok.decode(ids) == text and chat_format.end_of_turn_id(tok) == 260


@pytest.fixture(scope='module')
def hf_dir(tmp_path_factory):
    """A tokenizer.json + tokenizer_config.json with a chat_template, as a converted model has."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [m.content for m in CHAT] * 20 + ['user assistant system INST'] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=300, special_tokens=['<s>', '</s>'],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    path = tmp_path_factory.mktemp('hf')
    tok.save(str(path / 'tokenizer.json'))
    (path / 'tokenizer_config.json').write_text(json.dumps(
        {'bos_token': '<s>', 'eos_token': '</s>', 'chat_template': LLAMA2,
         'tokenizer_class': 'PreTrainedTokenizerFast'}))
    return path


def test_hf_template_token_ids_equal_apply_chat_template(hf_dir):
    transformers = pytest.importorskip('transformers')
    data_cfg = ConfigDict({'chat_template': '', 'cache_dir': '', 'tokenizer': {
        'kind': 'hf', 'path': str(hf_dir / 'tokenizer.json'), 'vocab_size': 0}})
    tok = mixture.make_tokenizer(data_cfg, list)
    template = chat_format.run_template(data_cfg)
    assert template.source == LLAMA2
    hf = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    messages = [{'role': m.role, 'content': m.content} for m in CHAT[1:]]
    expected = list(hf.apply_chat_template(messages, tokenize=True, return_dict=False))
    ids, mask = chat_format.conversation_ids(CHAT[1:], template, tok, 'hf:0')
    assert ids.tolist() == expected  # the template writes BOS: none is added
    assert hf.decode(ids[mask].tolist()) == ' 5. </s> 20. </s>'
    prompt = hf.apply_chat_template(messages[:1], tokenize=True, return_dict=False,
                                    add_generation_prompt=True)
    assert chat_format.prompt_ids(CHAT[1:2], template, tok) == list(prompt)
    assert chat_format.end_of_turn_id(tok) == tok.eos_id  # Llama 2 ends answers with EOS


@pytest.mark.parametrize('record,message', [
    (Conversation((Message('user', 'a'), Message('user', 'b')), origin='gsm8k:12'),
     "gsm8k:12, message 1: expected a 'assistant' turn"),
    (Conversation((Message('', 'a'), Message('assistant', 'b')), origin='fastchat:3'),
     "fastchat:3, message 0: unknown role ''"),
    (Conversation((Message('assistant', 'b'),), origin='alpaca_eval:4'),
     "alpaca_eval:4, message 0: expected a 'user' turn"),
    (Conversation((Message('user', 'only a question'),), origin='self_instruct:5'),
     'self_instruct:5: no assistant turn'),
    (Preference((Message('user', 'q'),), 'a', 'b', origin='hh_rlhf:6'),
     'hh_rlhf:6: sft trains on conversations'),
])
def test_bad_conversations_are_one_line_errors_naming_the_record(record, message):
    packer = ConversationPacker(ChatTemplate(), ChatByteTokenizer(), SEQ_LEN)
    with pytest.raises(ChatFormatError) as e:
        packer.rows([Conversation(CHAT), record])
    assert str(e.value).startswith(message) and '\n' not in str(e.value)


def test_fastchat_shape_missing_role_names_the_dataset_and_index():
    from jaxlm.data.chat import conversation

    with pytest.raises(ChatFormatError, match=r'^fastchat:7 \(x\), message 0: no role'):
        conversation([{'value': 'hi'}], 'fastchat:7 (x)')


def test_too_long_examples_are_dropped_or_truncated_and_counted():
    long = Conversation((Message('user', 'q' * 30), Message('assistant', 'a' * 150)))
    short = Conversation((Message('user', 'q'), Message('assistant', 'a')))
    tok = ChatByteTokenizer()
    _, dropped = ConversationPacker(ChatTemplate(), tok, SEQ_LEN, 'drop').rows([long, short])
    assert (dropped['too_long_dropped'], dropped['examples']) == (1, 1)
    rows, cut = ConversationPacker(ChatTemplate(), tok, SEQ_LEN, 'truncate').rows([long, short])
    assert (cut['truncated'], cut['examples']) == (1, 2)
    assert (rows.arrays['segment_ids'] > 0).sum() == SEQ_LEN + cut['tokens'] - SEQ_LEN
    prompt_only = Conversation((Message('user', 'q' * 200), Message('assistant', 'a')))
    _, nothing = ConversationPacker(ChatTemplate(), tok, SEQ_LEN, 'truncate').rows([prompt_only])
    assert (nothing['truncated_to_nothing'], nothing['examples']) == (1, 0)


def test_packed_per_token_losses_equal_one_example_per_row():
    rng = np.random.default_rng(0)
    words = ['one', 'two', 'three', 'four', 'five', 'six']
    records = [Conversation(tuple(Message(role, ' '.join(rng.choice(words, rng.integers(1, 5))))
                                  for role in ('user', 'assistant') * int(rng.integers(1, 3))))
               for _ in range(10)]
    tok = ChatByteTokenizer()
    packer = ConversationPacker(ChatTemplate(), tok, SEQ_LEN)
    packed, stats = packer.rows(records)
    assert stats['rows'] < stats['examples']  # rows hold several conversations
    alone = [packing.pack([packer.example(r, i)], SEQ_LEN) for i, r in enumerate(records)]
    padded = {k: np.concatenate([a[k] for a in alone]) for k in packing.FIELDS}

    cfg = ModelConfig(vocab_size=264, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                      head_dim=8, mlp_dim=64, max_seq_len=SEQ_LEN, dtype='float32')
    model = Transformer(cfg)
    init = jax.jit(model.init)  # eager init compiles op by op: slow
    params = nn.unbox(init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params'])

    @functools.partial(jax.jit, static_argnums=1)
    def token_losses(rows, num_packed):
        """Per-token losses, and the objective's sums over the packed and the alone rows."""
        logits = model.apply({'params': params}, rows['inputs'], rows['segment_ids'],
                             rows['positions'])
        logp = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.take_along_axis(logp, rows['targets'][..., None], axis=-1)[..., 0]
        parts = (slice(None, num_packed), slice(num_packed, None))
        return nll, [SupervisedFineTuning().loss(logits[p], {k: v[p] for k, v in rows.items()})
                     for p in parts]

    # One call (one compile): the packed rows, then every example alone in its own row.
    both = {k: np.concatenate([packed.arrays[k], padded[k]]) for k in packing.FIELDS}
    nll, (sums_packed, sums_alone) = jax.device_get(token_losses(both, stats['rows']))
    nll_packed, nll_alone = nll[:stats['rows']], nll[stats['rows']:]
    for i, record in enumerate(records):
        tokens, _ = packer.example(record, i)
        r, start = _find(packed.arrays, tokens)
        n = len(tokens) - 1
        np.testing.assert_allclose(nll_packed[r, start:start + n], nll_alone[i, :n],
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sums_packed.loss, sums_alone.loss, rtol=1e-5)
    assert float(sums_packed.weight) == float(sums_alone.weight) == stats['trained_tokens']


def _find(rows, tokens):
    """(row, start) of the example with these tokens in packed rows."""
    n = len(tokens) - 1
    for r in range(len(rows['inputs'])):
        for start in np.flatnonzero(rows['positions'][r] == 0):
            if np.array_equal(rows['inputs'][r, start:start + n], tokens[:-1]) and \
                    rows['targets'][r, start + n - 1] == tokens[-1]:
                return r, start
    raise AssertionError('example not packed')


def test_mixture_weights_give_their_proportions():
    assert mixture.parse('gsm8k:0.75, self_instruct') == [('gsm8k', 0.75), ('self_instruct', 1.0)]
    for bad, message in (('nope:1', 'unknown dataset'), ('gsm8k:-1', 'positive number'),
                         ('gsm8k:x', 'positive number'), ('gsm8k,gsm8k', 'each dataset once')):
        with pytest.raises(Exception, match=message):
            mixture.parse(bad)
    train = {'a': list(range(100)), 'b': list(range(1000, 1300))}
    drawn, counts = mixture.draw(train, {'a': 3.0, 'b': 1.0}, seed=0)
    assert counts == {'a': 300, 'b': 100} and len(drawn) == 400
    # 'a' is repeated in whole passes (each record 3 times), 'b' subsampled without repeats.
    assert sorted(x for x in drawn if x < 1000) == sorted(list(range(100)) * 3)
    assert len({x for x in drawn if x >= 1000}) == 100
    assert drawn == mixture.draw(train, {'a': 3.0, 'b': 1.0}, seed=0)[0]  # deterministic
    assert drawn != mixture.draw(train, {'a': 3.0, 'b': 1.0}, seed=1)[0]  # follows the seed


def test_mixture_source_splits_each_dataset_and_flags_noncommercial_data(shared_data_dir):
    cfg = ConfigDict({'mixture': 'fastchat:1,alpaca_eval:3', 'data_dir': str(shared_data_dir),
                      'eval_fraction': 0.1, 'cache_dir': '',
                      'tokenizer': {'kind': 'byte', 'vocab_size': 0, 'path': ''}})
    split = mixture.open_mixture(cfg, seed=0)
    stats = split.stats['mixture']
    assert stats['fastchat']['eval_records'] == 54 and stats['alpaca_eval']['eval_records'] == 80
    total = stats['fastchat']['train_records'] + stats['alpaca_eval']['train_records']
    assert len(split.train) == total
    assert stats['alpaca_eval']['drawn'] == round(0.75 * total)
    share = np.mean([r.origin.startswith('alpaca_eval') for r in split.train])
    assert abs(share - 0.75) < 1e-3
    assert split.stats['noncommercial'] == ['alpaca_eval']
    assert not {r.origin for r in split.eval} & {r.origin for r in split.train}
    assert isinstance(split.tokenizer, ChatByteTokenizer)


def _config_file(tmp_path, data_dir):
    path = tmp_path / 'sft_config.py'
    path.write_text(textwrap.dedent(f'''
        from jaxlm.config import default_config

        def get_config():
            c = default_config()
            c.num_train_steps = 8
            c.log_every_steps = 1
            c.eval_every_steps = 8
            c.checkpoint_every_steps = 4
            c.mesh.update(data=1, fsdp=1, tensor=1)
            c.model.update(vocab_size=264, num_layers=2, d_model=32, num_heads=4,
                           num_kv_heads=2, head_dim=8, mlp_dim=64, max_seq_len=128,
                           dtype='float32')
            c.data.update(source='mixture', mixture='fastchat:1', objective='sft',
                          truncation='truncate', data_dir={str(data_dir)!r}, seq_len=128,
                          global_batch_size=8, num_eval_batches=1)
            c.data.tokenizer.update(kind='byte', vocab_size=259)
            c.optimizer.update(warmup_steps=2, decay_steps=50, learning_rate=1e-2)
            return c
    '''))
    return path


def _train(config, workdir):
    cmd = [sys.executable, '-m', 'jaxlm.train', f'--config={config}', f'--workdir={workdir}']
    # One device: compiles fastest (resuming onto meshes is tests/trainer/test_resume.py's).
    env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=1'}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_sft_cli_loss_falls_and_resumes_bitwise(shared_data_dir, tmp_path):
    config = _config_file(tmp_path, shared_data_dir)
    full, split = tmp_path / 'full', tmp_path / 'split'
    log = _train(config, full)
    assert '"train_truncated"' in log and '"end_of_turn_id": 260' in log
    # As if stopped after the step-4 save: resuming restores the model, the optimizer and the
    # grain iterator, and must retrain steps 5-8 bit for bit.
    shutil.copytree(full, split)
    shutil.rmtree(split / 'checkpoints' / '8')
    assert 'resumed from' in _train(config, split)
    losses, resumed = train_losses(full), train_losses(split)
    assert sorted(resumed) == list(range(1, 9))
    assert [resumed[s] for s in range(5, 9)] == [losses[s] for s in range(5, 9)]  # bitwise
    assert np.mean([losses[7], losses[8]]) < np.mean([losses[1], losses[2]]) - 0.5
