"""The reinforcement-learning loop (GRPO, PPO): sample, score, train, report, save; resumable.

Each iteration takes the next `rl.prompts_per_iteration` prompts of a deterministic prompt
stream, samples `rl.group_size` completions of each with the current policy through jaxlm's
KV-cache sampler (which returns the log-probabilities it sampled with), scores them with the
reward function (`rl.reward`) or a trained reward model (`rl.reward_model`), runs the policy
(and value head) and the frozen reference over the rollouts, computes advantages (GRPO:
normalised within each prompt's group; PPO: GAE over a KL-penalised reward), and trains
`rl.epochs` passes over the rollouts in shuffled minibatches of `data.global_batch_size` rows
with the same sharded, compiled train step as pre-training (jaxlm/trainer/step.py). One
iteration is one `step` of the run: `num_train_steps`, `log_every_steps`, `eval_every_steps`
and `checkpoint_every_steps` count iterations.

Reported per iteration through the pre-training MetricWriter: reward_mean / reward_std, kl (the
sampled completions' mean per-token k3 KL to the reference), response_length, clip_fraction,
generation_share (of the iteration's time), logp_gap (the largest difference between the
sampler's and the training forward's log-probabilities), and the train steps' loss, grad_norm,
learning_rate (PPO: value_loss).

Exact resume: the checkpoint holds the train state (policy, value head, optimizer, step) and, in
its metadata, the iteration and the prompt stream's position. Everything random is a function
of (seed, iteration): the sampler's key, the prompt order, the minibatch order. The reference
is the initial parameters (`init_params_from`, else the seed's initialisation), never
checkpointed and read again on resume. Single-process runs only (rewards run on the host that
holds the whole rollout).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlm import config as config_lib
from jaxlm.checkpoints import split_checkpoint_path
from jaxlm.data import post_datasets
from jaxlm.data.chat import ChatTemplate, Message
from jaxlm.data.records import Conversation
from jaxlm.data.tokenizers import ByteTokenizer, Tokenizer, build_tokenizer
from jaxlm.errors import ConfigError
from jaxlm.inference import decode
from jaxlm.inference.load import read_run_config, run_tokenizer
from jaxlm.models import registry
from jaxlm.objectives.grpo import k3_kl
from jaxlm.objectives.rollout import token_logprobs
from jaxlm.trainer import metrics as metrics_lib
from jaxlm.trainer import rewards as rewards_lib
from jaxlm.trainer.checkpoint import Checkpointer
from jaxlm.trainer.loop import (
    EvalHook,
    TrainingSetup,
    compile_training,
    init_params,
    open_checkpointer,
    say,
    start_or_resume,
    write_run_files,
)
from jaxlm.trainer.preemption import stop_notice
from jaxlm.trainer.state import state_from_params
from jaxlm.trainer.step import NonFiniteGuard
from jaxlm.trainer.tuning import checkpointed
from jaxlm.trainer.workdir_lock import WorkdirLock

Rows = dict[str, np.ndarray]


# ------------------------------------------------------------------------------------ prompts


@dataclasses.dataclass(frozen=True)
class Prompt:
    index: int  # position in the prompt stream (named in reward errors)
    text: str
    tokens: tuple[int, ...]
    answer: str
    messages: tuple[Message, ...]  # what a reward model scores, with each completion after it


def prompt_messages(record: Conversation) -> tuple[Message, ...]:
    """A conversation's messages without a final assistant turn (the one RL samples)."""
    messages = record.messages
    return messages[:-1] if messages and messages[-1].role == 'assistant' else messages


def render(record: Conversation, prompt_format: str, template: ChatTemplate | None) -> str:
    """The prompt text of a conversation: `prompt_messages` through the chat template with its
    generation prompt, or its last user message through a format pattern."""
    messages = prompt_messages(record)
    if template is not None:
        return template.render(messages, add_generation_prompt=True)
    return prompt_format.format(prompt=messages[-1].content)


class PromptStream:
    """The prompts of a dataset in an order fixed by the seed: pass e visits every prompt once,
    in permutation (seed, e). `take(position, n)` is a pure function of the position, which is
    all a checkpoint needs to hold. Prompts too long to leave room for `max_new_tokens` in
    `seq_len + 1` tokens are dropped once, and counted (`dropped`)."""

    def __init__(self, records: Sequence[Conversation], texts: Sequence[str], tokenizer: Tokenizer,
                 seq_len: int, max_new_tokens: int, seed: int) -> None:
        self.prompts, self.dropped = [], 0
        for record, text in zip(records, texts, strict=True):
            tokens = (tokenizer.bos_id, *tokenizer.encode(text))
            if len(tokens) + max_new_tokens > seq_len + 1:
                self.dropped += 1
                continue
            self.prompts.append((text, tokens, record.answer, prompt_messages(record)))
        if not self.prompts:
            raise ConfigError(f'no prompt fits `data.seq_len` ({seq_len}) with '
                              f'`rl.max_new_tokens` ({max_new_tokens}) new tokens')
        self.seed = seed

    def take(self, position: int, n: int) -> list[Prompt]:
        out = []
        for i in range(position, position + n):
            epoch, k = divmod(i, len(self.prompts))
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.prompts))
            out.append(Prompt(i, *self.prompts[order[k]]))
        return out


def prompt_stream(cfg: ml_collections.ConfigDict, tokenizer: Tokenizer) -> PromptStream:
    rl = cfg.rl
    if rl.prompts not in post_datasets.DATASETS:
        raise ConfigError(f'`rl.prompts` = {rl.prompts!r} is not one of '
                          f'{tuple(post_datasets.DATASETS)} (jaxlm/data/post_datasets.py)')
    records = [r for r in post_datasets.DATASETS[rl.prompts](cfg.data.data_dir)
               if isinstance(r, Conversation)]
    template = None
    if rl.prompt_format == 'chat':
        template = ChatTemplate(_template_source(cfg.data))
    texts = [render(r, rl.prompt_format, template) for r in records]
    return PromptStream(records, texts, tokenizer, cfg.data.seq_len, rl.max_new_tokens,
                        cfg.seed)


def _template_source(data_cfg: ml_collections.ConfigDict) -> str:
    path = data_cfg.get('chat_template', '')
    if not path:
        return ChatTemplate().source
    with open(path) as f:
        return f.read()


# ----------------------------------------------------------------------------------- rollouts


def build_rows(prompts: Sequence[Sequence[int]], tokens_BxN: np.ndarray, logps_BxN: np.ndarray,
               lengths_B: np.ndarray, seq_len: int) -> Rows:
    """Rollout rows (jaxlm/objectives/rollout.py): row i is prompts[i] + its first
    lengths_B[i] sampled tokens, as next-token inputs/targets of `seq_len`; `old_logps` holds
    the sampler's log-probability of each completion target."""
    b = len(prompts)
    rows = {k: np.zeros((b, seq_len), np.int32)
            for k in ('inputs', 'targets', 'segment_ids', 'positions')}
    rows.update({k: np.zeros((b, seq_len), np.float32) for k in ('loss_mask', 'old_logps')})
    for i, prompt in enumerate(prompts):
        n, p = int(lengths_B[i]), len(prompt)
        seq = np.concatenate([np.asarray(prompt, np.int32), tokens_BxN[i, :n]])
        m = len(seq) - 1
        rows['inputs'][i, :m], rows['targets'][i, :m] = seq[:-1], seq[1:]
        rows['segment_ids'][i, :m] = 1
        rows['positions'][i] = np.arange(seq_len)
        rows['loss_mask'][i, p - 1:m] = 1.0
        rows['old_logps'][i, p - 1:m] = logps_BxN[i, :n]
    return rows


def group_advantages(rewards_PxG: np.ndarray) -> np.ndarray:
    """GRPO: (r - group mean) / (group std + 1e-4), the std unbiased (as TRL)."""
    mean_Px1 = rewards_PxG.mean(axis=1, keepdims=True)
    std_Px1 = rewards_PxG.std(axis=1, ddof=1, keepdims=True)
    return (rewards_PxG - mean_Px1) / (std_Px1 + 1e-4)


def gae(rewards_BxL: np.ndarray, values_BxL: np.ndarray, mask_BxL: np.ndarray, gamma: float,
        lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(advantages, returns) by generalised advantage estimation over each row's completion
    tokens (contiguous, where mask is set); the value after the last token is 0."""
    adv_BxL = np.zeros_like(rewards_BxL)
    last_B = next_value_B = np.zeros(rewards_BxL.shape[0], np.float32)
    for t in reversed(range(rewards_BxL.shape[1])):
        valid_B = mask_BxL[:, t] > 0
        delta_B = rewards_BxL[:, t] + gamma * next_value_B - values_BxL[:, t]
        last_B = np.where(valid_B, delta_B + gamma * lam * last_B, 0.0)
        next_value_B = np.where(valid_B, values_BxL[:, t], 0.0)
        adv_BxL[:, t] = last_B
    return adv_BxL, (adv_BxL + values_BxL) * mask_BxL


def whiten(x_BxL: np.ndarray, mask_BxL: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the masked entries (PPO's advantage normalisation)."""
    valid = x_BxL[mask_BxL > 0]
    return (x_BxL - valid.mean()) / (valid.std() + 1e-8) * mask_BxL


@functools.lru_cache(maxsize=8)
def _score_fn(family: Any, model: nn.Module, temperature: float) -> Any:
    """`_scores` jitted once per (family, model, temperature) in a process."""
    return jax.jit(functools.partial(_scores, family, model, temperature))


def _scores(family: Any, model: nn.Module, temperature: float, params: Any, ref_params: Any,
            batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training-forward log-probabilities of the targets under the policy and the reference,
    and the policy's values (zeros without a value head)."""
    def run(p: Any) -> tuple[jax.Array, jax.Array]:
        out = family.apply(model, p, batch)
        values = out[1] if isinstance(out, tuple) else jnp.zeros(batch['targets'].shape)
        return token_logprobs(family.token_logits(out), batch['targets'], temperature), values
    logp_BxL, values_BxL = run(params)
    ref_logp_BxL, _ = run(ref_params)
    return logp_BxL, ref_logp_BxL, values_BxL


# ------------------------------------------------------------------------------------ the run


@dataclasses.dataclass
class _RL:
    cfg: ml_collections.ConfigDict
    setup: TrainingSetup
    model: nn.Module  # not pipelined: sampling and scoring
    tokenizer: Tokenizer
    stream: PromptStream
    reward_name: str
    reward: Any  # a reward function, or a RewardModel (jaxlm/inference/reward.py)
    score_fn: Any
    reference: Any
    ckpt: Checkpointer
    writer: metrics_lib.MetricWriter
    guard: NonFiniteGuard
    eval_hook: EvalHook | None


def train_rl(cfg: ml_collections.ConfigDict, workdir: str,
             devices: Sequence[jax.Device] | None = None, eval_hook: EvalHook | None = None,
             fresh: bool = False) -> dict[str, Any]:
    """Runs (or resumes) the RL run in `workdir` up to `cfg.num_train_steps` iterations, or
    until SIGTERM / Ctrl-C (saved); returns a summary. Same contract as `loop.train`."""
    devices = list(jax.devices() if devices is None else devices)
    mesh_shape = config_lib.validate(cfg, len(devices))
    if jax.process_count() > 1:
        raise ConfigError('the RL loop runs in one process (rewards are scored on the host that '
                          'holds every rollout); use one host\'s devices')
    reward = _reward(cfg)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    with WorkdirLock(workdir):
        start_or_resume(cfg, workdir, fresh)
        tokenizer = _tokenizer(cfg)
        config_lib.check_vocab(cfg, tokenizer.vocab_size)
        stream = prompt_stream(cfg, tokenizer)
        say(f'rl: {len(stream.prompts)} prompts from {cfg.rl.prompts!r} ({stream.dropped} '
             'dropped: longer than data.seq_len + 1 - rl.max_new_tokens)')
        setup = compile_training(cfg, devices, mesh_shape)
        with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules), \
                contextlib.ExitStack() as stack:
            ckpt = open_checkpointer(cfg, workdir, stack)
            model = registry.build_model(cfg)
            reference = init_params(cfg, setup)
            start, state, meta = _restore_or_init(cfg, setup, ckpt, reference)
            write_run_files(cfg, workdir, tokenizer)
            score_fn = _score_fn(setup.family, model, cfg.rl.temperature)
            run = _RL(cfg, setup, model, tokenizer, stream, cfg.rl.reward or cfg.rl.reward_model,
                      reward, score_fn, reference, ckpt,
                      metrics_lib.MetricWriter(workdir, start),
                      NonFiniteGuard(cfg.max_skipped_steps, meta.get('skipped_steps', 0)),
                      eval_hook)
            summary = _loop(run, state, start, meta.get('prompts_seen', 0),
                            stack.enter_context(stop_notice()))
            run.writer.close()
    say(f'workdir: {workdir}')
    return {**summary, 'workdir': workdir}


def _reward(cfg: ml_collections.ConfigDict) -> Any:
    """The programmatic reward function, or the trained reward model (loaded once)."""
    if cfg.rl.reward_model:
        from jaxlm.inference.reward import RewardModel

        return RewardModel.load(cfg.rl.reward_model)
    return rewards_lib.load(cfg.rl.reward)


def _tokenizer(cfg: ml_collections.ConfigDict) -> Tokenizer:
    """The tokenizer of the run `init_params_from` comes from, else the configured one (a
    byte tokenizer, or a tokenizer file at `data.tokenizer.path`)."""
    if cfg.init_params_from:
        directory, _ = split_checkpoint_path(cfg.init_params_from)
        source = os.path.dirname(os.path.abspath(directory))
        if os.path.exists(os.path.join(source, 'config.json')):
            return run_tokenizer(source, read_run_config(source))
    t = cfg.data.tokenizer
    if t.kind == 'byte':
        return ByteTokenizer()
    if not t.path:
        raise ConfigError('an RL run needs its tokenizer: `init_params_from` inside a jaxlm run '
                          "(which keeps its own), `data.tokenizer.kind` = 'byte', or "
                          '`data.tokenizer.path`')
    return build_tokenizer(t.kind, t.vocab_size, list, None, t.path)


def _restore_or_init(cfg: ml_collections.ConfigDict, setup: TrainingSetup, ckpt: Checkpointer,
                     initial: Any) -> tuple[int, Any, dict]:
    """(start iteration, train state, checkpoint metadata)."""
    restored = ckpt.restore_latest(checkpointed(setup.abstract_state), None)
    copy = functools.partial(jax.tree.map, jnp.copy)  # the state is donated to the train step
    if restored is not None:
        start, state, meta = restored
        if setup.tuning.keep_frozen:
            state['frozen'] = copy(initial)
        say(f'resumed from {ckpt.directory}/{start}')
        return start, state, meta
    state = state_from_params(copy(initial), setup.tx, cfg.seed, setup.state_shardings,
                              setup.tuning, setup.model, cfg.data.seq_len)
    return 0, state, {}


def _loop(run: _RL, state: Any, start: int, position: int, notice: Any) -> dict[str, Any]:
    cfg = run.cfg
    total, every = cfg.num_train_steps, cfg.checkpoint_every_steps
    it, preempted, record = start, False, {}
    while it < total and not preempted:
        state, record = _iteration(run, state, it, position)
        it, position = it + 1, position + cfg.rl.prompts_per_iteration
        preempted = notice.requested(it) and it < total
        run.guard.check()
        if it % cfg.log_every_steps == 0 or it == total:
            run.writer.write(it, record)
            say(f'iter {it:>5}/{total} | reward {record["reward_mean"]:.3f} | kl '
                 f'{record["kl"]:.4f} | len {record["response_length"]:.1f} | clip '
                 f'{record["clip_fraction"]:.3f} | gen {record["generation_share"]:.0%}')
        if run.eval_hook is not None and (it % cfg.eval_every_steps == 0 or it == total):
            params = run.setup.tuning.model_params(state['params'], state.get('frozen'))
            run.writer.write(it, run.eval_hook(it, run.model, params, run.tokenizer))
        if it % every == 0 or it == total or preempted:
            run.ckpt.save(it, checkpointed(state), None,
                          {'step': it, 'prompts_seen': position,
                           'skipped_steps': run.guard.skipped})
    if preempted:
        say(f'stopped by {notice.signal_name} after iteration {it}: run the same command to '
             'resume')
    return {'step': it, 'stopped_by': notice.signum if preempted else 0, **record}


def _iteration(run: _RL, state: Any, it: int, position: int) -> tuple[Any, dict[str, float]]:
    """Iteration `it` (0-based) on the prompts from `position`: new state and its report."""
    cfg, rl, setup = run.cfg, run.cfg.rl, run.setup
    t0 = time.perf_counter()
    prompts = run.stream.take(position, rl.prompts_per_iteration)
    repeated = [p.tokens for p in prompts for _ in range(rl.group_size)]
    params = setup.tuning.model_params(state['params'], state.get('frozen'))
    seed = int(np.random.default_rng([cfg.seed, it]).integers(2 ** 31))
    tokens, logps, lengths = decode.generate_with_logprobs(
        run.model, params, repeated, max_new_tokens=rl.max_new_tokens,
        temperature=rl.temperature, seed=seed, eos_id=run.tokenizer.eos_id, mesh=setup.mesh,
        rules=setup.rules)
    generation_s = time.perf_counter() - t0
    rewards_PxG = _score(run, prompts, tokens, lengths)
    rows = build_rows(repeated, tokens, logps, lengths, cfg.data.seq_len)
    batch = jax.device_put(rows, setup.batch_sharding)
    logp, ref_logp, values = jax.device_get(run.score_fn(params, run.reference, batch))
    mask = rows['loss_mask']
    rows['ref_logps'] = ref_logp * mask
    _advantages(rl, setup.objective.extra_fields, rows, rewards_PxG, values)
    state, train = _train(run, state, rows, it)
    kl = float((k3_kl(rows['old_logps'], rows['ref_logps']) * mask).sum() / mask.sum())
    record = {'reward_mean': float(rewards_PxG.mean()), 'reward_std': float(rewards_PxG.std()),
              'kl': kl, 'response_length': float(lengths.mean()),
              'logp_gap': float(np.abs((logp - rows['old_logps']) * mask).max()),
              'generation_share': generation_s / (time.perf_counter() - t0), **train}
    return state, record


def _score(run: _RL, prompts: Sequence[Prompt], tokens: np.ndarray,
           lengths: np.ndarray) -> np.ndarray:
    """Rewards [prompts, group] of the completions (decoded without their stop token)."""
    g = run.cfg.rl.group_size
    out = []
    for k, prompt in enumerate(prompts):
        texts = [run.tokenizer.decode(_without_stop(tokens[i, :lengths[i]],
                                                    run.tokenizer.eos_id))
                 for i in range(k * g, (k + 1) * g)]
        fn = run.reward
        if not callable(fn):  # a reward model scores the conversation
            fn = functools.partial(rewards_lib.model_reward, run.reward, prompt.messages)
        out.append(rewards_lib.score_group(fn, run.reward_name, prompt.index, prompt.text,
                                           texts, prompt.answer))
    return np.stack(out)


def _without_stop(tokens: np.ndarray, eos_id: int) -> list[int]:
    tokens = tokens.tolist()
    return tokens[:-1] if tokens and tokens[-1] == eos_id else tokens


def _advantages(rl: ml_collections.ConfigDict, fields: tuple[str, ...], rows: Rows,
                rewards_PxG: np.ndarray, values_BxL: np.ndarray) -> None:
    """Fills the rows' advantages (and PPO's returns and old values) in place."""
    mask = rows['loss_mask']
    if 'returns' not in fields:  # GRPO: one advantage per completion, on each of its tokens
        rows['advantages'] = group_advantages(rewards_PxG).reshape(-1)[:, None] * mask
        return
    old_values = values_BxL * mask
    token_rewards = -rl.kl_coef * (rows['old_logps'] - rows['ref_logps']) * mask
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)  # each row's last token
    token_rewards[np.arange(len(last)), last] += rewards_PxG.reshape(-1)
    adv, returns = gae(token_rewards, old_values, mask, rl.gamma, rl.lam)
    rows.update(advantages=whiten(adv, mask), returns=returns, old_values=old_values)


def _train(run: _RL, state: Any, rows: Rows, it: int) -> tuple[Any, dict[str, float]]:
    """`rl.epochs` shuffled passes over the rollouts; the train steps' mean metrics."""
    cfg, setup = run.cfg, run.setup
    n, size = len(rows['inputs']), cfg.data.global_batch_size
    fields = list(setup.abstract_batch)
    history = []
    for epoch in range(cfg.rl.epochs):
        order = np.random.default_rng([cfg.seed, it, epoch]).permutation(n)
        for chunk in np.split(order, n // size):
            batch = jax.device_put({k: rows[k][chunk] for k in fields}, setup.batch_sharding)
            state, step_metrics = setup.train_step(state, batch)
            history.append(step_metrics)
            run.guard.observe(it * cfg.rl.epochs * (n // size) + len(history), step_metrics)
    history = jax.device_get(history)
    keys = [k for k in history[0] if k not in ('skipped', 'num_tokens')]
    return state, {k: float(np.mean([h[k] for h in history])) for k in keys}
