"""Runs a curation config end to end.

Passes, each a plain function over one shard run by the executor (local processes or Ray):
  ids      the id field of every record of the sources that have one: an id repeated within its
           file (or source: `id_scope`), over all its shards, is removed (the first is kept)
  filter   read an input file, then every per-document stage of `config.stages` in order
  exact_dedup, minhash_dedup   shard-parallel dedup (data_pipelines.dedup), then a removal pass
  mixture  the source's weight up- or down-samples its documents into `curated/`
then the tokenizer is trained on the curated text and token shards are written for jaxlm, and the
run's accounting goes to `stats.json` and `DATASHEET.md`.

Output directory:
  curated/<shard>.jsonl.gz                    the curated documents
  removed/<stage>/<reason>/<shard>.jsonl.gz   every removed document, with its stage and reason
  tokenizer/, shards/                         the tokenizer and the token shards (`index.json`)
  markers/<pass>/<shard>.json                 completion marker of a shard's pass, with its counts
  work/                                       intermediate shards and dedup bucket files
A rerun skips every shard whose marker exists and redoes the others (those that failed).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import ml_collections

from data_pipelines import accounting, decontamination, mixture
from data_pipelines.accounting import StageStats
from data_pipelines.dedup.exact import ExactDedupConfig, run_exact_dedup
from data_pipelines.dedup.minhash import MinHashConfig, run_minhash_dedup
from data_pipelines.dedup.shard_reader import read_shard
from data_pipelines.document import Document
from data_pipelines.readers import (
    FILE_REJECTIONS,
    READER_OPTIONS,
    input_files,
    read_file,
    record_id_prefix,
)
from data_pipelines.shard_io import read_json, write_documents, write_json
from data_pipelines.stages import build_stage, decontamination_index_path
from jaxlm.config import ConfigError
from jaxlm.errors import UserError

log = logging.getLogger(__name__)
# Metadata a stage adds that its stats sum up (redactions per kind, repaired bytes).
_STAGE_COUNTERS = {'pii': 'pii_redactions', 'normalize': 'invalid_utf8_removed'}


class ShardFailures(UserError, RuntimeError):
    """Some shards of a pass failed; the others are finished and a rerun redoes only these."""


@dataclasses.dataclass(frozen=True)
class InputShard:
    name: str  # <source>-<file index>[p<part>]: unique, names every file the shard produces
    source: str
    path: str
    rel_path: str
    part: int = 0
    num_parts: int = 1
    # record index -> doc id kept, of this shard's records that repeat an id met earlier in its
    # id scope (`_repeated_ids`); removed as `duplicate_id`
    repeated_ids: dict[int, str] = dataclasses.field(default_factory=dict)


def _read_cost(shard: InputShard) -> float:
    return os.path.getsize(shard.path) / shard.num_parts


def resolve_data_dir(config: ml_collections.ConfigDict) -> str:
    """`config.data_dir`, else $JAXLM_DATA_DIR; an error naming both when neither is a folder."""
    data_dir = config.data_dir or os.environ.get('JAXLM_DATA_DIR', '')
    if not data_dir:
        raise UserError('no data directory: export JAXLM_DATA_DIR=/path/to/shared/data (or set '
                        'config.data_dir)')
    if not os.path.isdir(data_dir):
        raise UserError(f'data directory {data_dir} does not exist; point JAXLM_DATA_DIR (or '
                        'config.data_dir) at the shared data folder')
    return data_dir


def plan_shards(config: ml_collections.ConfigDict, data_dir: str) -> list[InputShard]:
    """`num_shards` shards per input file (records split round-robin), in source then path order."""
    shards = []
    for source, spec in config.sources.items():
        root = os.path.join(data_dir, spec.get('root', ''))
        parts = spec.get('num_shards', 1)
        paths = input_files(root, list(spec.paths), f'config.sources.{source}.paths')
        for i, path in enumerate(paths):
            rel = os.path.relpath(path, root)
            for k in range(parts):
                name = f'{source}-{i:05d}' + (f'p{k:03d}' if parts > 1 else '')
                shards.append(InputShard(name, source, path, rel, k, parts))
    return shards


def _shard_path(out_dir: str, kind: str, shard: str) -> str:
    return os.path.join(out_dir, kind, f'{shard}.jsonl.gz')


def _marker_path(out_dir: str, pass_name: str, shard: str) -> str:
    return os.path.join(out_dir, 'markers', pass_name, f'{shard}.json')


def _guarded(task: tuple[str, Any], *, fn: Callable[[Any], dict], out_dir: str, pass_name: str
             ) -> dict[str, Any]:
    """Runs one shard of a pass; writes its marker only once its outputs are complete."""
    shard, item = task
    try:
        result = fn(item)
    except Exception:
        return {'shard': shard, 'error': traceback.format_exc()}
    write_json(_marker_path(out_dir, pass_name, shard), result)
    return {'shard': shard}


def run_pass(pass_name: str, tasks: list[tuple[str, Any]], fn: Callable[[Any], dict], executor,
             out_dir: str, redo: bool = False, cost: Callable[[Any], float] | None = None
             ) -> tuple[list[dict[str, Any]], int]:
    """Maps `fn` over the shards without a marker (all of them if `redo`), the costliest first so
    that a big shard does not start last; returns every shard's marker, in task order, and how
    many shards ran."""
    todo = [t for t in tasks
            if redo or not os.path.exists(_marker_path(out_dir, pass_name, t[0]))]
    if cost is not None:
        todo.sort(key=lambda t: -cost(t[1]))
    if len(todo) < len(tasks):
        log.info('%s: %d of %d shards already done', pass_name, len(tasks) - len(todo), len(tasks))
    guarded = functools.partial(_guarded, fn=fn, out_dir=out_dir, pass_name=pass_name)
    failed = [r for r in executor.map(guarded, todo, desc=pass_name) if 'error' in r]
    if failed:
        details = '\n'.join(f'--- {r["shard"]}\n{r["error"]}' for r in failed)
        raise ShardFailures(f'{pass_name}: {len(failed)} of {len(tasks)} shards failed; rerun to '
                            f'redo only them:\n{details}')
    return [read_json(_marker_path(out_dir, pass_name, shard)) for shard, _ in tasks], len(todo)


def _read_shard(shard: InputShard, spec: ml_collections.ConfigDict
                ) -> Iterator[Document | tuple[Document, str]]:
    options = {k: spec[k] for k in READER_OPTIONS if k in spec}
    return read_file(shard.path, source=shard.source, licence=spec.licence, fmt=spec.format,
                     rel_path=shard.rel_path, part=shard.part, num_parts=shard.num_parts,
                     **options)


def shard_record_ids(shard: InputShard, *, config_json: str) -> dict:
    """[index, doc id] of each record of one shard that has an id field."""
    spec = ml_collections.ConfigDict(json.loads(config_json)).sources[shard.source]
    prefix = record_id_prefix(shard.source, shard.rel_path)
    return {'ids': [[d.metadata['index'], d.id] for d in _read_shard(shard, spec)
                    if isinstance(d, Document) and d.id.startswith(prefix)]}


def _repeated_ids(config: ml_collections.ConfigDict, shards: list[InputShard], executor,
                  out_dir: str) -> tuple[list[InputShard], dict[str, int], int]:
    """The shards with their `repeated_ids`: every record whose id field repeats one met earlier
    in its file (its source, with `id_scope='source'`), over all shards in file then record order
    (so the same records are kept however many shards a file is split into); per source, how many
    records kept share their id with a record of another file; and how many shards the pass ran."""
    tasks = [(s.name, s) for s in shards if config.sources[s.source].get('id_field')]
    fn = functools.partial(shard_record_ids, config_json=config.to_json())
    markers, ran = run_pass('ids', tasks, fn, executor, out_dir, cost=_read_cost)
    records = sorted((s.source, s.rel_path, index, s.name, doc_id)
                     for (_, s), m in zip(tasks, markers, strict=True)
                     for index, doc_id in m['ids'])
    first: dict[tuple[str, str, str], str] = {}  # (source, scope, id) -> doc id of its first
    first_file: dict[tuple[str, str], str] = {}  # (source, id) -> file of its first record
    repeated: dict[str, dict[int, str]] = {}
    across_files: collections.Counter = collections.Counter()
    for source, rel_path, index, shard, doc_id in records:
        record_id = doc_id.removeprefix(record_id_prefix(source, rel_path))
        scope = '' if config.sources[source].get('id_scope', 'file') == 'source' else rel_path
        if (source, scope, record_id) in first:
            repeated.setdefault(shard, {})[index] = first[source, scope, record_id]
            continue
        first[source, scope, record_id] = doc_id
        # Kept (its doc id names its file), but the datasheet says the files share ids.
        across_files[source] += first_file.setdefault((source, record_id), rel_path) != rel_path
    shards = [dataclasses.replace(s, repeated_ids=repeated.get(s.name, {})) for s in shards]
    return shards, dict(across_files), ran


def filter_shard(shard: InputShard, *, config_json: str, data_dir: str, out_dir: str) -> dict:
    """Reads one input file and runs every per-document stage over it."""
    config = ml_collections.ConfigDict(json.loads(config_json))
    work_dir = os.path.join(out_dir, 'work')
    stages = [(name, build_stage(name, config, data_dir, work_dir)) for name in config.stages]
    limit = config.max_examples_per_reason
    read = StageStats('read', limit)
    stats = [StageStats(name, limit) for name, _ in stages]
    kept: list[Document] = []
    for record in _read_shard(shard, config.sources[shard.source]):
        if isinstance(record, tuple):
            read.remove(*record)
            continue
        index = record.metadata['index']
        if index in shard.repeated_ids:  # removed under its position id, which is unique
            position_id = f'{shard.source}/{shard.rel_path}:{index}'
            read.remove(Document(position_id, record.text,
                                 {**record.metadata, 'duplicate_of': shard.repeated_ids[index]}),
                        'duplicate_id')
            continue
        read.keep(record, record)
        doc: Document | None = record
        for (name, stage), st in zip(stages, stats, strict=True):
            start = time.process_time()  # CPU time: stage rates that other load does not skew
            out = stage(doc)
            st.seconds += time.process_time() - start
            if isinstance(out, str):
                st.remove(doc, out)
                doc = None
                break
            st.keep(doc, out)
            key = _STAGE_COUNTERS.get(name)
            if key in out.metadata and key not in doc.metadata:  # set by this stage
                counted = out.metadata[key]
                st.counters.update(counted if isinstance(counted, dict) else {key: counted})
            doc = out
        if doc is not None:
            kept.append(doc)
    write_documents(_shard_path(out_dir, 'work/filtered', shard.name), kept)
    for st in (read, *stats):
        st.write_removed(out_dir, shard.name)
    return {'source': shard.source, 'stages': [st.to_json() for st in (read, *stats)]}


def apply_removals(task: tuple[str, str, str, dict[str, str], int], *, out_dir: str) -> dict:
    """Drops a dedup job's duplicates from one shard (kept in `removed/` with `duplicate_of`)."""
    stage, shard, in_path, removed, limit = task
    st = StageStats(stage, limit)
    kept = []
    for doc in read_shard(in_path):
        if doc.id in removed:
            st.remove(Document(doc.id, doc.text, {**doc.metadata, 'duplicate_of': removed[doc.id]}),
                      'duplicate')
        else:
            st.keep(doc, doc)
            kept.append(doc)
    write_documents(_shard_path(out_dir, f'work/{stage}', shard), kept)
    st.write_removed(out_dir, shard)
    return {'stages': [st.to_json()]}


def mix_shard(task: tuple[str, str, float, int, int], *, out_dir: str) -> dict:
    """Applies the source's mixture weight to one shard and writes it to `curated/`."""
    shard, in_path, weight, seed, limit = task
    st = StageStats('mixture', limit)
    out: list[Document] = []
    for doc in read_shard(in_path):
        copies = mixture.sample(doc, weight, seed)
        if not copies:
            st.remove(doc, 'downsampled')
            continue
        st.keep(doc, doc)
        st.counters['emitted'] += len(copies)
        st.counters['emitted_chars'] += len(doc.text) * len(copies)
        out.extend(copies)
    write_documents(_shard_path(out_dir, 'curated', shard), out)
    st.write_removed(out_dir, shard)
    return {'stages': [st.to_json()]}


def _dedup(stage: str, shards: list[InputShard], in_kind: str, config: ml_collections.ConfigDict,
           executor, out_dir: str, redo: bool) -> tuple[list[dict], int]:
    tasks_done = not redo and all(os.path.exists(_marker_path(out_dir, stage, s.name))
                                  for s in shards)
    paths = [_shard_path(out_dir, in_kind, s.name) for s in shards]
    results: dict[str, Any] = {}
    if not tasks_done:  # the job is global: rerun it whole (it is deterministic)
        work_dir = os.path.join(out_dir, 'work', f'{stage}_buckets')
        settings = config.dedup[stage.split('_')[0]].to_dict()
        settings.pop('enabled')
        if stage == 'exact_dedup':
            results = run_exact_dedup(paths, ExactDedupConfig(**settings), work_dir, executor)
        else:
            cfg = MinHashConfig.preset(settings.pop('preset'), **settings)
            results = run_minhash_dedup(paths, cfg, work_dir, executor)
    limit = config.max_examples_per_reason
    tasks = [(s.name, (stage, s.name, p, results[p].removed if results else {}, limit))
             for s, p in zip(shards, paths, strict=True)]
    return run_pass(stage, tasks, functools.partial(apply_removals, out_dir=out_dir), executor,
                    out_dir, redo)


def _curated_texts(paths: list[str], max_chars: int) -> Iterator[str]:
    total = 0
    for path in paths:
        for doc in read_shard(path):
            if max_chars and total >= max_chars:
                return
            total += len(doc.text)
            yield doc.text


def _tokenize(config: ml_collections.ConfigDict, curated: list[str], executor, out_dir: str,
              redo: bool) -> dict[str, Any]:
    from data_pipelines.tokenize import train_tokenizer, write_token_shards

    marker = os.path.join(out_dir, 'markers', 'tokenize.json')
    if os.path.exists(marker) and not redo:
        return read_json(marker)
    c = config.tokenizer
    start = time.perf_counter()
    path = train_tokenizer(_curated_texts(curated, c.max_training_chars),
                           os.path.join(out_dir, 'tokenizer'), kind=c.kind, vocab_size=c.vocab_size)
    trained = time.perf_counter()
    stats = write_token_shards(curated, path, os.path.join(out_dir, 'shards'),
                               config.shards.num_output_shards, config.shards.seed, executor)
    result = {'tokenizer_path': path, 'kind': c.kind, 'vocab_size': c.vocab_size,
              'train_seconds': trained - start, 'shard_seconds': time.perf_counter() - trained,
              'shards_dir': os.path.join(out_dir, 'shards'), **stats}
    write_json(marker, result)
    return result


def _check_chain(stages: list[dict[str, Any]]) -> None:
    """Each stage reads exactly what the previous one kept."""
    for prev, cur in zip(stages, stages[1:], strict=False):
        if cur['read'] != prev['kept']:
            raise AssertionError(f"stage {cur['name']} read {cur['read']} documents but "
                                 f"{prev['name']} kept {prev['kept']}")


def _check_same_config(config: ml_collections.ConfigDict, out_dir: str) -> None:
    """Markers are only valid for the config that wrote them: another config needs a new dir."""
    path = os.path.join(out_dir, 'markers', 'config.json')
    current = json.loads(config.to_json())
    if os.path.exists(path) and read_json(path) != current:
        raise ConfigError(f'{out_dir} holds a run of another config ({path}); use a new --output '
                          'or delete it')
    write_json(path, current)


def run(config: ml_collections.ConfigDict, out_dir: str, executor) -> dict[str, Any]:
    """Runs the whole curation; returns the statistics also written to `out_dir/stats.json`."""
    from data_pipelines.configs import validate
    from data_pipelines.datasheet import write_datasheet

    validate(config)
    data_dir = resolve_data_dir(config)
    shards = plan_shards(config, data_dir)  # before the config is recorded: a typo is no run
    _check_same_config(config, out_dir)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    shards, ids_across_files, ran = _repeated_ids(config, shards, executor, out_dir)
    timings['ids'] = time.perf_counter() - start

    t = time.perf_counter()
    decont_items = {}
    if 'decontamination' in config.stages:
        index = decontamination_index_path(os.path.join(out_dir, 'work'))
        os.makedirs(os.path.dirname(index), exist_ok=True)
        decont_items = decontamination.build_index(
            data_dir, tuple(config.decontamination.benchmarks), config.decontamination.ngram_size,
            index)
    timings['decontamination_index'] = time.perf_counter() - t

    fn = functools.partial(filter_shard, config_json=config.to_json(), data_dir=data_dir,
                           out_dir=out_dir)
    t = time.perf_counter()
    # Once a pass redid a shard, everything after it is redone: its inputs changed.
    per_shard, ran = run_pass('filter', [(s.name, s) for s in shards], fn, executor, out_dir,
                              redo=ran > 0, cost=_read_cost)
    redo = ran > 0
    timings['filter'] = time.perf_counter() - t
    stage_shards = [list(x) for x in zip(*[m['stages'] for m in per_shard], strict=True)]

    previous = 'work/filtered'
    for stage in ('exact_dedup', 'minhash_dedup'):
        if not config.dedup[stage.split('_')[0]].enabled:
            continue
        t = time.perf_counter()
        markers, ran = _dedup(stage, shards, previous, config, executor, out_dir, redo)
        redo = redo or ran > 0
        timings[stage] = time.perf_counter() - t
        stage_shards.append([m['stages'][0] for m in markers])
        previous = f'work/{stage}'

    t = time.perf_counter()
    mix_tasks = [(s.name, (s.name, _shard_path(out_dir, previous, s.name),
                           float(config.sources[s.source].weight), config.mixture.seed,
                           config.max_examples_per_reason)) for s in shards]
    mixed, ran = run_pass('mixture', mix_tasks, functools.partial(mix_shard, out_dir=out_dir),
                          executor, out_dir, redo)
    redo = redo or ran > 0
    timings['mixture'] = time.perf_counter() - t
    stage_shards.append([m['stages'][0] for m in mixed])

    stages = [accounting.merge(s, config.max_examples_per_reason) for s in stage_shards]
    _check_chain(stages)
    curated = [_shard_path(out_dir, 'curated', s.name) for s in shards]
    tokens = {}
    if config.tokenizer.enabled:
        t = time.perf_counter()
        tokens = _tokenize(config, curated, executor, out_dir, redo)
        timings['tokenize'] = time.perf_counter() - t
    timings['total'] = time.perf_counter() - start

    stats = {
        'name': config.name,
        'stages': stages,
        'sources': _per_source(shards, stage_shards, ids_across_files, config),
        'decontamination_items': decont_items,
        'tokens': tokens,
        'timings_seconds': timings,
        'config': json.loads(config.to_json()),
    }
    write_json(os.path.join(out_dir, 'stats.json'), stats)
    write_datasheet(os.path.join(out_dir, 'DATASHEET.md'), stats, config)
    return stats


def _per_source(shards: list[InputShard], stage_shards: list[list[dict]],
                ids_across_files: dict[str, int], config: ml_collections.ConfigDict
                ) -> dict[str, dict[str, Any]]:
    """Per source: records read (damaged files' placeholders are counted apart), repeated ids
    (removed, and kept ones shared with another file),
    documents and characters entering and leaving the per-document stages (and each of them),
    after dedup, curated."""
    out: dict[str, dict[str, Any]] = {}
    filter_end = len(config.stages)  # stage_shards[0] is `read`, then one per listed stage
    for i, s in enumerate(shards):
        spec = config.sources[s.source]
        src = out.setdefault(s.source, {
            'licence': spec.licence, 'description': spec.get('description', ''),
            'creators': spec.get('creators', ''), 'timeframe': spec.get('timeframe', ''),
            'unwrap_lines': bool(spec.get('unwrap_lines', False)), 'weight': float(spec.weight),
            'id_scope': spec.get('id_scope', 'file'),
            'ids_across_files': ids_across_files.get(s.source, 0),
            'files': 0, 'shards': 0, 'damaged_files': 0, 'records_read': 0, 'repeated_ids': 0,
            'chars_read': 0, 'after_filters': 0, 'chars_after_filters': 0, 'after_dedup': 0,
            'curated_documents': 0, 'curated_chars': 0,
            'stage_chars': {name: [0, 0] for name in config.stages}})  # stage -> [in, out]
        read, filtered = stage_shards[0][i], stage_shards[filter_end][i]
        for st in stage_shards[1:filter_end + 1]:
            src['stage_chars'][st[i]['name']][0] += st[i]['chars_in']
            src['stage_chars'][st[i]['name']][1] += st[i]['chars_out']
        damaged = sum(read['reasons'].get(r, 0) for r in FILE_REJECTIONS)
        src['files'] += s.part == 0
        src['shards'] += 1
        src['damaged_files'] += damaged
        src['records_read'] += read['read'] - damaged
        src['repeated_ids'] += read['reasons'].get('duplicate_id', 0)
        src['chars_read'] += read['chars_out']
        src['after_filters'] += filtered['kept']
        src['chars_after_filters'] += filtered['chars_out']
        src['after_dedup'] += stage_shards[-1][i]['read']
        src['curated_documents'] += stage_shards[-1][i]['counters'].get('emitted', 0)
        src['curated_chars'] += stage_shards[-1][i]['counters'].get('emitted_chars', 0)
    return out
