"""GRPO and PPO losses, advantages and the rollout log-probabilities, against direct NumPy
transcriptions of TRL's formulas; the GRPO loss and gradients equal on 1 device and on a
data x fsdp x tensor mesh."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import sharded_value_and_grad

from jaxlm.config import default_config, validate
from jaxlm.errors import ConfigError
from jaxlm.inference.decode import generate_with_logprobs
from jaxlm.models import params as param_lib
from jaxlm.models import registry
from jaxlm.objectives.grpo import GRPO
from jaxlm.objectives.ppo import PPO
from jaxlm.objectives.rollout import token_logprobs
from jaxlm.trainer.rl import build_rows, gae, group_advantages

B, L, V = 4, 12, 264


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _batch(seed=0, ppo=False):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(B, L, V)).astype(np.float32)
    targets = rng.integers(0, V, size=(B, L)).astype(np.int32)
    mask = np.zeros((B, L), np.float32)
    for i, (a, n) in enumerate([(2, 5), (3, 9), (1, 1), (4, 0)]):  # the last row: no tokens
        mask[i, a:a + n] = 1
    logp = np.take_along_axis(_log_softmax(logits / 0.7), targets[..., None], -1)[..., 0]
    batch = {'targets': targets, 'loss_mask': mask,
             'old_logps': (logp + rng.normal(scale=0.3, size=(B, L))).astype(np.float32),
             'ref_logps': (logp + rng.normal(scale=0.2, size=(B, L))).astype(np.float32),
             'advantages': (rng.normal(size=(B, 1)) * mask).astype(np.float32)}
    if ppo:
        batch.update(returns=rng.normal(size=(B, L)).astype(np.float32),
                     old_values=rng.normal(size=(B, L)).astype(np.float32))
    return logits, batch, logp


@pytest.mark.parametrize('aggregation', ['token', 'sequence'])
def test_grpo_loss_is_trls(aggregation):
    logits, batch, logp = _batch()
    sums = GRPO(temperature=0.7, kl_beta=0.04, aggregation=aggregation).loss(
        jnp.asarray(logits), batch)
    # TRL GRPOTrainer._compute_loss: coef_1 = exp(logp - old), per_token = -min(c1 A, c2 A)
    # + beta * (exp(ref - logp) - (ref - logp) - 1); 'dapo' / 'grpo' aggregation.
    ratio = np.exp(logp - batch['old_logps'])
    adv, mask = batch['advantages'], batch['loss_mask']
    per_token = -np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv)
    per_token += 0.04 * (np.exp(batch['ref_logps'] - logp) - (batch['ref_logps'] - logp) - 1)
    if aggregation == 'token':
        want = (per_token * mask).sum() / mask.sum()
    else:
        seq = (per_token * mask).sum(-1) / np.maximum(mask.sum(-1), 1)
        want = seq[mask.sum(-1) > 0].mean()
    np.testing.assert_allclose(sums.loss / sums.weight, want, rtol=1e-5)
    clipped = ((ratio < 0.8) & (adv < 0)) | ((ratio > 1.2) & (adv > 0))
    if aggregation == 'token':
        np.testing.assert_allclose(sums.metrics['clip_fraction'] / sums.weight,
                                   clipped[mask > 0].mean(), rtol=1e-5)


def test_ppo_loss_clips_policy_and_value():
    logits, batch, logp = _batch(1, ppo=True)
    values = np.random.default_rng(2).normal(size=(B, L)).astype(np.float32)
    sums = PPO(temperature=0.7, vf_coef=0.1, value_clip=0.2).loss(
        (jnp.asarray(logits), jnp.asarray(values)), batch)
    ratio = np.exp(logp - batch['old_logps'])
    adv, mask = batch['advantages'], batch['loss_mask']
    pg = -np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv)
    v_clip = batch['old_values'] + np.clip(values - batch['old_values'], -0.2, 0.2)
    vf = 0.5 * np.maximum((values - batch['returns']) ** 2, (v_clip - batch['returns']) ** 2)
    want = ((pg + 0.1 * vf) * mask).sum() / mask.sum()
    np.testing.assert_allclose(sums.loss / sums.weight, want, rtol=1e-5)


def test_group_advantages_and_gae():
    r = np.array([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]], np.float32)
    adv = group_advantages(r)
    np.testing.assert_allclose(adv[0], (r[0] - 0.5) / (np.std(r[0], ddof=1) + 1e-4), rtol=1e-6)
    np.testing.assert_array_equal(adv[1], 0.0)  # a group that agrees teaches nothing
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(2, 8)), rng.normal(size=(2, 8))
    mask = np.zeros((2, 8))
    mask[0, 2:6], mask[1, 1:8] = 1, 1
    got_adv, got_ret = gae(rewards, values, mask, 0.9, 0.95)
    for i in range(2):  # the textbook recursion over each row's completion alone
        idx = np.flatnonzero(mask[i])
        last = 0.0
        for j in reversed(range(len(idx))):
            t = idx[j]
            nxt = values[i, idx[j + 1]] if j + 1 < len(idx) else 0.0
            last = rewards[i, t] + 0.9 * nxt - values[i, t] + 0.9 * 0.95 * last
            np.testing.assert_allclose(got_adv[i, t], last, rtol=1e-6)
            np.testing.assert_allclose(got_ret[i, t], last + values[i, t], rtol=1e-6)
    assert not got_adv[mask == 0].any()


def _tiny(architecture='decoder'):
    c = default_config()
    c.model.update(architecture=architecture, vocab_size=V, num_layers=2, d_model=32,
                   num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64, max_seq_len=32,
                   dtype='float32')
    return registry.build_model(c)


def test_sampler_logprobs_equal_a_training_forward():
    """The rollout log-probabilities the KV-cache sampler returns are the ones the GRPO/PPO
    losses recompute from a training forward of the same rows."""
    model = _tiny('policy_value')  # its sampler ignores the value head
    params = nn.unbox(jax.jit(functools.partial(param_lib.init_boxed, model, jax.random.key(0),
                                                32))())
    prompts = [[2, 40, 41, 42], [2, 50], [2, 60, 61, 62, 63, 64, 65]]
    tokens, logps, lengths = generate_with_logprobs(model, params, prompts, max_new_tokens=8,
                                                    temperature=0.8, seed=3, eos_id=7)
    rows = build_rows(prompts, tokens, logps, lengths, seq_len=16)
    logits, _ = registry.family(model.cfg).apply(model, params, rows)
    recomputed = np.asarray(token_logprobs(logits, rows['targets'], 0.8))
    mask = rows['loss_mask']
    assert mask.sum() == lengths.sum()
    np.testing.assert_allclose(recomputed * mask, rows['old_logps'], atol=2e-5)


def test_grpo_loss_same_on_one_device_and_a_mesh():
    model = _tiny()
    init = functools.partial(param_lib.init_boxed, model, jax.random.key(0), 16)
    params = nn.unbox(jax.jit(init)())
    _, batch, _ = _batch(3)
    rng = np.random.default_rng(4)
    batch = {k: np.concatenate([v, v]) for k, v in batch.items()}  # 8 rows: 4 data shards
    batch.update(inputs=rng.integers(0, V, size=(8, L)).astype(np.int32),
                 segment_ids=np.ones((8, L), np.int32),
                 positions=np.broadcast_to(np.arange(L), (8, L)).astype(np.int32))
    objective = GRPO(kl_beta=0.04)

    def loss_fn(p, b):
        sums = objective.loss(registry.family(model.cfg).apply(model, p, b), b)
        return sums.loss / sums.weight

    one = jax.jit(jax.value_and_grad(loss_fn), device=jax.devices()[0])(params, batch)
    mesh = sharded_value_and_grad(loss_fn, init, params, batch, dict(data=2, fsdp=2, tensor=2))
    np.testing.assert_allclose(mesh[0], one[0], rtol=1e-5)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6), mesh[1],
                 one[1])


@pytest.mark.parametrize('field,value,says', [
    ('group_size', 1, 'rl.group_size` must be >= 2'),
    ('prompts_per_iteration', 3, 'multiple of `data.global_batch_size`'),
    ('max_new_tokens', 40, 'must be below `data.seq_len`'),
    ('loss_aggregation', 'mean', 'rl.loss_aggregation'),
    ('temperature', 0.0, 'rl.temperature'),
    ('reward', 'no_colon', "'module:function'"),
])
def test_rl_config_errors_are_one_line(field, value, says):
    c = default_config()
    c.data.update(objective='grpo', seq_len=32, global_batch_size=16)
    c.model.max_seq_len = 32
    c.mesh.update(fsdp=1)
    c.rl.max_new_tokens = 8
    c.rl[field] = value
    with pytest.raises(ConfigError, match=says.replace('`', '.').replace('(', r'\(')) as e:
        validate(c, 1)
    assert '\n' not in str(e.value)


def test_ppo_needs_the_policy_value_family():
    c = default_config()
    c.data.objective = 'ppo'
    c.mesh.update(fsdp=1)
    with pytest.raises(ConfigError, match='does not fit'):
        validate(c, 1)
    c.model.architecture = 'policy_value'
    assert isinstance(c.rl, ml_collections.ConfigDict) and validate(c, 1)
