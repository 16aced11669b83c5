"""Runs a curation config: `python -m data_pipelines.curate --config CONFIG.py --output DIR`.

`--executor ray` runs the same shard functions as Ray tasks (`--ray_address auto` on a cluster;
without it a local Ray is started). Rerunning into the same DIR skips finished shards.
"""

from __future__ import annotations

import logging

from absl import flags
from ml_collections import config_flags

from data_pipelines import pipeline
from data_pipelines.executors import make_executor
from jaxlm import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Curation config file (get_config).',
                                          lock_config=True)
_OUTPUT = flags.DEFINE_string('output', None, 'Output directory.')
_EXECUTOR = flags.DEFINE_enum('executor', 'local', ['local', 'ray'], 'Where shard tasks run.')
_WORKERS = flags.DEFINE_integer('workers', 2, 'Worker processes (local) or CPUs (local Ray).')
_RAY_ADDRESS = flags.DEFINE_string('ray_address', '', "Ray cluster address ('' starts one).")


def main(argv: list[str]) -> None:
    del argv
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    executor = make_executor(_EXECUTOR.value, _WORKERS.value, _RAY_ADDRESS.value)
    stats = pipeline.run(_CONFIG.value, _OUTPUT.value, executor)
    final = stats['stages'][-1]
    print(f"read {stats['stages'][0]['read']} records; curated "
          f"{final['counters'].get('emitted', 0)} documents into {_OUTPUT.value}")
    for st in stats['stages']:
        print(f"  {st['name']:<18} read {st['read']:>7} kept {st['kept']:>7} "
              f"removed {st['removed']:>6} {dict(list(st['reasons'].items())[:4])}")
    if stats['tokens']:
        print(f"tokens: {stats['tokens'].get('tokens')} in {_OUTPUT.value}/shards")


if __name__ == '__main__':
    flags.mark_flags_as_required(['config', 'output'])
    cli.run(main, 'data_pipelines.curate')
