"""Preference pairs as rows (layout, counted skips and errors), the hh_rlhf loader, the DPO loss
and gradients equal on 1 device and a data x fsdp x tensor mesh, and short runs that must move
in the right direction: a reward model's held-out pairwise accuracy (and the inference-layer
scorer agreeing), and DPO's held-out chosen-over-rejected accuracy (rewards/accuracies), on the
learnable `case_preference` set."""

from __future__ import annotations

import functools
import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
from conftest import sharded_value_and_grad
from flax import traverse_util

from jaxlm.checkpoints import save_params
from jaxlm.config import default_config
from jaxlm.data import mixture
from jaxlm.data.chat import ChatTemplate, Message
from jaxlm.data.chat_format import ChatByteTokenizer
from jaxlm.data.preference import PairEncoder, check_data, stack_rows
from jaxlm.data.records import Conversation, Preference
from jaxlm.data.sets import case_preference, hh_rlhf
from jaxlm.data.sources import DataError
from jaxlm.errors import ConfigError
from jaxlm.inference.reward import RewardModel
from jaxlm.models import params as param_lib
from jaxlm.models.config import ModelConfig
from jaxlm.models.registry import build_model, family
from jaxlm.objectives.dpo import DPO
from jaxlm.trainer import loop

PROMPT = (Message('user', 'Hi?'), Message('assistant', 'Hello.'), Message('user', 'Name one.'))


def _encoder(seq_len: int = 192) -> PairEncoder:
    return PairEncoder(ChatTemplate(), ChatByteTokenizer(), seq_len)


def test_pair_row_layout():
    tok = ChatByteTokenizer()
    rows, stats = _encoder().rows([Preference(PROMPT, 'apple', 'a rock')])
    assert stats == {'pairs': 1, 'identical_pairs': 0, 'too_long_pairs': 0, 'pair_rows': 1}
    row = rows[0]
    # The replies (with their end-of-turn marker) are exactly the masked targets, once each.
    assert tok.decode(row['targets'][row['chosen_mask'] > 0]) == 'apple<|im_end|>\n'
    assert tok.decode(row['targets'][row['rejected_mask'] > 0]) == 'a rock<|im_end|>\n'
    seg = row['segment_ids']
    n_chosen, n_rejected = int((seg == 1).sum()), int((seg == 2).sum())
    assert np.flatnonzero(row['chosen_last']).tolist() == [n_chosen - 1]
    assert np.flatnonzero(row['rejected_last']).tolist() == [n_chosen + n_rejected - 1]
    # Positions restart and both segments start with BOS and the same prompt.
    assert row['positions'][n_chosen] == 0 and row['inputs'][n_chosen] == tok.bos_id
    prompt_len = int(np.flatnonzero(row['chosen_mask'])[0]) + 1
    np.testing.assert_array_equal(row['inputs'][:prompt_len],
                                  row['inputs'][n_chosen:n_chosen + prompt_len])
    # Nothing is predicted across segments, nor from the last token of a segment.
    assert row['targets'][n_chosen - 1] == 0 and row['chosen_mask'][n_chosen - 1] == 0


def test_identical_and_too_long_pairs_are_counted_skips():
    records = [Preference(PROMPT, 'same', 'same'), Preference(PROMPT, 'x' * 80, 'y'),
               Preference(PROMPT, 'yes', 'no')]
    rows, stats = _encoder().rows(records)
    assert len(rows) == 1 and stats['identical_pairs'] == 1 and stats['too_long_pairs'] == 1


def test_bad_prompt_is_an_error_naming_the_record():
    bad = Preference((Message('assistant', 'Hi'),), 'a', 'b', origin='hh_rlhf:7')
    with pytest.raises(DataError, match='hh_rlhf:7'):
        _encoder().rows([bad])


def test_conversation_records_are_refused():
    record = Conversation((Message('user', 'Hi'), Message('assistant', 'Hello')),
                          origin='gsm8k:3')
    with pytest.raises(DataError, match='gsm8k:3 is a Conversation'):
        _encoder().rows([record])


def test_truncation_other_than_drop_is_refused():
    cfg = default_config().data
    cfg.update(source='mixture', truncation='truncate')
    with pytest.raises(ConfigError, match='truncation'):
        check_data(cfg, 'dpo')


def test_dpo_settings_are_validated():
    with pytest.raises(ConfigError, match='loss_type'):
        DPO(loss_type='kto')
    with pytest.raises(ConfigError, match='label_smoothing'):
        DPO(loss_type='sigmoid', label_smoothing=0.1)
    with pytest.raises(ConfigError, match='beta'):
        DPO(beta=0.0)


def test_hh_rlhf_records(shared_data_dir):
    records, skipped = hh_rlhf.read(str(shared_data_dir))
    assert len(records) == 2299 and skipped == {'unparsed': 13, 'different_prompts': 0}
    first = records[0]
    assert [m.role for m in first.prompt] == ['user', 'assistant'] * 2 + ['user']
    assert first.chosen.startswith('No, sorry!') and first.rejected.startswith('There are lots')


def test_hh_rlhf_checksum_is_verified(tmp_path):
    bad = tmp_path / hh_rlhf.FILE
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b'not the file')
    with pytest.raises(DataError, match='sha256'):
        hh_rlhf.read(str(tmp_path))


def _config(architecture: str, objective: str, steps: int):
    c = default_config()
    c.num_train_steps, c.log_every_steps, c.eval_every_steps = steps, steps, 1
    c.checkpoint_every_steps = 1000
    c.mesh.update(data=1, fsdp=1, tensor=1)
    c.model.update(architecture=architecture, vocab_size=264, num_layers=2, d_model=32,
                   num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64, max_seq_len=96,
                   dtype='float32')
    c.data.update(source='mixture', mixture='case_preference', objective=objective, seq_len=96,
                  global_batch_size=16, num_eval_batches=2, eval_fraction=0.1)
    c.data.tokenizer.update(kind='byte', vocab_size=261)
    c.optimizer.update(learning_rate=3e-3, warmup_steps=1, decay_steps=steps)
    return c


def test_dpo_loss_same_on_one_device_and_a_mesh():
    cfg = _config('decoder', 'dpo', 1)
    model = build_model(cfg)
    init = functools.partial(param_lib.init_boxed, model, jax.random.key(0), cfg.data.seq_len)
    params = nn.unbox(jax.jit(init)())
    reference = jax.tree.map(lambda x: x * 1.05, params)
    rows, _ = PairEncoder(ChatTemplate(), ChatByteTokenizer(), 96).rows(case_preference.load()[:8])
    batch = stack_rows(rows)
    objective, apply = DPO(), functools.partial(family(cfg.model).apply, model)

    def loss_fn(p, b):
        sums = objective.loss(apply(p, b), b, apply(reference, b))
        return sums.loss / sums.weight

    one_device = jax.devices()[0]
    one = jax.jit(jax.value_and_grad(loss_fn))(jax.device_put(params, one_device),
                                               jax.device_put(batch, one_device))
    mesh = sharded_value_and_grad(loss_fn, init, params, batch, dict(data=2, fsdp=2, tensor=2))
    np.testing.assert_allclose(mesh[0], one[0], rtol=1e-5)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6), mesh[1],
                 one[1])


def _evals(workdir: str, key: str) -> list[float]:
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        return [r[key] for r in map(json.loads, f) if key in r]


def test_reward_model_parameters():
    cfg = _config('reward_model', 'reward', 1)
    shapes = param_lib.shapes(build_model(cfg), cfg.data.seq_len)
    assert shapes['score'].shape == (32, 1) and 'lm_head' not in shapes
    count = family(cfg.model).count_params(ModelConfig.from_config(cfg.model))
    assert sum(x.size for x in jax.tree.leaves(shapes)) == count


def test_reward_model_learns_held_out_preferences(tmp_path):
    cfg = _config('reward_model', 'reward', 8)
    loop.train(cfg, str(tmp_path), devices=jax.devices()[:1])
    accuracy, loss = _evals(str(tmp_path), 'eval_accuracy'), _evals(str(tmp_path), 'eval_loss')
    print('reward model: held-out accuracy', accuracy, 'loss', loss)
    assert accuracy[-1] >= 0.9 and accuracy[-1] > accuracy[0]
    assert loss[-1] < 0.5 * loss[0]

    # The inference-layer scorer (what RL serves) agrees: held-out chosen replies score higher.
    scorer = RewardModel.load(str(tmp_path))
    pairs = mixture.split(case_preference.load(), 'case_preference', 0.1)[1][:8]
    chosen = scorer.score([(*p.prompt, Message('assistant', p.chosen)) for p in pairs])
    rejected = scorer.score([(*p.prompt, Message('assistant', p.rejected)) for p in pairs])
    assert (chosen > rejected).all(), (chosen, rejected)


def test_dpo_raises_held_out_accuracy(tmp_path):
    cfg = _config('decoder', 'dpo', 8)
    model = build_model(cfg)
    init = jax.jit(functools.partial(param_lib.init_boxed, model, seq_len=cfg.data.seq_len))
    params = nn.unbox(init(jax.random.key(0)))
    save_params(str(tmp_path / 'base'), 0, traverse_util.flatten_dict(params).items())
    cfg.init_params_from = str(tmp_path / 'base')
    loop.train(cfg, str(tmp_path / 'dpo'), devices=jax.devices()[:1])
    accuracy = _evals(str(tmp_path / 'dpo'), 'eval_rewards/accuracies')
    margins = _evals(str(tmp_path / 'dpo'), 'eval_rewards/margins')
    print('DPO: held-out rewards/accuracies', accuracy, 'margins', margins)
    assert accuracy[-1] >= 0.9 and accuracy[-1] > accuracy[0]
    assert margins[-1] > margins[0] and margins[-1] > 0


def test_reward_model_starts_from_a_decoder_checkpoint(tmp_path):
    """As TRL's reward models start from the SFT model: the backbone is the decoder's, the
    score head the seed's initialisation, the decoder's LM head unused."""
    decoder_cfg = _config('decoder', 'dpo', 1)
    decoder_model = build_model(decoder_cfg)
    params = nn.unbox(jax.jit(functools.partial(
        param_lib.init_boxed, decoder_model, seq_len=96))(jax.random.key(3)))
    save_params(str(tmp_path / 'sft'), 0, traverse_util.flatten_dict(params).items())
    cfg = _config('reward_model', 'reward', 2)
    cfg.num_train_steps = 1
    cfg.init_params_from = str(tmp_path / 'sft')
    cfg.optimizer.learning_rate = 0.0  # the saved step 1 is the initialisation
    cfg.checkpoint_every_steps = 1
    loop.train(cfg, str(tmp_path / 'rm'), devices=jax.devices()[:1])
    got = RewardModel.load(str(tmp_path / 'rm')).run.params
    np.testing.assert_array_equal(got['token_embed']['embedding'],
                                  params['token_embed']['embedding'])
    jax.tree.map(np.testing.assert_array_equal, got['layers'], params['layers'])
    assert got['score'].shape == (32, 1) and 'lm_head' not in got
