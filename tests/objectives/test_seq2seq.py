"""FLAN-style instruction tuning of the encoder-decoder ('seq2seq'): conversations become
inputs -> targets, packed without cross-talk, the loss scores the target tokens only; a short run
on the synthetic arithmetic set learns, and `jaxlm.sample` / `jaxlm.eval` then work on it."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import small_config, train_losses

from jaxlm import config as config_lib
from jaxlm.data import pipeline
from jaxlm.data.chat import ChatFormatError, Message
from jaxlm.data.records import Conversation, Preference
from jaxlm.data.tokenizers import ByteTokenizer
from jaxlm.errors import ConfigError, UserError
from jaxlm.objectives.seq2seq import Seq2Seq, Seq2SeqExamples

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOK = ByteTokenizer()
EOS = TOK.eos_id


def _conversation(*turns: str) -> Conversation:
    roles = ('user', 'assistant')
    return Conversation(tuple(Message(roles[i % 2], t) for i, t in enumerate(turns)))


def test_examples_are_inputs_to_targets():
    make = Seq2SeqExamples(TOK, inputs_len=64, targets_len=8)
    single, _ = make.example(_conversation('What is 2+3?', '5'), 0)
    assert single['encoder_inputs'].tolist() == TOK.encode('What is 2+3?') + [EOS]
    assert single['targets'].tolist() == TOK.encode('5') + [EOS]
    assert single['inputs'].tolist() == [0] + TOK.encode('5')  # shifted right from the start
    multi, _ = make.example(_conversation('Hi', 'Hello!', 'And 1+1?', '2'), 1)
    assert TOK.decode(multi['encoder_inputs']) == 'user: Hi\nassistant: Hello!\nuser: And 1+1?'
    assert multi['targets'].tolist() == TOK.encode('2') + [EOS]


def test_bad_records_and_long_examples():
    make = Seq2SeqExamples(TOK, inputs_len=8, targets_len=4)
    with pytest.raises(ChatFormatError, match='pairs:3.*last message'):
        make.examples([Conversation((Message('user', 'a'),), origin='pairs:3')])
    with pytest.raises(ChatFormatError, match='seq2seq trains on conversations'):
        make.examples([Preference((Message('user', 'a'),), 'b', 'c')])
    records = [_conversation('short', 'ok'), _conversation('a much longer question', 'ok'),
               _conversation('short', 'too long')]
    kept, stats = make.examples(records)
    assert len(kept) == 1 and stats['too_long_dropped'] == 2
    cut, stats = Seq2SeqExamples(TOK, 8, 4, 'truncate').examples(records)
    assert len(cut) == 3 and stats['truncated'] == 2
    assert cut[1]['encoder_inputs'].tolist() == TOK.encode('a much ') + [EOS]
    assert cut[2]['targets'].tolist() == TOK.encode('too ')


def test_loss_scores_only_target_tokens():
    records = [_conversation(f'What is {a}+{b}?', str(a + b)) for a, b in
               [(1, 2), (30, 40), (5, 5), (7, 8), (60, 9)]]
    cfg = small_config('.')
    cfg.data.update(inputs_len=32, seq_len=8)
    transform = Seq2Seq().data_transform(cfg.data, TOK)
    examples, _ = transform.examples(records)
    ds = pipeline.eval_stream(examples, transform, global_batch=2)
    batch = next(iter(ds))
    # Several examples share a row, each with its own segment; padding has segment 0.
    assert batch['segment_ids'].max() > 1 and batch['encoder_segment_ids'].max() > 1
    targets_per_row = sum(len(e['targets']) for e in examples[:int(batch['segment_ids'][0].max())])
    assert batch['loss_mask'][0].sum() == targets_per_row
    logits = jax.random.normal(jax.random.PRNGKey(0), (*batch['targets'].shape, 264))
    sums = Seq2Seq().loss(logits, batch)
    mask = batch['segment_ids'] != 0
    assert float(sums.weight) == mask.sum()
    token_ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch['targets'][..., None],
                                    axis=-1)[..., 0]
    np.testing.assert_allclose(float(sums.loss), float(token_ce[mask].sum()), rtol=1e-5)
    noisy = jnp.where(jnp.asarray(mask)[..., None], logits, 100.0 * logits)  # padding logits
    assert float(Seq2Seq().loss(noisy, batch).loss) == pytest.approx(float(sums.loss))


def _t5_config(data_dir: str):
    c = small_config(data_dir)
    c.num_train_steps = 40
    c.log_every_steps = 5
    c.checkpoint_every_steps = 40
    c.model.update(architecture='encoder_decoder', positions='t5_relative', mlp='geglu',
                   norm_eps=1e-6, vocab_size=272, max_seq_len=32)
    c.data.update(source='mixture', mixture='arithmetic:1', objective='seq2seq', inputs_len=32,
                  seq_len=8, eval_fraction=0.1)
    return c


def test_config_accepts_encoder_decoder_and_refuses_decoder():
    cfg = _t5_config('.')
    config_lib.validate(cfg, 1)
    cfg.model.update(architecture='decoder', positions='rope')
    with pytest.raises(ConfigError, match="'seq2seq' does not fit .*'decoder'"):
        config_lib.validate(cfg, 1)


@pytest.fixture(scope='module')
def trained(tmp_path_factory, shared_data_dir):
    from jaxlm.trainer.loop import train

    workdir = tmp_path_factory.mktemp('t5_arithmetic')
    train(_t5_config(str(shared_data_dir)), str(workdir), devices=jax.devices()[:1])
    return workdir


def test_training_lowers_the_loss(trained):
    losses = train_losses(trained)
    assert losses[40] < 0.7 * losses[5], losses


def test_sample_cli_answers_from_the_encoder(trained):
    out = subprocess.run([sys.executable, '-m', 'jaxlm.sample', f'--workdir={trained}',
                          '--prompt=What is 2+3?', '--temperature=0', '--max_new_tokens=4'],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    answer = out.stdout.split("--- prompt: 'What is 2+3?'\n")[1].strip()
    assert answer and answer.isdigit(), out.stdout  # a number, not the prompt continued


def test_eval_scores_generation_and_loglikelihood_tasks(trained, shared_data_dir):
    from jaxlm import eval as eval_lib

    _, results = eval_lib.run(str(trained), ['gsm8k', 'hellaswag'], num_fewshot=0, limit=2,
                              data_dir=str(shared_data_dir))
    assert set(results['gsm8k']['metrics']) == {'exact_match_strict', 'exact_match_flexible'}
    assert 0.0 <= results['hellaswag']['metrics']['acc'] <= 1.0
    assert results['gsm8k']['num_docs'] == results['hellaswag']['num_docs'] == 2
    with pytest.raises(UserError, match='--chat'):  # no chat template: refused, not mis-scored
        eval_lib.run(str(trained), ['gsm8k'], chat=True)
