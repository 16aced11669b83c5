"""The input pipeline: a source's documents, through the objective's transform, into packed,
batched, per-process batches; deterministic, and resumable exactly.

source (jaxlm/data/documents.py: corpus or token shards) -> train/eval `TokenDocuments` ->
objective's `DataTransform` (jaxlm/objectives/base.py: examples, optional per-example noise, packed
lengths, batch fields) -> shared here: train data shards, each shuffled every epoch and first-fit
packed, this process's shards' rows concatenated; fixed eval batches of which each process keeps
its rows. An objective whose transform is `packed` (post-training records) packs its own rows
once; they are only shuffled every epoch and batched here. seqio tasks tokenize and pack inside
seqio (jaxlm/data/seqio_tasks.py) and share only the process sharding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import grain
import grain.experimental
import numpy as np
from absl import flags

from jaxlm.data import documents, tokenizers
from jaxlm.data.sources import DataError
from jaxlm.errors import ConfigError
from jaxlm.objectives.base import DataTransform, Objective


@dataclasses.dataclass
class DataPipeline:
    tokenizer: tokenizers.Tokenizer
    # Infinite; get_state()/set_state() resume exactly. Checkpoint it with orbax via
    # grain.checkpoint.CheckpointSave / CheckpointRestore.
    train_iter: grain.DatasetIterator
    # This process's rows of fixed eval batches; identical on every build.
    eval_batches: list[dict[str, np.ndarray]]
    stats: dict


def local_batch_size(data_cfg: Any, process_index: int, process_count: int) -> int:
    """Rows of each global batch that this process produces (checking the arguments)."""
    seq_len, global_batch = data_cfg.seq_len, data_cfg.global_batch_size
    if seq_len < 1:
        raise ValueError(f'data.seq_len must be >= 1, got {seq_len}')
    if not 0 <= process_index < process_count:
        raise ValueError(f'process_index {process_index} not in [0, {process_count})')
    if global_batch <= 0 or global_batch % process_count:
        raise ConfigError(
            f'data.global_batch_size {global_batch} must be a positive multiple of '
            f'the process count {process_count}'
        )
    return global_batch // process_count


def data_shards(data_cfg: Any, process_index: int, process_count: int) -> tuple[int, range]:
    """(number of train data shards, the ones this process reads).

    The train stream is `data.num_shards` disjoint shards, each shuffled and packed on its own;
    the global batch is their rows in shard order. Each process reads only its own shards, so the
    global batches depend on num_shards but not on the process count (0: one per process)."""
    global_batch = data_cfg.global_batch_size
    num_shards = data_cfg.get('num_shards', 0) or process_count
    if num_shards % process_count or global_batch % num_shards:
        raise ConfigError(
            f'data.num_shards {num_shards} must be a multiple of the process count '
            f'{process_count} and divide data.global_batch_size {global_batch}'
        )
    per_process = num_shards // process_count
    return num_shards, range(process_index * per_process, (process_index + 1) * per_process)


def shard_seed(seed: int, shard: int) -> int:
    """Distinct seed per data shard: slices are disjoint anyway, but independent orders avoid
    correlated batches across hosts."""
    return int(np.random.SeedSequence([seed, shard]).generate_state(1)[0])


def shuffled_shard(source: Any, seed: int, shard: int, num_shards: int) -> grain.MapDataset:
    """Shard `shard` of `num_shards` of `source`, reshuffled every epoch, endless."""
    return (grain.MapDataset.source(source)[shard::num_shards]
            .shuffle(seed=seed).repeat(None))


def pack_and_batch(
    ds: grain.IterDataset, length_struct: dict[str, int], batch_size: int, *, seed: int,
    shuffle_bins: bool, to_batch: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
) -> grain.IterDataset:
    """First-fit packs examples into rows of `length_struct[feature]` tokens per feature."""
    ds = grain.experimental.FirstFitPackIterDataset(
        ds,
        length_struct=length_struct,
        num_packing_bins=batch_size,
        seed=seed,
        shuffle_bins=shuffle_bins,
    )
    return ds.batch(batch_size, drop_remainder=True).map(to_batch)


def with_workers(ds: grain.IterDataset, num_workers: int) -> grain.IterDataset:
    if num_workers <= 0:
        return ds
    # grain reads absl flags when starting workers; outside absl.app.run (tests,
    # notebooks) they are unparsed, so fall back to their defaults.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    return ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))


def process_rows(global_batches: Any, num_batches: int, process_index: int,
                 process_count: int) -> list[dict[str, np.ndarray]]:
    """Eval: global batches in a fixed order (no shuffling), then this process's rows, so all
    processes together see exactly the same eval set on every build."""
    out = []
    for _ in range(num_batches):
        rows = {k: v[process_index::process_count] for k, v in next(global_batches).items()}
        out.append({k: np.ascontiguousarray(v) for k, v in rows.items()})
    return out


def _concat_rows(batches: tuple[dict[str, np.ndarray], ...]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _noised(ds: grain.MapDataset, transform: DataTransform, seed: int) -> grain.IterDataset:
    if transform.noise is not None:
        ds = ds.random_map(transform.noise, seed=seed)
    return ds.to_iter_dataset()


def train_stream(examples: Sequence[Any], transform: DataTransform, *, seed: int,
                 num_shards: int, own_shards: range, global_batch: int) -> grain.IterDataset:
    """This process's rows of the global train batches: its data shards, each shuffled, noised
    and packed on its own with its own seed, concatenated in shard order."""
    parts = []
    for shard in own_shards:
        shuffle_seed = shard_seed(seed, shard)
        part = _noised(shuffled_shard(examples, shuffle_seed, shard, num_shards), transform,
                       shuffle_seed)
        if transform.packed:  # rows already: only batched
            parts.append(part.batch(global_batch // num_shards, drop_remainder=True)
                         .map(transform.to_batch))
            continue
        parts.append(pack_and_batch(part, transform.lengths, global_batch // num_shards,
                                    seed=shuffle_seed, shuffle_bins=True,
                                    to_batch=transform.to_batch))
    if len(parts) == 1:
        return parts[0]
    return grain.experimental.ZipIterDataset(parts).map(_concat_rows)


def eval_stream(examples: Sequence[Any], transform: DataTransform,
                global_batch: int) -> grain.IterDataset:
    """Global eval batches: the examples in order, repeated, noised with seed 0."""
    ds = _noised(grain.MapDataset.source(examples).repeat(None), transform, 0)
    if transform.packed:
        return ds.batch(global_batch, drop_remainder=True).map(transform.to_batch)
    return pack_and_batch(ds, transform.lengths, global_batch, seed=0, shuffle_bins=False,
                          to_batch=transform.to_batch)


def build_pipeline(data_cfg: Any, objective: Objective, *, seed: int, process_index: int = 0,
                   process_count: int = 1) -> DataPipeline:
    """The train iterator and eval batches of `data.source` through `objective`'s transform, for
    one process of `process_count`."""
    local_batch_size(data_cfg, process_index, process_count)
    num_shards, own_shards = data_shards(data_cfg, process_index, process_count)
    split = documents.open_source(data_cfg, seed)
    transform = objective.data_transform(data_cfg, split.tokenizer)
    stats = {**split.stats, **transform.stats}
    sources = {}
    for name, docs in (('train', split.train), ('eval', split.eval)):
        sources[name], split_stats = transform.examples(docs)
        stats.update({f'{name}_{k}': v for k, v in split_stats.items()})
        stats[f'{name}_chunks'] = len(sources[name])
    if len(sources['train']) < num_shards or not len(sources['eval']):
        raise DataError(f'too few chunks for {num_shards} data shard(s): {stats}')

    global_batch = data_cfg.global_batch_size
    train = train_stream(sources['train'], transform, seed=seed, num_shards=num_shards,
                         own_shards=own_shards, global_batch=global_batch)
    train = with_workers(train, data_cfg.num_workers)
    eval_iter = iter(eval_stream(sources['eval'], transform, global_batch))
    eval_batches = process_rows(eval_iter, data_cfg.num_eval_batches, process_index,
                                process_count)
    return DataPipeline(split.tokenizer, iter(train), eval_batches, stats)


def build_data(cfg: Any, objective: Objective, process_index: int = 0,
               process_count: int = 1) -> DataPipeline:
    """The run's data: `cfg.data`'s source through `objective`, for one process."""
    if cfg.data.source == 'seqio':
        from jaxlm.data import seqio_tasks  # here: it imports TensorFlow, which is slow

        return seqio_tasks.build_seqio_pipeline(cfg.data, objective, seed=cfg.seed,
                                                process_index=process_index,
                                                process_count=process_count)
    return build_pipeline(cfg.data, objective, seed=cfg.seed, process_index=process_index,
                          process_count=process_count)
