"""The training run: validate, build, initialise or resume, then step, log, evaluate, save."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from jaxlm import config as config_lib
from jaxlm import sharding
from jaxlm.checkpoints import (
    has_checkpoints,
    restore_params,
    saved_vocab_size,
    split_checkpoint_path,
)
from jaxlm.data import pipeline as data_pipeline
from jaxlm.data import shards
from jaxlm.data.pipeline import DataPipeline
from jaxlm.data.tokenizers import TOKENIZER_FILE, Tokenizer
from jaxlm.distributed import describe_processes
from jaxlm.errors import ConfigError
from jaxlm.inference.load import local_device
from jaxlm.models import lora as lora_lib
from jaxlm.models import registry
from jaxlm.models.family import ModelFamily
from jaxlm.models.vocab import EMBEDDING, LM_HEAD, grow_vocab
from jaxlm.objectives import registry as objectives
from jaxlm.objectives.base import Objective
from jaxlm.trainer import metrics as metrics_lib
from jaxlm.trainer import storage
from jaxlm.trainer.checkpoint import Checkpointer, check_same_run, set_aside_run
from jaxlm.trainer.optim import make_optimizer, make_schedule
from jaxlm.trainer.preemption import stop_notice
from jaxlm.trainer.state import (
    abstract_state,
    check_divisible,
    init_state,
    seed_params,
    state_from_params,
    state_shardings,
    with_shardings,
)
from jaxlm.trainer.step import NonFiniteGuard, make_eval_step, make_train_step
from jaxlm.trainer.tuning import Tuning, checkpointed, weights
from jaxlm.trainer.workdir_lock import WorkdirLock


def batch_shapes(cfg: ml_collections.ConfigDict) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Global shape and dtype of every batch field: the model family's inputs and the
    objective's targets."""
    fields = {**registry.family(cfg.model).input_fields(cfg.data),
              **objectives.build(cfg).target_fields(cfg.data)}
    return {k: ((cfg.data.global_batch_size, *f.shape), f.dtype) for k, f in fields.items()}


def build_data(cfg: ml_collections.ConfigDict, process_index: int,
               process_count: int) -> DataPipeline:
    """The configured source through the configured objective; every one yields
    `batch_shapes(cfg)`."""
    return data_pipeline.build_data(cfg, objectives.build(cfg), process_index, process_count)


@dataclasses.dataclass
class TrainingSetup:
    mesh: Mesh
    rules: tuple
    model: nn.Module
    family: ModelFamily
    objective: Objective
    tx: optax.GradientTransformation
    state_shardings: Any
    batch_sharding: NamedSharding
    abstract_state: Any  # ShapeDtypeStructs carrying the target shardings
    abstract_batch: dict[str, jax.ShapeDtypeStruct]
    train_step: Any  # the AOT-compiled step
    compile_seconds: float
    tuning: Tuning

    @property
    def abstract_base(self) -> Any:
        """The model's parameters (abstract, with their shardings)."""
        return self.abstract_state.get('frozen', self.abstract_state['params'])

    @property
    def apply_fn(self) -> Callable[..., jax.Array]:
        return functools.partial(self.family.apply, self.model)


def compile_training(cfg: ml_collections.ConfigDict, devices: Sequence[jax.Device],
                     mesh_shape: dict[str, int]) -> TrainingSetup:
    """Builds the model, objective, optimizer and shardings and AOT-compiles the train step,
    allocating nothing: also what benchmarks/aot_memory.py uses to size a 7B run on a simulated
    mesh."""
    rules = config_lib.rules_as_tuples(cfg.logical_axis_rules)
    mesh = sharding.make_mesh(mesh_shape, devices)
    model = registry.build_model(cfg, mesh_shape)
    family, objective = registry.family(cfg.model), objectives.build(cfg)
    tx = make_optimizer(cfg.optimizer)
    tuning = Tuning.from_config(cfg, objective)
    seq_len = cfg.data.seq_len
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        check_divisible(model, mesh, rules, seq_len)
        state_sh = state_shardings(model, tx, mesh, rules, seq_len, tuning)
        batch_sh = sharding.batch_sharding(mesh, rules)
        abstract = with_shardings(abstract_state(model, tx, seq_len, tuning), state_sh)
        abstract_batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sh)
                          for k, (shape, dtype) in batch_shapes(cfg).items()}
        t0 = time.perf_counter()
        step_fn = make_train_step(functools.partial(family.apply, model), objective, tx,
                                  make_schedule(cfg.optimizer), cfg.optimizer.grad_accum_steps,
                                  deterministic=cfg.model.dropout_rate == 0.0, tuning=tuning)
        compiled = jax.jit(step_fn, in_shardings=(state_sh, batch_sh),
                           out_shardings=(state_sh, None),
                           donate_argnums=0).lower(abstract, abstract_batch).compile()
        compile_s = time.perf_counter() - t0
    return TrainingSetup(mesh, rules, model, family, objective, tx, state_sh, batch_sh, abstract,
                         abstract_batch, compiled, compile_s, tuning)


def say(msg: str) -> None:
    """Prints on process 0."""
    if jax.process_index() == 0:
        print(msg, flush=True)


def _global_batch(local: dict[str, np.ndarray], batch_sharding: Any) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(batch_sharding, v)
            for k, v in local.items()}


def evaluate(eval_fn: Any, weights: Any, batches: list[dict[str, jax.Array]]
             ) -> dict[str, float]:
    """Held-out loss (and its perplexity) and the objective's metrics, over all `batches`."""
    loss_sum = tokens = 0.0
    metric_sums: dict[str, float] = {}
    for b in batches:
        out = jax.device_get(eval_fn(weights, b))
        loss_sum += float(out['loss_sum'])
        tokens += float(out['num_tokens'])
        for k, v in out['metric_sums'].items():
            metric_sums[k] = metric_sums.get(k, 0.0) + float(v)
    denom = max(tokens, 1.0)
    loss = loss_sum / denom
    return {'eval_loss': loss, 'eval_perplexity': math.exp(min(loss, 80.0)),
            'eval_tokens': tokens, **{f'eval_{k}': v / denom for k, v in metric_sums.items()}}


# (step, model, params, tokenizer) -> scalars to log; the CLI builds one from `config.eval` so
# that the trainer does not depend on the evaluation package.
EvalHook = Callable[[int, nn.Module, Any, Any], dict[str, float]]


def train(cfg: ml_collections.ConfigDict, workdir: str,
          devices: Sequence[jax.Device] | None = None,
          eval_hook: EvalHook | None = None, fresh: bool = False) -> dict[str, Any]:
    """Runs (or resumes) the run in `workdir` up to `cfg.num_train_steps`, or until SIGTERM or
    Ctrl-C (saved; the summary's `stopped_by` is that signal's number); returns a summary.
    `fresh`: start over, moving the workdir's checkpoints aside, instead of resuming.

    Process 0 holds the workdir's lock (`workdir_lock.py`) for the whole run."""
    devices = list(jax.devices() if devices is None else devices)
    mesh_shape = config_lib.validate(cfg, len(devices))  # before anything is built or compiled
    workdir = os.path.abspath(workdir)
    if jax.process_index() != 0:
        return _train(cfg, workdir, devices, mesh_shape, eval_hook, fresh)
    os.makedirs(workdir, exist_ok=True)
    with WorkdirLock(workdir):
        return _train(cfg, workdir, devices, mesh_shape, eval_hook, fresh)


@dataclasses.dataclass
class _Run:
    """What the step loop works with, once the run is prepared."""

    cfg: ml_collections.ConfigDict
    setup: TrainingSetup
    data: DataPipeline
    ckpt: Checkpointer
    writer: metrics_lib.MetricWriter
    guard: NonFiniteGuard
    eval_hook: EvalHook | None
    flops_per_step: float
    peak_flops: float

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.data.global_batch_size * self.cfg.data.seq_len  # decoder tokens


def _train(cfg: ml_collections.ConfigDict, workdir: str, devices: list[jax.Device],
           mesh_shape: dict[str, int], eval_hook: EvalHook | None,
           fresh: bool) -> dict[str, Any]:
    start_or_resume(cfg, workdir, fresh)
    data = build_data(cfg, jax.process_index(), jax.process_count())
    config_lib.check_vocab(cfg, data.tokenizer.vocab_size)
    say(f'data: {json.dumps(data.stats, sort_keys=True)}')
    setup = compile_training(cfg, devices, mesh_shape)

    with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules), \
            contextlib.ExitStack() as stack:
        ckpt = open_checkpointer(cfg, workdir, stack)
        start_step, state, skipped = _restore_or_init(cfg, setup, ckpt, data)
        if jax.process_index() == 0:  # only once the checkpoints are known to fit this config
            write_run_files(cfg, workdir, data.tokenizer)
        # A read-only or too full checkpoint directory fails now, not after the first interval.
        storage.check_writable(ckpt.directory, storage.local_bytes(state))
        run = _Run(cfg, setup, data, ckpt,
                   metrics_lib.MetricWriter(workdir, start_step, enabled=jax.process_index() == 0),
                   NonFiniteGuard(cfg.max_skipped_steps, skipped), eval_hook,
                   *_banner(cfg, setup, devices))
        summary = _loop(run, state, start_step, stack.enter_context(stop_notice()))
        run.writer.close()
    say(f'workdir: {workdir}')
    return {**summary, 'workdir': workdir}


def open_checkpointer(cfg: ml_collections.ConfigDict, workdir: str,
                      stack: contextlib.ExitStack) -> Checkpointer:
    """The workdir's checkpointer, closed when `stack` exits: after waiting for the save in
    flight, so saves made stay complete whatever stops the run."""
    ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'), keep=cfg.keep_checkpoints,
                        async_save=cfg.async_checkpointing)
    stack.callback(ckpt.close)
    stack.callback(ckpt.wait)  # first (last in)
    return ckpt


def _restore_or_init(cfg: ml_collections.ConfigDict, setup: TrainingSetup, ckpt: Checkpointer,
                     data: DataPipeline) -> tuple[int, Any, int]:
    """(start step, state, skipped steps so far): the workdir's latest checkpoint (with the data
    iterator), else the parameters of `init_params_from` with a fresh optimizer, else a fresh
    initialisation. Frozen parameters (tuning.py) always come from `init_params_from`."""
    restored = ckpt.restore_latest(checkpointed(setup.abstract_state), data.train_iter)
    if restored is not None:
        start_step, state, meta = restored
        say(f'resumed from {ckpt.directory}/{start_step}')
        if setup.tuning.keep_frozen:
            state['frozen'] = init_params(cfg, setup)
        return start_step, state, meta.get('skipped_steps', 0)
    if cfg.init_params_from:
        state = state_from_params(init_params(cfg, setup), setup.tx, cfg.seed,
                                  setup.state_shardings, setup.tuning, setup.model,
                                  cfg.data.seq_len)
        return 0, state, 0
    return 0, init_state(setup.model, setup.tx, cfg.seed, cfg.data.seq_len,
                         setup.state_shardings, setup.tuning), 0


def init_params(cfg: ml_collections.ConfigDict, setup: TrainingSetup) -> Any:
    """The model parameters a fresh run starts from, on the run's shardings: the seed's
    initialisation, or those of `init_params_from` (with the family's `fresh_heads` from the
    seed's)."""
    shardings = jax.tree.map(lambda a: a.sharding, setup.abstract_base)
    seeded = functools.partial(seed_params, setup.model, cfg.seed, cfg.data.seq_len)
    if not cfg.init_params_from:
        return jax.jit(seeded, out_shardings=shardings)()
    fresh = setup.family.fresh_heads
    params = _restore_init_params(cfg, {k: v for k, v in setup.abstract_base.items()
                                        if k not in fresh})
    if fresh:
        init = jax.jit(seeded, out_shardings=shardings)()
        params = {**params, **{k: init[k] for k in fresh}}
        say(f'started {", ".join(fresh)} from the seed\'s initialisation')
    return params


def _restore_init_params(cfg: ml_collections.ConfigDict, target: Any) -> Any:
    """The parameters `target` names of `init_params_from`. A checkpoint with a smaller
    vocabulary (a chat fine-tune adding special tokens) grows to the config's, every existing
    row unchanged (jaxlm/models/vocab.py)."""
    directory, step = split_checkpoint_path(cfg.init_params_from)
    saved_rows = saved_vocab_size(directory, step)
    if saved_rows is None or saved_rows == cfg.model.vocab_size:
        params_step, params = restore_params(directory, target, step)
    else:
        if saved_rows > cfg.model.vocab_size or cfg.lora.rank:
            raise ConfigError(
                f'`init_params_from` {cfg.init_params_from} has a vocabulary of {saved_rows} '
                f'tokens and `model.vocab_size` is {cfg.model.vocab_size}: it can only grow, '
                'and not under LoRA (new rows would stay untrained)')
        host = jax.tree.map(_unsharded, target)
        rows = dict(host)
        rows[EMBEDDING[0]] = {EMBEDDING[1]: jax.ShapeDtypeStruct(
            (saved_rows, cfg.model.d_model), host[EMBEDDING[0]][EMBEDDING[1]].dtype)}
        if LM_HEAD[0] in host:
            rows[LM_HEAD[0]] = jax.ShapeDtypeStruct((cfg.model.d_model, saved_rows),
                                                    host[LM_HEAD[0]].dtype)
        params_step, params = restore_params(directory, rows, step)
        params = jax.device_put(grow_vocab(jax.device_get(params), cfg.model.vocab_size),
                                jax.tree.map(lambda a: a.sharding, target))
        say(f'grew the vocabulary of {directory} from {saved_rows} to '
             f'{cfg.model.vocab_size} tokens (new rows: the mean of the existing ones)')
    say(f'initialised parameters from {directory} (step {params_step}); fresh optimizer')
    return params


def _unsharded(a: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=local_device())


def write_run_files(cfg: ml_collections.ConfigDict, workdir: str,
                    tokenizer: Tokenizer) -> None:
    """The resolved config, and the run's own copy of its tokenizer, so sampling and evaluation
    never need the corpus."""
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
        f.write(cfg.to_json_best_effort(indent=2, sort_keys=True))
    model_path = getattr(tokenizer, 'model_path', None)
    if model_path is not None:
        own = os.path.join(workdir, TOKENIZER_FILE)  # already there in a converted run
        if not (os.path.exists(own) and os.path.samefile(model_path, own)):
            shutil.copyfile(model_path, own)
    elif cfg.data.source == 'shards':  # an HF tokenizer.json (a model file is copied above)
        shards.copy_tokenizer_files('hf', cfg.data.shards_dir, workdir)


def _banner(cfg: ml_collections.ConfigDict, setup: TrainingSetup,
            devices: list[jax.Device]) -> tuple[float, float]:
    """Prints the mesh, processes, pipeline, model size, compile time, memory and peak FLOP/s;
    returns (training FLOPs per step, peak FLOP/s of the devices)."""
    model, family = setup.model, setup.family
    num_params = family.count_params(model.cfg)
    flops_per_step = family.flops_per_example(model.cfg, cfg.data) * cfg.data.global_batch_size
    mem = metrics_lib.memory_summary(setup.train_step)
    peak, peak_source = metrics_lib.peak_flops(devices, model.cfg.dtype)
    say(f'mesh: {sharding.describe_mesh(setup.mesh)}')
    say(describe_processes(setup.mesh))
    if model.pipeline.enabled:
        say(model.pipeline.describe(model.cfg.num_layers))
    say(f'model: {num_params:,} parameters; {flops_per_step / 1e12:.4f} TFLOP per step '
         f'({cfg.data.global_batch_size * cfg.data.seq_len} tokens)')
    say('tuning: ' + setup.tuning.describe(lora_lib.count(setup.abstract_state['params']),
                                            num_params))
    say('compiled train step in {:.1f}s; memory per device: {}'.format(
        setup.compile_seconds,
        ', '.join(f'{k} {metrics_lib.format_bytes(v)}' for k, v in mem.items())))
    say(f'peak: {peak / 1e12:.3f} TFLOP/s ({peak_source})')
    return flops_per_step, peak


def _loop(run: _Run, state: Any, start_step: int, notice: Any) -> dict[str, Any]:
    """Steps from `start_step` to `num_train_steps`: logs, evaluates and saves on their
    intervals; stops early (saved) when `notice` reports a stop signal."""
    cfg, setup = run.cfg, run.setup
    total = cfg.num_train_steps
    eval_step = jax.jit(make_eval_step(setup.apply_fn, setup.objective, setup.tuning),
                        in_shardings=(weights(setup.state_shardings), setup.batch_sharding))
    eval_batches = [_global_batch(b, setup.batch_sharding) for b in run.data.eval_batches]
    clock = _Clock(start_step)
    last_eval: dict[str, float] = {}
    step, preempted = start_step, False
    while step < total and not preempted:
        batch = _global_batch(next(run.data.train_iter), setup.batch_sharding)
        state, step_metrics = setup.train_step(state, batch)
        step += 1
        clock.steps += 1
        run.guard.observe(step, step_metrics)
        preempted = notice.requested(step) and step < total  # at `total` it is done anyway
        if step % cfg.log_every_steps == 0 or step == total:
            _log_step(run, step, step_metrics, clock)
        if step % cfg.eval_every_steps == 0 or step == total:
            with clock.paused():  # evaluation is not training time
                last_eval = _evaluate(run, step, eval_step, state, eval_batches)
        if step % cfg.checkpoint_every_steps == 0 or step == total or preempted:
            run.guard.check()  # a step over the limit stops the run before it is saved
            run.ckpt.save(step, checkpointed(state), run.data.train_iter,
                          {'step': step, 'skipped_steps': run.guard.skipped})
    if preempted:
        say(f'stopped by {notice.signal_name} after step {step}, saved as '
             f'{run.ckpt.directory}/{step}: run the same command to resume')
    return {'step': step, 'stopped_by': notice.signum if preempted else 0, **last_eval}


class _Clock:
    """Training time and steps since the last log line (evaluation excluded), and since the
    run (re)started, for throughput, MFU and the ETA."""

    def __init__(self, start_step: int) -> None:
        self.start_step = start_step
        self.run_t0 = self.window_t0 = time.perf_counter()
        self.steps = 0  # in the current window

    @contextlib.contextmanager
    def paused(self) -> Any:
        t0 = time.perf_counter()
        yield
        self.window_t0 += time.perf_counter() - t0

    def lap(self) -> tuple[int, float]:
        """(steps, seconds) of the window; starts the next one."""
        now = time.perf_counter()
        window = (self.steps, now - self.window_t0)
        self.window_t0, self.steps = now, 0
        return window


def _log_step(run: _Run, step: int, step_metrics: dict, clock: _Clock) -> None:
    run.guard.check()
    m = jax.device_get(step_metrics)
    total, tokens_per_step = run.cfg.num_train_steps, run.tokens_per_step
    steps, seconds = clock.lap()
    tps = steps * tokens_per_step / seconds
    mfu = tps * run.flops_per_step / tokens_per_step / run.peak_flops
    record = {**{k: v for k, v in m.items() if k not in ('num_tokens', 'skipped')},
              'tokens_per_sec': tps, 'mfu': mfu, 'tokens_seen': float(step * tokens_per_step),
              'skipped_steps': run.guard.skipped}
    run.writer.write(step, record)
    eta = (time.perf_counter() - clock.run_t0) / (step - clock.start_step) * (total - step)
    say(f'step {step:>6}/{total} | loss {float(m["loss"]):.4f} | '
         f'lr {float(m["learning_rate"]):.2e} | {tps:,.0f} tok/s | mfu {mfu:.1%} | '
         f'eta {metrics_lib.format_duration(eta)}')


def _evaluate(run: _Run, step: int, eval_step: Any, state: Any,
              batches: list[dict[str, jax.Array]]) -> dict[str, float]:
    """Held-out loss, then the eval hook's task scores (if any); logged and returned."""
    total = run.cfg.num_train_steps
    result = evaluate(eval_step, weights(state), batches)
    say(f'eval  {step:>6}/{total} | eval_loss {result["eval_loss"]:.4f} | '
         f'perplexity {result["eval_perplexity"]:.2f}')
    if run.eval_hook is not None:
        # Task batches are not split into pipeline microbatches: same parameters, layers in
        # sequence.
        params = run.setup.tuning.model_params(state['params'], state.get('frozen'))
        tasks = run.eval_hook(step, registry.build_model(run.cfg), params, run.data.tokenizer)
        say(f'tasks {step:>6}/{total} | ' + ' | '.join(f'{k} {v:.4f}' for k, v in tasks.items()))
        result = {**result, **tasks}
    run.writer.write(step, result)
    return result


def start_or_resume(cfg: ml_collections.ConfigDict, workdir: str, fresh: bool) -> None:
    """Refuses a config that does not fit the workdir's checkpoints, leaving them untouched;
    with `fresh` moves the previous run aside instead, so this one starts over."""
    if fresh:
        moved = set_aside_run(workdir)
        if moved:
            say(f'--fresh: moved the previous run (checkpoints, config, metrics) to {moved}')
        # No process may list the checkpoints before process 0 has moved them.
        multihost_utils.sync_global_devices('jaxlm.train: fresh')
    elif has_checkpoints(os.path.join(workdir, 'checkpoints')):
        # Frozen parameters are read again from init_params_from: it must not change.
        keeps_frozen = Tuning.from_config(cfg, objectives.build(cfg)).keep_frozen
        fixed = ('init_params_from',) if keeps_frozen else ()
        check_same_run(os.path.join(workdir, 'config.json'), cfg, fixed)
