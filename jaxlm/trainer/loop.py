"""The training run: validate, build, initialise or resume, then step, log, evaluate, save."""

from __future__ import annotations

import contextlib
import dataclasses
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
from jaxlm.data import shards
from jaxlm.data.grain_pipeline import DataPipeline, build_pipeline
from jaxlm.data.span_corruption import build_span_corruption_pipeline
from jaxlm.distributed import describe_processes
from jaxlm.layers.pipeline import PipelineSchedule
from jaxlm.models import encoder_decoder
from jaxlm.models.encoder_decoder import EncoderDecoder
from jaxlm.models.transformer import Transformer, TransformerConfig, count_params
from jaxlm.trainer import metrics as metrics_lib
from jaxlm.trainer import storage
from jaxlm.trainer.checkpoint import (
    Checkpointer,
    check_same_run,
    has_checkpoints,
    restore_params,
    set_aside_run,
    split_checkpoint_path,
)
from jaxlm.trainer.optim import make_optimizer, make_schedule
from jaxlm.trainer.preemption import stop_notice
from jaxlm.trainer.state import (
    abstract_state,
    check_divisible,
    init_state,
    state_from_params,
    state_shardings,
    with_shardings,
)
from jaxlm.trainer.step import NonFiniteGuard, make_eval_step, make_train_step
from jaxlm.trainer.workdir_lock import WorkdirLock

BATCH_KEYS = ('inputs', 'targets', 'segment_ids', 'positions', 'loss_mask')
# An encoder-decoder batch adds the encoder's tokens and packing layout ([batch, inputs_len]);
# the decoder fields above hold the (shifted) targets.
ENCODER_BATCH_KEYS = ('encoder_inputs', 'encoder_segment_ids', 'encoder_positions')
TOKENIZER_FILE = 'tokenizer.model'


def build_model(cfg: ml_collections.ConfigDict,
                mesh_shape: dict[str, int] | None = None) -> Transformer | EncoderDecoder:
    """The model; its layer stacks are pipelined over the `stage` axis of `mesh_shape`
    (training) when it is > 1."""
    model_cfg = TransformerConfig.from_config(cfg.model)
    schedule = PipelineSchedule()
    if mesh_shape is not None and mesh_shape['stage'] > 1:
        schedule = PipelineSchedule(mesh_shape['stage'], cfg.pipeline.num_microbatches,
                                    cfg.pipeline.num_repeats)
    if model_cfg.architecture == 'encoder_decoder':
        return EncoderDecoder(model_cfg, schedule)
    return Transformer(model_cfg, schedule)


def batch_shapes(cfg: ml_collections.ConfigDict) -> dict[str, tuple[tuple[int, int], Any]]:
    """Global shape and dtype of every batch field the configured model reads."""
    b, d = cfg.data.global_batch_size, cfg.data
    shapes = {k: ((b, d.seq_len), np.float32 if k == 'loss_mask' else np.int32)
              for k in BATCH_KEYS}
    if cfg.model.architecture == 'encoder_decoder':
        shapes.update({k: ((b, d.inputs_len), np.int32) for k in ENCODER_BATCH_KEYS})
    return shapes


def build_data(cfg: ml_collections.ConfigDict, process_index: int,
               process_count: int) -> DataPipeline:
    """The configured source and objective; every one yields `batch_shapes(cfg)`."""
    d = cfg.data
    if d.source == 'seqio':
        from jaxlm.data.seqio_tasks import build_seqio_pipeline  # noqa: PLC0415 (TF is slow)

        return build_seqio_pipeline(cfg, process_index=process_index,
                                    process_count=process_count)
    if d.objective == 'span_corruption':
        return build_span_corruption_pipeline(d, seed=cfg.seed, process_index=process_index,
                                              process_count=process_count)
    return build_pipeline(d, seed=cfg.seed, process_index=process_index,
                          process_count=process_count)


def model_size_and_flops(cfg: ml_collections.ConfigDict,
                         model_cfg: TransformerConfig) -> tuple[int, float]:
    """(parameters, training FLOPs per step) of the configured model."""
    d = cfg.data
    if model_cfg.architecture == 'encoder_decoder':
        return (encoder_decoder.count_params(model_cfg), d.global_batch_size
                * encoder_decoder.flops_per_example(model_cfg, d.inputs_len, d.seq_len))
    return (count_params(model_cfg),
            metrics_lib.flops_per_token(model_cfg, d.seq_len) * d.global_batch_size * d.seq_len)


@dataclasses.dataclass
class TrainingSetup:
    mesh: Mesh
    rules: tuple
    model: Transformer
    tx: optax.GradientTransformation
    state_shardings: Any
    batch_sharding: NamedSharding
    abstract_state: Any  # ShapeDtypeStructs carrying the target shardings
    abstract_batch: dict[str, jax.ShapeDtypeStruct]
    train_step: Any  # the AOT-compiled step
    compile_seconds: float


def compile_training(cfg: ml_collections.ConfigDict, devices: Sequence[jax.Device],
                     mesh_shape: dict[str, int]) -> TrainingSetup:
    """Builds the model, optimizer and shardings and AOT-compiles the train step, allocating
    nothing: also what benchmarks/aot_memory.py uses to size a 7B run on a simulated mesh."""
    rules = config_lib.rules_as_tuples(cfg.logical_axis_rules)
    mesh = sharding.make_mesh(mesh_shape, devices)
    model = build_model(cfg, mesh_shape)
    tx = make_optimizer(cfg.optimizer)
    seq_len = cfg.data.seq_len
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        check_divisible(model, mesh, rules, seq_len)
        state_sh = state_shardings(model, tx, mesh, rules, seq_len)
        batch_sh = sharding.batch_sharding(mesh, rules)
        abstract = with_shardings(abstract_state(model, tx, seq_len), state_sh)
        abstract_batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sh)
                          for k, (shape, dtype) in batch_shapes(cfg).items()}
        t0 = time.perf_counter()
        step_fn = make_train_step(model, tx, make_schedule(cfg.optimizer), cfg.optimizer,
                                  deterministic=cfg.model.dropout_rate == 0.0)
        compiled = jax.jit(step_fn, in_shardings=(state_sh, batch_sh),
                           out_shardings=(state_sh, None),
                           donate_argnums=0).lower(abstract, abstract_batch).compile()
        compile_s = time.perf_counter() - t0
    return TrainingSetup(mesh, rules, model, tx, state_sh, batch_sh, abstract, abstract_batch,
                         compiled, compile_s)


def _say(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, flush=True)


def _global_batch(local: dict[str, np.ndarray], batch_sharding: Any) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(batch_sharding, v)
            for k, v in local.items()}


def evaluate(eval_fn: Any, params: Any, batches: list[dict[str, jax.Array]]) -> dict[str, float]:
    loss_sum = tokens = 0.0
    for b in batches:
        out = jax.device_get(eval_fn(params, b))
        loss_sum += float(out['loss_sum'])
        tokens += float(out['num_tokens'])
    loss = loss_sum / max(tokens, 1.0)
    return {'eval_loss': loss, 'eval_perplexity': math.exp(min(loss, 80.0)),
            'eval_tokens': tokens}


# (step, model, params, tokenizer) -> scalars to log; the CLI builds one from `config.eval` so
# that the trainer does not depend on the evaluation package.
EvalHook = Callable[[int, Transformer, Any, Any], dict[str, float]]


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


def _train(cfg: ml_collections.ConfigDict, workdir: str, devices: list[jax.Device],
           mesh_shape: dict[str, int], eval_hook: EvalHook | None,
           fresh: bool) -> dict[str, Any]:
    is_main = jax.process_index() == 0
    _start_or_resume(cfg, workdir, fresh)

    data = build_data(cfg, jax.process_index(), jax.process_count())
    config_lib.check_vocab(cfg, data.tokenizer.vocab_size)
    _say(f'data: {json.dumps(data.stats, sort_keys=True)}')

    setup = compile_training(cfg, devices, mesh_shape)
    mesh, rules, model, state_sh, batch_sh = (setup.mesh, setup.rules, setup.model,
                                              setup.state_shardings, setup.batch_sharding)
    model_cfg, tx, seq_len = model.cfg, setup.tx, cfg.data.seq_len
    train_step, compile_s = setup.train_step, setup.compile_seconds

    with jax.set_mesh(mesh), nn.logical_axis_rules(rules), contextlib.ExitStack() as run:
        ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'), keep=cfg.keep_checkpoints,
                            async_save=cfg.async_checkpointing)
        run.callback(ckpt.close)
        run.callback(ckpt.wait)  # first (last in): saves made stay complete, whatever stops us
        restored = ckpt.restore_latest(setup.abstract_state, data.train_iter)
        if restored is None and cfg.init_params_from:
            directory, step = split_checkpoint_path(cfg.init_params_from)
            params_step, params = restore_params(directory, setup.abstract_state['params'], step)
            state = state_from_params(params, tx, cfg.seed, state_sh)
            start_step = 0
            _say(f'initialised parameters from {directory} (step {params_step}); fresh optimizer')
        elif restored is None:
            state = init_state(model, tx, cfg.seed, seq_len, state_sh)
            start_step = 0
        else:
            start_step, state, _ = restored
            _say(f'resumed from {ckpt.directory}/{start_step}')
        guard = NonFiniteGuard(cfg.max_skipped_steps,
                               skipped=restored[2].get('skipped_steps', 0) if restored else 0)
        if is_main:  # only once the checkpoints are known to fit this config
            with open(os.path.join(workdir, 'config.json'), 'w') as f:
                f.write(cfg.to_json_best_effort(indent=2, sort_keys=True))
            # The run carries its tokenizer, so sampling and evaluation never need the corpus.
            model_path = getattr(data.tokenizer, 'model_path', None)
            if model_path is not None:
                own = os.path.join(workdir, TOKENIZER_FILE)  # already there in a converted run
                if not (os.path.exists(own) and os.path.samefile(model_path, own)):
                    shutil.copyfile(model_path, own)
            elif cfg.data.source == 'shards':  # an HF tokenizer.json (a model file is copied above)
                shards.copy_tokenizer_files('hf', cfg.data.shards_dir, workdir)
        # A read-only or too full checkpoint directory fails now, not after the first interval.
        storage.check_writable(ckpt.directory, storage.local_bytes(state))
        writer = metrics_lib.MetricWriter(workdir, start_step, enabled=is_main)
        eval_step = jax.jit(make_eval_step(model), in_shardings=(state_sh['params'], batch_sh))

        num_params, flops_per_step = model_size_and_flops(cfg, model_cfg)
        mem = metrics_lib.memory_summary(train_step)
        peak, peak_source = metrics_lib.peak_flops(devices, model_cfg.dtype)
        tokens_per_step = cfg.data.global_batch_size * seq_len  # decoder (target) tokens
        _say(f'mesh: {sharding.describe_mesh(mesh)}')
        _say(describe_processes(mesh))
        if model.pipeline.enabled:
            _say(model.pipeline.describe(model_cfg.num_layers))
        _say(f'model: {num_params:,} parameters; {flops_per_step / 1e12:.4f} TFLOP per step '
             f'({tokens_per_step} tokens)')
        _say('compiled train step in {:.1f}s; memory per device: {}'.format(
            compile_s, ', '.join(f'{k} {metrics_lib.format_bytes(v)}' for k, v in mem.items())))
        _say(f'peak: {peak / 1e12:.3f} TFLOP/s ({peak_source})')

        eval_batches = [_global_batch(b, batch_sh) for b in data.eval_batches]
        total = cfg.num_train_steps
        last_eval: dict[str, float] = {}
        window_t, window_steps = time.perf_counter(), 0
        run_t0 = time.perf_counter()
        step = start_step
        notice = run.enter_context(stop_notice())
        preempted = False
        while step < total:
            batch = _global_batch(next(data.train_iter), batch_sh)
            state, step_metrics = train_step(state, batch)
            step += 1
            window_steps += 1
            guard.observe(step, step_metrics)
            preempted = notice.requested(step) and step < total  # at `total` it is done anyway
            if step % cfg.log_every_steps == 0 or step == total:
                guard.check()
                m = jax.device_get(step_metrics)
                now = time.perf_counter()
                tps = window_steps * tokens_per_step / (now - window_t)
                mfu = tps * flops_per_step / tokens_per_step / peak
                record = {'loss': m['loss'], 'learning_rate': m['learning_rate'],
                          'grad_norm': m['grad_norm'], 'z_loss': m['z_loss'],
                          'tokens_per_sec': tps, 'mfu': mfu,
                          'tokens_seen': float(step * tokens_per_step),
                          'skipped_steps': guard.skipped}
                writer.write(step, record)
                eta = (now - run_t0) / (step - start_step) * (total - step)
                _say(f'step {step:>6}/{total} | loss {float(m["loss"]):.4f} | '
                     f'lr {float(m["learning_rate"]):.2e} | {tps:,.0f} tok/s | mfu {mfu:.1%} | '
                     f'eta {metrics_lib.format_duration(eta)}')
                window_t, window_steps = time.perf_counter(), 0
            if step % cfg.eval_every_steps == 0 or step == total:
                eval_t0 = time.perf_counter()
                last_eval = evaluate(eval_step, state['params'], eval_batches)
                _say(f'eval  {step:>6}/{total} | eval_loss {last_eval["eval_loss"]:.4f} | '
                     f'perplexity {last_eval["eval_perplexity"]:.2f}')
                if eval_hook is not None:
                    # Task batches are not split into pipeline microbatches: same parameters,
                    # layers in sequence.
                    tasks = eval_hook(step, build_model(cfg), state['params'], data.tokenizer)
                    _say(f'tasks {step:>6}/{total} | ' + ' | '.join(
                        f'{k} {v:.4f}' for k, v in tasks.items()))
                    last_eval = {**last_eval, **tasks}
                writer.write(step, last_eval)
                window_t += time.perf_counter() - eval_t0  # evaluation is not training time
            if step % cfg.checkpoint_every_steps == 0 or step == total or preempted:
                guard.check()  # a step over the limit stops the run before it is saved
                ckpt.save(step, state, data.train_iter,
                          {'step': step, 'skipped_steps': guard.skipped})
            if preempted:
                _say(f'stopped by {notice.signal_name} after step {step}, saved as '
                     f'{ckpt.directory}/{step}: run the same command to resume')
                break
        writer.close()
    _say(f'workdir: {workdir}')
    return {'step': step, 'workdir': workdir, 'stopped_by': notice.signum if preempted else 0,
            **last_eval}


def _start_or_resume(cfg: ml_collections.ConfigDict, workdir: str, fresh: bool) -> None:
    """Refuses a config that does not fit the workdir's checkpoints, leaving them untouched;
    with `fresh` moves the previous run aside instead, so this one starts over."""
    if fresh:
        moved = set_aside_run(workdir)
        if moved:
            _say(f'--fresh: moved the previous run (checkpoints, config, metrics) to {moved}')
        # No process may list the checkpoints before process 0 has moved them.
        multihost_utils.sync_global_devices('jaxlm.train: fresh')
    elif has_checkpoints(os.path.join(workdir, 'checkpoints')):
        check_same_run(os.path.join(workdir, 'config.json'), cfg)
