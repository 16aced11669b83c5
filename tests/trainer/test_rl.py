"""The RL loop: after a short supervised warm-up on the arithmetic task, GRPO and PPO raise
the policy's expected reward; an interrupted and resumed GRPO run equals an uninterrupted one
bitwise; reward functions that fail stop the run naming the function and the prompt."""

import functools
import math
import shutil

import jax
import numpy as np
import pytest
from conftest import read_metrics

from experiments import _arithmetic, grpo_arithmetic, ppo_arithmetic
from experiments._arithmetic import sft_warmup
from jaxlm.data.chat import Message
from jaxlm.errors import ConfigError
from jaxlm.trainer import rewards
from jaxlm.trainer.rl import train_rl

DEVICE = jax.devices()[:1]
TIMING = ('generation_share',)


def _config(module, workdir_sft, iterations):
    c = module.get_config()
    c.update(num_train_steps=iterations, checkpoint_every_steps=2,
             init_params_from=str(workdir_sft / 'checkpoints'))
    c.mesh.update(fsdp=1)
    c.data.global_batch_size = 16
    c.rl.prompts_per_iteration = 4
    return c


@pytest.fixture(scope='module')
def sft(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('sft')
    sft_warmup(grpo_arithmetic.get_config(), str(workdir), steps=150, devices=DEVICE)
    return workdir


def expected_reward(cfg, workdir):
    return _arithmetic.expected_reward(cfg, str(workdir / 'checkpoints'), DEVICE[0])


def _iterations(workdir):
    return {r['step']: {k: v for k, v in r.items() if k not in TIMING}
            for r in read_metrics(workdir) if 'reward_mean' in r}


def test_grpo_raises_reward_and_resumes_bitwise(sft, tmp_path):
    full, part = tmp_path / 'full', tmp_path / 'part'
    train_rl(_config(grpo_arithmetic, sft, 6), str(full), devices=DEVICE)
    shutil.copytree(full, part)  # as if stopped after iteration 4 (its metrics are cut there)
    shutil.rmtree(part / 'checkpoints' / '6')
    train_rl(_config(grpo_arithmetic, sft, 6), str(part), devices=DEVICE)  # resumes at 4
    assert _iterations(part) == _iterations(full)  # bitwise: rewards, KL, losses
    records = _iterations(full)
    assert sorted(records) == list(range(1, 7))
    assert all(0 <= r['kl'] < 1 and r['logp_gap'] < 1e-4 for r in records.values())
    assert all(0 < r['response_length'] <= 6 for r in records.values())
    # The first iteration samples the initial policy: no KL yet.
    assert records[1]['kl'] == pytest.approx(0.0, abs=1e-5)
    before = expected_reward(_config(grpo_arithmetic, sft, 6), sft)
    after = expected_reward(_config(grpo_arithmetic, sft, 6), full)
    assert after > before + 0.02, (before, after)


def test_ppo_raises_reward(sft, tmp_path):
    cfg = _config(ppo_arithmetic, sft, 3)
    cfg.rl.epochs = 2  # the recipe's 4 take twice as long
    train_rl(cfg, str(tmp_path), devices=DEVICE)
    records = _iterations(tmp_path)
    assert all(math.isfinite(r['value_loss']) for r in records.values())
    sft_cfg = _config(grpo_arithmetic, sft, 3)  # the warm-up has no value head
    assert expected_reward(cfg, tmp_path) > expected_reward(sft_cfg, sft) + 0.02


def _raises(prompts, completions, answers):
    raise KeyError('no score')


def test_a_reward_function_that_raises_names_itself_and_the_prompt():
    with pytest.raises(rewards.RewardError,
                       match=r"reward function mod:fn on prompt 7 \('Q: 1\+2'\) raised KeyError"):
        rewards.score_group(_raises, 'mod:fn', 7, 'Q: 1+2', ['3', '4'], '3')
    with pytest.raises(rewards.RewardError, match='non-finite reward'):
        rewards.score_group(lambda p, c, a: [1.0, float('nan')], 'mod:fn', 0, 'q', ['a', 'b'],
                            '')
    with pytest.raises(rewards.RewardError, match='returned 1 scores for 2'):
        rewards.score_group(lambda p, c, a: [1.0], 'mod:fn', 0, 'q', ['a', 'b'], '')


def test_rewards():
    assert rewards.arithmetic_exact(['', '', ''], [' 12', '12 or 13', ' 1 2'],
                                    ['12', '13', '12']) == [1.0, 0.0, 0.0]
    assert rewards.gsm8k_answer(['', ''], ['So 4 + 68 = 72. The answer is 72.',
                                           'The answer is 71.'], ['72', '72']) == [1.0, 0.0]
    assert rewards.avoid_words(['', ''], ['a Darn good day', 'a fine day'], ['', ''],
                               words=['darn']) == [0.0, 1.0]
    with pytest.raises(Exception, match='cannot be loaded'):
        rewards.load('jaxlm.trainer.rewards:nope')


def test_a_reward_model_scores_each_completion_after_the_prompt():
    class Model:  # jaxlm.inference.reward.RewardModel's interface
        def score(self, conversations):
            self.seen = conversations
            return np.arange(len(conversations), dtype=np.float32)

    model, prompt = Model(), (Message('user', 'What is 1+2?'),)
    fn = functools.partial(rewards.model_reward, model, prompt)
    got = rewards.score_group(fn, 'rm', 3, 'Q', [' 3', ' 4'], '3')
    np.testing.assert_array_equal(got, [0.0, 1.0])
    assert model.seen == [(*prompt, Message('assistant', ' 3')),
                          (*prompt, Message('assistant', ' 4'))]


def test_resume_refuses_another_reward(sft, tmp_path):
    """A workdir with checkpoints keeps its rl settings: another reward is another run."""
    workdir = tmp_path / 'run'
    shutil.copytree(sft / 'checkpoints', workdir / 'checkpoints')
    cfg = _config(grpo_arithmetic, sft, 2)
    (workdir / 'config.json').write_text(cfg.to_json_best_effort())
    cfg.rl.reward = 'jaxlm.trainer.rewards:avoid_words'
    with pytest.raises(ConfigError, match='cannot change when resuming: rl.reward: '):
        train_rl(cfg, str(workdir), devices=DEVICE)
