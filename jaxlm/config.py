"""The schema of a jaxlm run: shared defaults and validation of experiment ConfigDicts.

Experiments (`experiments/*.py`) start from `default_config()` and override fields; nothing may add
a field that is not here, so a typo such as `config.optimizer.warmup_step` fails before any compile
instead of being silently ignored.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Sequence
from typing import Any

import ml_collections

from jaxlm.errors import ConfigError
from jaxlm.models import registry
from jaxlm.models.config import default_model_config, field_choices
from jaxlm.models.lora import DEFAULT_TARGETS as DEFAULT_LORA_TARGETS
from jaxlm.objectives import registry as objectives
from jaxlm.sharding import MESH_AXES

# Logical axis name -> mesh axes. Parameters use `embed`; activations use `act_embed` so that FSDP
# shards weights on the model dimension while activations stay batch-sharded (the same mesh axis
# may appear only once per array).
DEFAULT_LOGICAL_AXIS_RULES = (
    ('batch', ('data', 'fsdp')),
    ('length', None),
    ('act_embed', None),
    ('embed', 'fsdp'),
    ('heads', 'tensor'),
    ('kv_heads', 'tensor'),
    ('head_dim', None),
    ('mlp', 'tensor'),
    ('vocab', 'tensor'),
    ('layers', None),
    ('stage', 'stage'),  # the layer stack of a pipelined model (jaxlm/layers/pipeline.py)
    ('norm', None),
    ('relpos_buckets', None),
)

SCHEDULES = ('cosine', 'linear', 'constant')
TOKENIZERS = ('sentencepiece', 'byte', 'hf')
# corpus/shards/mixture are read through grain; seqio through the `seqio` extra.
DATA_SOURCES = ('corpus', 'shards', 'seqio', 'mixture')
TRUNCATION = ('drop', 'truncate')


def default_config() -> ml_collections.ConfigDict:
    """Every field a run reads, with defaults for a small decoder on CPU."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_train_steps = 100
    c.log_every_steps = 10
    c.eval_every_steps = 50
    c.checkpoint_every_steps = 50
    c.keep_checkpoints = 3
    c.async_checkpointing = True
    # A step whose loss, gradient norm or updated parameters are not finite is never applied
    # (parameters and optimizer state stay as they were). The run stops with an error at the
    # first such step, or once more than this many steps of the run were skipped.
    c.max_skipped_steps = 0
    # Parameters that start a fresh run (fine-tuning): a checkpoints directory (its latest step)
    # or one step directory, e.g. the `params/` of a converted Hugging Face model. The optimizer
    # state starts fresh. Ignored once the workdir has its own checkpoints (resume wins).
    c.init_params_from = ''

    c.mesh = ml_collections.ConfigDict(dict(data=1, stage=1, fsdp=-1, tensor=1))
    # Pipeline parallelism, used when mesh.stage > 1: the batch of each step (each gradient
    # accumulation microbatch) is split into `num_microbatches`; with `num_repeats` > 1 each stage
    # holds that many non-adjacent layer groups (circular schedule). Bubble fraction:
    # (stage - 1) / (num_repeats * num_microbatches + stage - 1).
    c.pipeline = ml_collections.ConfigDict(dict(num_microbatches=1, num_repeats=1))
    c.logical_axis_rules = DEFAULT_LOGICAL_AXIS_RULES

    c.model = default_model_config()  # the schema: jaxlm/models/config.py

    d = c.data = ml_collections.ConfigDict()
    # 'corpus': read and tokenize `corpus`; 'shards': read the pre-tokenized shards in
    # `shards_dir` (data_pipelines.tokenize), with the tokenizer they were written with; both
    # through grain. 'seqio' (needs the `seqio` extra): `task` names the seqio task.
    d.source = 'corpus'
    d.shards_dir = ''
    d.task = ''
    # 'span_corruption' (encoder-decoder): T5 noise on raw chunks; the encoder reads
    # `inputs_len` tokens, the decoder `seq_len` targets; sentinels are the `extra_ids` ids at
    # the top of the vocabulary (tokenizer vocabulary + extra_ids, as seqio's vocabulary).
    d.objective = 'lm'
    d.inputs_len = 128
    d.noise_density = 0.15
    d.mean_noise_span_length = 3.0
    d.extra_ids = 100
    d.corpus = 'tiny_shakespeare'
    d.text_field = 'text'
    d.data_dir = ''
    d.cache_dir = ''
    d.seq_len = 128
    d.global_batch_size = 16
    d.eval_fraction = 0.05
    d.num_eval_batches = 4
    d.num_workers = 0
    # Disjoint train shards, each shuffled and packed alone; processes read only their own. The
    # batches depend on this, not on the process count (0 = one shard per process).
    d.num_shards = 0
    d.tokenizer = ml_collections.ConfigDict(dict(kind='sentencepiece', vocab_size=512, path=''))
    # 'mixture' (post-training; jaxlm/data/mixture.py): records of the datasets in
    # jaxlm/data/post_datasets.py, weighted as 'name:weight,...' (e.g. 'gsm8k:0.5,fastchat:0.5').
    d.mixture = ''
    # A Jinja chat template file; '' = an 'hf' tokenizer's own template, else ChatML with its
    # markers as special tokens (jaxlm/data/chat_format.py).
    d.chat_template = ''
    # An example longer than seq_len: 'drop' it or 'truncate' it (keep its start); counted in
    # the data stats either way.
    d.truncation = 'drop'

    # Benchmark tasks (jaxlm.evaluation) run at every eval step beside eval_loss; '' = none.
    e = c.eval = ml_collections.ConfigDict()
    e.tasks = ''  # comma-separated registry names, e.g. 'hellaswag,arc_easy'
    e.limit = 0  # documents per task (0 = all)
    e.num_fewshot = -1  # -1 = each task's default
    e.batch_size = 16

    # LoRA (jaxlm/models/lora.py): rank 0 = off (every parameter trained). With rank > 0 only
    # adapters on the kernels whose path matches `targets` (a regular expression, e.g.
    # 'attention/(query|key|value|out)/kernel|mlp/') are trained and checkpointed, over the
    # frozen parameters of `init_params_from`; `alpha / rank` scales their product.
    c.lora = ml_collections.ConfigDict(dict(rank=0, alpha=16.0, targets=DEFAULT_LORA_TARGETS))

    o = c.optimizer = ml_collections.ConfigDict()
    o.learning_rate = 3e-3
    o.schedule = 'cosine'
    o.warmup_steps = 10
    o.decay_steps = 100  # total length of warmup + decay; the LR stays at its end value after it
    o.end_learning_rate_ratio = 0.1
    o.b1 = 0.9
    o.b2 = 0.95
    o.eps = 1e-8
    o.weight_decay = 0.1
    o.grad_clip_norm = 1.0
    o.grad_accum_steps = 1
    o.z_loss_weight = 0.0

    # Preference optimisation (`data.objective` 'dpo'; jaxlm/objectives/dpo.py, TRL 1.16's
    # definitions): beta scales the log-ratios; loss_type 'sigmoid' (DPO), 'hinge', 'ipo' or
    # 'robust'; label_smoothing (the assumed share of flipped labels) is read by 'robust' only.
    c.preference = ml_collections.ConfigDict(dict(beta=0.1, loss_type='sigmoid',
                                                  label_smoothing=0.0))

    # Reinforcement learning (`data.objective` 'grpo' or 'ppo'; jaxlm/trainer/rl.py). An RL run's
    # num_train_steps / log_every_steps / checkpoint_every_steps count iterations: each samples
    # `group_size` completions for each of `prompts_per_iteration` prompts, scores them and
    # trains `epochs` passes over them in minibatches of data.global_batch_size.
    c.rl = ml_collections.ConfigDict(dict(
        prompts='arithmetic',  # a post-training dataset (jaxlm/data/post_datasets.py)
        # How a prompt record becomes text: 'chat' (data.chat_template, with the generation
        # prompt), else a str.format pattern of the last user message, e.g. 'Q: {prompt}\nA:'.
        prompt_format='chat',
        group_size=8, prompts_per_iteration=4, max_new_tokens=32, temperature=1.0, epochs=1,
        clip_eps=0.2,
        kl_beta=0.0,  # GRPO: KL-to-reference weight in the loss (0.04: DeepSeekMath)
        loss_aggregation='token',  # GRPO: 'token' (DAPO / TRL) or 'sequence' (per completion)
        kl_coef=0.05, gamma=1.0, lam=0.95, vf_coef=0.1, value_clip=0.2,  # PPO
        reward='jaxlm.trainer.rewards:arithmetic_exact',  # 'module:function', or
        # A reward model run's workdir (jaxlm/inference/reward.py; then set reward = ''): it
        # scores each prompt's messages followed by the completion as the assistant's reply.
        reward_model='',
    ))
    return c


def _check_known_keys(cfg: Any, ref: Any, prefix: str) -> None:
    for key in cfg.keys():
        name = f'{prefix}{key}'
        if key not in ref:
            raise ConfigError(f'unknown config field `{name}` (known here: {sorted(ref.keys())})')
        if isinstance(ref[key], ml_collections.ConfigDict):
            if not isinstance(cfg[key], ml_collections.ConfigDict | dict):
                raise ConfigError(f'config field `{name}` must be a group of fields')
            _check_known_keys(cfg[key], ref[key], name + '.')


def resolve_mesh_shape(mesh_cfg: Any, num_devices: int) -> dict[str, int]:
    """Sizes of the mesh axes, with one `-1` taking the remaining devices."""
    sizes = {a: int(mesh_cfg.get(a, 1)) for a in MESH_AXES}  # runs saved before 'stage' existed
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise ConfigError(f'only one of `mesh.{{{",".join(MESH_AXES)}}}` may be -1, got {sizes}')
    for a, s in sizes.items():
        if s == 0 or s < -1:
            raise ConfigError(f'`mesh.{a}` must be a positive size or -1, got {s}')
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if free:
        if num_devices % fixed:
            raise ConfigError(
                f'mesh {sizes} does not divide the {num_devices} devices: `mesh.{free[0]}` = -1 '
                f'needs the device count to be a multiple of {fixed}')
        sizes[free[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ConfigError(
            f'mesh {sizes} has {fixed} devices but {num_devices} are available: set `mesh.*` so '
            'that data*fsdp*tensor equals the device count (or use -1 for one axis)')
    return sizes


def validate(cfg: ml_collections.ConfigDict, num_devices: int) -> dict[str, int]:
    """Checks everything that can be checked before tracing; returns the resolved mesh shape."""
    _check_known_keys(cfg, default_config(), '')
    m, d, o = cfg.model, cfg.data, cfg.optimizer

    choices = [(f'model.{name}', allowed, _get(m, name))
               for name, allowed in field_choices().items()]
    for field, allowed, value in choices + [
        ('model.architecture', tuple(registry.FAMILIES), m.architecture),
        ('data.source', DATA_SOURCES, d.source),
        ('data.objective', tuple(objectives.OBJECTIVES), d.objective),
        ('optimizer.schedule', SCHEDULES, o.schedule),
        ('data.tokenizer.kind', TOKENIZERS, d.tokenizer.kind),
        ('data.truncation', TRUNCATION, d.truncation),
    ]:
        if value not in allowed:
            raise ConfigError(f'`{field}` = {value!r} is not one of {allowed}')

    positive = {
        'num_train_steps': cfg.num_train_steps, 'log_every_steps': cfg.log_every_steps,
        'eval_every_steps': cfg.eval_every_steps,
        'checkpoint_every_steps': cfg.checkpoint_every_steps,
        'keep_checkpoints': cfg.keep_checkpoints,
        'model.vocab_size': m.vocab_size, 'model.num_layers': m.num_layers,
        'model.d_model': m.d_model, 'model.num_heads': m.num_heads,
        'model.num_kv_heads': m.num_kv_heads, 'model.head_dim': m.head_dim,
        'model.mlp_dim': m.mlp_dim, 'model.max_seq_len': m.max_seq_len,
        'data.seq_len': d.seq_len, 'data.global_batch_size': d.global_batch_size,
        'data.num_eval_batches': d.num_eval_batches,
        'eval.batch_size': cfg.eval.batch_size,
        'optimizer.grad_accum_steps': o.grad_accum_steps,
        'optimizer.decay_steps': o.decay_steps,
        'model.relative_buckets': m.relative_buckets,
        'model.relative_max_distance': m.relative_max_distance,
        'data.inputs_len': d.inputs_len, 'data.extra_ids': d.extra_ids,
        'pipeline.num_microbatches': cfg.pipeline.num_microbatches,
        'pipeline.num_repeats': cfg.pipeline.num_repeats,
    }
    for field, value in positive.items():
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f'`{field}` must be a positive integer, got {value!r}')
    if m.num_heads % m.num_kv_heads:
        raise ConfigError(
            f'`model.num_heads` ({m.num_heads}) must be divisible by `model.num_kv_heads` '
            f'({m.num_kv_heads})')
    if isinstance(m.sliding_window, bool) or not isinstance(m.sliding_window, int) \
            or m.sliding_window < 0:
        raise ConfigError(
            f'`model.sliding_window` must be a non-negative integer (0 = full attention), got '
            f'{m.sliding_window!r}')
    rs = m.rope_scaling
    if not rs.factor > 0:
        raise ConfigError(f'`model.rope_scaling.factor` must be positive, got {rs.factor}')
    if rs.kind == 'llama3':
        if not 0 < rs.low_freq_factor < rs.high_freq_factor:
            raise ConfigError(
                '`model.rope_scaling` needs 0 < low_freq_factor < high_freq_factor for llama3, '
                f'got {rs.low_freq_factor} and {rs.high_freq_factor}')
        if not isinstance(rs.original_max_seq_len, int) or rs.original_max_seq_len <= 0:
            raise ConfigError('`model.rope_scaling.original_max_seq_len` must be a positive '
                              f'integer, got {rs.original_max_seq_len!r}')
    if m.positions == 'rope' and m.head_dim % 2:
        raise ConfigError(f'`model.head_dim` must be even for RoPE, got {m.head_dim}')
    _check_architecture(cfg)
    if d.seq_len > m.max_seq_len:
        raise ConfigError(
            f'`data.seq_len` ({d.seq_len}) exceeds `model.max_seq_len` ({m.max_seq_len})')
    if d.source == 'shards' and not d.shards_dir:
        raise ConfigError("`data.shards_dir` must name a shards directory when `data.source` is "
                          "'shards'")
    if isinstance(cfg.max_skipped_steps, bool) or not isinstance(cfg.max_skipped_steps, int) \
            or cfg.max_skipped_steps < 0:
        raise ConfigError('`max_skipped_steps` must be a non-negative integer (0 = stop at the '
                          f'first non-finite step), got {cfg.max_skipped_steps!r}')
    if not isinstance(d.num_shards, int) or d.num_shards < 0:
        raise ConfigError(f'`data.num_shards` must be a non-negative integer, got {d.num_shards!r}')
    if not 0.0 < d.eval_fraction < 1.0:
        raise ConfigError(f'`data.eval_fraction` must be in (0, 1), got {d.eval_fraction}')
    if not 0 <= o.warmup_steps <= o.decay_steps:
        raise ConfigError(
            f'`optimizer.warmup_steps` ({o.warmup_steps}) must be in [0, optimizer.decay_steps='
            f'{o.decay_steps}]')
    if not 0.0 <= m.dropout_rate < 1.0:
        raise ConfigError(f'`model.dropout_rate` must be in [0, 1), got {m.dropout_rate}')

    _check_tuning(cfg)

    mesh = resolve_mesh_shape(cfg.mesh, num_devices)
    batch_shards = mesh['data'] * mesh['fsdp']
    if d.global_batch_size % batch_shards:
        raise ConfigError(
            f'`data.global_batch_size` ({d.global_batch_size}) must be divisible by the '
            f'data-parallel size mesh.data*mesh.fsdp = {batch_shards}')
    micro = d.global_batch_size // o.grad_accum_steps
    if d.global_batch_size % o.grad_accum_steps or micro % batch_shards:
        raise ConfigError(
            f'`data.global_batch_size` ({d.global_batch_size}) must split into '
            f'`optimizer.grad_accum_steps` ({o.grad_accum_steps}) microbatches each divisible by '
            f'the data-parallel size {batch_shards}')
    _check_pipeline(cfg, mesh['stage'], micro // batch_shards)
    _check_rules(cfg.logical_axis_rules)
    return mesh


def _get(group: ml_collections.ConfigDict, dotted: str) -> Any:
    for key in dotted.split('.'):
        group = group[key]
    return group


def _check_architecture(cfg: ml_collections.ConfigDict) -> None:
    """The model family, its position encoding, the data objective and source must agree."""
    m, d = cfg.model, cfg.data
    family = registry.get(m.architecture)
    message = family.validate(cfg)
    if message:
        raise ConfigError(message)
    wanted = set(family.input_fields(d))
    fits = [name for name, objective in objectives.OBJECTIVES.items()
            if set(objective().model_inputs()) == wanted and objective.output == family.output]
    if d.objective not in fits:
        raise ConfigError(
            f'`data.objective` = {d.objective!r} does not fit `model.architecture` = '
            f'{m.architecture!r} (inputs {sorted(wanted)}, output {family.output!r}): use one '
            f'of {fits}')
    if m.positions == 't5_relative' and m.relative_buckets < 4:
        raise ConfigError(f'`model.relative_buckets` must be at least 4, got {m.relative_buckets}')
    if not 0.0 < d.noise_density < 1.0:
        raise ConfigError(f'`data.noise_density` must be in (0, 1), got {d.noise_density}')
    if not d.mean_noise_span_length >= 1.0:
        raise ConfigError('`data.mean_noise_span_length` must be >= 1, got '
                          f'{d.mean_noise_span_length}')
    if d.source == 'seqio':
        if importlib.util.find_spec('seqio') is None:
            raise ConfigError("`data.source` = 'seqio' needs the seqio extra: pip install "
                              "'jaxlm[seqio]' (or choose `data.source` = 'corpus')")
        if not d.task:
            raise ConfigError("`data.task` must name a seqio task when `data.source` = "
                              "'seqio' (registered in jaxlm/data/seqio_tasks.py)")
    if d.source == 'mixture':
        from jaxlm.data import mixture  # here: it imports every dataset's loader

        mixture.parse(d.mixture)
        if d.objective in ('lm', 'span_corruption'):
            raise ConfigError(f"`data.source` = 'mixture' holds conversation and preference "
                              f'records, which `data.objective` = {d.objective!r} cannot read '
                              "(use e.g. 'sft')")
    if d.objective == 'span_corruption' and d.source == 'shards':
        raise ConfigError("`data.objective` = 'span_corruption' reads raw text (`data.source` = "
                          "'corpus' or 'seqio'); token shards are for 'lm'")
    objectives.build(cfg).validate(d)  # last: it relies on the data fields checked above


def _check_tuning(cfg: ml_collections.ConfigDict) -> None:
    """LoRA's settings, and the initial parameters that LoRA and reference-based objectives
    freeze."""
    lora = cfg.lora
    if isinstance(lora.rank, bool) or not isinstance(lora.rank, int) or lora.rank < 0:
        raise ConfigError(f'`lora.rank` must be a non-negative integer (0 = off), got '
                          f'{lora.rank!r}')
    if not lora.alpha > 0:
        raise ConfigError(f'`lora.alpha` must be positive, got {lora.alpha!r}')
    try:
        re.compile(lora.targets)
    except re.error as e:
        raise ConfigError(f'`lora.targets` is not a regular expression: {e}') from None
    needs = ['LoRA (lora.rank > 0)'] if lora.rank else []
    if objectives.build(cfg).uses_reference:
        needs.append(f'`data.objective` = {cfg.data.objective!r} (its reference model)')
    if needs and not cfg.init_params_from:
        raise ConfigError(f'{" and ".join(needs)} freezes the parameters of '
                          '`init_params_from`: set it to a run\'s checkpoints directory or a '
                          'converted model')


def _check_pipeline(cfg: ml_collections.ConfigDict, stages: int, rows_per_shard: int) -> None:
    """The layer stack must split evenly into stages x repeats, and each (accumulation) batch into
    pipeline microbatches that still span every data-parallel shard."""
    p, layers = cfg.pipeline, cfg.model.num_layers
    if stages == 1:
        return
    if layers % (stages * p.num_repeats):
        # The encoder-decoder's encoder and decoder stacks both have `model.num_layers` layers.
        raise ConfigError(
            f'`model.num_layers` ({layers}) must be divisible by mesh.stage x '
            f'pipeline.num_repeats = {stages} x {p.num_repeats} for pipeline parallelism')
    if rows_per_shard % p.num_microbatches:
        raise ConfigError(
            f'`pipeline.num_microbatches` ({p.num_microbatches}) must divide the rows of each '
            f'data-parallel shard ({rows_per_shard} = data.global_batch_size / '
            'optimizer.grad_accum_steps / (mesh.data*mesh.fsdp))')
    if p.num_repeats > 1 and p.num_microbatches < stages:
        raise ConfigError(
            f'`pipeline.num_microbatches` ({p.num_microbatches}) must be >= mesh.stage ({stages}) '
            'with pipeline.num_repeats > 1: a microbatch leaving the last stage re-enters the '
            'first')
    if cfg.model.dropout_rate:
        raise ConfigError(
            '`model.dropout_rate` must be 0 with pipeline parallelism (mesh.stage > 1)')


def _check_rules(rules: Sequence[Any]) -> None:
    seen = set()
    for rule in rules:
        if len(rule) != 2:
            raise ConfigError(f'`logical_axis_rules` entries are (logical, mesh axes), got {rule}')
        logical, mesh_axes = rule
        if logical in seen:
            raise ConfigError(f'`logical_axis_rules` names `{logical}` twice')
        seen.add(logical)
        axes = mesh_axes if isinstance(mesh_axes, list | tuple) else (mesh_axes,)
        for a in axes:
            if a is not None and a not in MESH_AXES:
                raise ConfigError(
                    f'`logical_axis_rules` maps `{logical}` to unknown mesh axis {a!r} '
                    f'(mesh axes: {MESH_AXES})')


def check_vocab(cfg: ml_collections.ConfigDict, tokenizer_vocab_size: int) -> None:
    if cfg.model.vocab_size < tokenizer_vocab_size:
        raise ConfigError(
            f'`model.vocab_size` ({cfg.model.vocab_size}) is smaller than the tokenizer '
            f'vocabulary ({tokenizer_vocab_size})')
    needed = tokenizer_vocab_size + cfg.data.extra_ids
    if cfg.data.objective == 'span_corruption' and cfg.model.vocab_size < needed:
        raise ConfigError(
            f'`model.vocab_size` ({cfg.model.vocab_size}) has no room for the sentinels: span '
            f'corruption needs the tokenizer vocabulary ({tokenizer_vocab_size}) + '
            f'`data.extra_ids` ({cfg.data.extra_ids}) = {needed}')


def rules_as_tuples(rules: Sequence[Any]) -> tuple[tuple[str, Any], ...]:
    """ConfigDict turns tuples into lists (JSON round trip); Flax wants hashable tuples."""
    out = []
    for logical, axes in rules:
        if isinstance(axes, list | tuple):
            axes = tuple(axes)
        out.append((logical, axes))
    return tuple(out)
