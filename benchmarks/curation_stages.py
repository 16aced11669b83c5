"""Curation throughput: documents/s of every stage of `data_pipelines/configs/text_corpus_mix.py`,
wall time of every pass, and the Ray executor's overhead against the local process pool.

Stage rates are documents read by the stage over the CPU seconds spent in it, summed over worker
processes: documents/s per core. The executor comparison runs the same (smaller) pipeline, with
no tokenizer, once with `--workers` local processes and once on a local Ray with as many CPUs,
and times an empty task `--noop_tasks` times on each. `start` is the time until the executor has
run its first tasks (the process pool spawned; Ray started).

  PYTHONPATH=. python benchmarks/curation_stages.py --workers 2 --json /tmp/curation.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from data_pipelines import pipeline
from data_pipelines.configs import text_corpus_mix
from data_pipelines.executors.local import LocalExecutor
from data_pipelines.executors.ray import RayExecutor


def _noop(x: int) -> int:
    return x


def _config(sources: list[str], tokenizer: bool):
    c = text_corpus_mix.get_config()
    if sources:
        for name in list(c.sources):
            if name not in sources:
                del c.sources[name]
    c.tokenizer.enabled = tokenizer
    return c


def _stage_table(stats: dict) -> list[str]:
    rows = ['| stage | read | kept | removed | CPU s | docs/s per core |',
            '|---|---:|---:|---:|---:|---:|']
    for st in stats['stages']:
        rate = f"{st['read'] / st['seconds']:.0f}" if st['seconds'] > 0 else '—'
        rows.append(f"| {st['name']} | {st['read']} | {st['kept']} | {st['removed']} | "
                    f"{st['seconds']:.1f} | {rate} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--sources', default='', help='comma-separated subset (default: all)')
    parser.add_argument('--executor_sources', default='c4,dolma_cc',
                        help='sources of the local-vs-Ray comparison')
    parser.add_argument('--rounds', type=int, default=2,
                        help='local and Ray runs alternate this many times (best time kept)')
    parser.add_argument('--no_full', action='store_true', help='only the executor comparison')
    parser.add_argument('--noop_tasks', type=int, default=200)
    parser.add_argument('--no_ray', action='store_true')
    parser.add_argument('--json', default='')
    args = parser.parse_args()
    result: dict = {}

    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_full:
            _full(args, tmp, result)
        if not args.no_ray:
            _executors(args, tmp, result)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)


def _full(args, tmp: str, result: dict) -> None:
    config = _config([s for s in args.sources.split(',') if s], tokenizer=True)
    start = time.perf_counter()
    stats = pipeline.run(config, f'{tmp}/full', LocalExecutor(args.workers))
    wall = time.perf_counter() - start
    result['full'] = {'wall_s': wall, 'timings_s': stats['timings_seconds'],
                      'stages': [{k: st[k] for k in ('name', 'read', 'kept', 'removed',
                                                     'seconds')} for st in stats['stages']],
                      'tokens': {k: v for k, v in stats['tokens'].items()
                                 if isinstance(v, (int, float))}}
    print(f'## text_corpus_mix, {args.workers} local workers: {wall:.1f} s wall\n')
    print('\n'.join(_stage_table(stats)))
    print('\n| pass | wall s |\n|---|---:|')
    for name, seconds in stats['timings_seconds'].items():
        print(f'| {name} | {seconds:.1f} |')
    tokens = stats['tokens']
    if tokens:
        print(f"\ntokenizer ({tokens['kind']}, vocab {tokens['vocab_size']}): trained in "
              f"{tokens['train_seconds']:.1f} s; {tokens['tokens']} tokens, "
              f"{tokens['bytes_per_token']:.2f} bytes/token, encoding "
              f"{tokens['encode_mb_per_s']:.2f} MB/s")


def _executors(args, tmp: str, result: dict) -> None:
    """Local processes and Ray alternate `--rounds` times on the same pipeline; the best run of
    each is kept, so that load from other processes affects both alike."""
    sub = [s for s in args.executor_sources.split(',') if s]
    made = {}
    best: dict[str, dict] = {}
    for r in range(args.rounds):
        for name in ('local', 'ray'):
            t = time.perf_counter()
            if name not in made:
                made[name] = LocalExecutor(args.workers) if name == 'local' else RayExecutor(
                    args.workers)
                made[name].map(_noop, list(range(args.workers)))  # workers up and running
            started = time.perf_counter() - t
            t = time.perf_counter()
            pipeline.run(_config(sub, tokenizer=False), f'{tmp}/{name}-{r}', made[name])
            run_s = time.perf_counter() - t
            t = time.perf_counter()
            made[name].map(_noop, list(range(args.noop_tasks)))
            noop_rate = args.noop_tasks / (time.perf_counter() - t)
            entry = best.setdefault(name, {'start_s': started, 'pipeline_s': run_s,
                                           'noop_tasks_per_s': noop_rate})
            entry['pipeline_s'] = min(entry['pipeline_s'], run_s)
            entry['noop_tasks_per_s'] = max(entry['noop_tasks_per_s'], noop_rate)
    result.update(best)
    print(f"\n## executors on {','.join(sub)} ({args.workers} workers, no tokenizer, best of "
          f'{args.rounds})\n')
    print('| executor | start s | pipeline wall s | empty tasks/s |\n|---|---:|---:|---:|')
    for name, e in best.items():
        print(f"| {name} | {e['start_s']:.1f} | {e['pipeline_s']:.1f} | "
              f"{e['noop_tasks_per_s']:.0f} |")


if __name__ == '__main__':
    main()
