"""Evaluate a trained run: python -m jaxlm.eval --workdir DIR --tasks perplexity,hellaswag,mmlu.

Writes `DIR/eval/<step>/results.json` (metrics, stderr, random baselines, docs, few-shot count,
documents scored on a truncated context, timing; NaN as null) and `samples_<task>.jsonl` (one
record per document), and prints a markdown table. `perplexity` defaults to the held-out
documents of the run's own corpus.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

import ml_collections
from absl import app, flags

from jaxlm import cli
from jaxlm.errors import UserError

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory written by jaxlm.train.')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None,
    'A checkpoints directory (its latest step) or one step directory in it '
    '(default: WORKDIR/checkpoints).')
_TASKS = flags.DEFINE_list('tasks', ['perplexity', 'hellaswag', 'mmlu'],
                           'Comma-separated task names (see jaxlm.evaluation.registry).')
_NUM_FEWSHOT = flags.DEFINE_integer('num_fewshot', None, "Shots for every task (default: each "
                                    "task's own: 5 for mmlu, 8 for gsm8k, else 0).")
_LIMIT = flags.DEFINE_integer('limit', None, 'Evaluate only the first N >= 1 documents of each '
                              'task.')
_DTYPE = flags.DEFINE_enum('dtype', None, ['float32', 'bfloat16', 'float16'],
                           "Compute dtype (default: the run's model.dtype); float32 scores as "
                           'lm-evaluation-harness does in float32, whatever the run trained in.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 16, 'Sequences per forward pass.')
_ADD_BOS = flags.DEFINE_boolean(
    'add_bos', True, 'Condition requests on BOS (as jaxlm trains); --noadd_bos scores like '
    "lm-evaluation-harness's HFLM default, e.g. for converted GPT-2 checkpoints.")
_CHAT = flags.DEFINE_boolean(
    'chat', False, "Generation tasks prompt through the run's chat template (one user turn and "
    "the generation prompt; lm-evaluation-harness's --apply_chat_template) and stop at the "
    'end of the turn.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Benchmark data dir (default $JAXLM_DATA_DIR).')
_OPTION = flags.DEFINE_multi_string('option', [], 'Task option TASK.KEY=VALUE, e.g. '
                                    'mmlu.split=test or perplexity.text=tiny_shakespeare.')
flags.mark_flags_as_required(['workdir'])


def _task_options(specs: list[str]) -> dict[str, dict[str, str]]:
    options: dict[str, dict[str, str]] = {}
    for spec in specs:
        key, sep, value = spec.partition('=')
        task, dot, name = key.partition('.')
        if not (sep and dot and task and name):
            raise app.UsageError(f'--option {spec!r} is not TASK.KEY=VALUE')
        options.setdefault(task, {})[name] = value
    return options


def _number(x: float) -> str:
    return f'{x:.4f}' if abs(x) < 1e4 else f'{x:.4g}'  # perplexities of untrained models are huge


def markdown_table(results: dict[str, Any]) -> str:
    """task | metric | value | random baseline | docs; per-subject metrics (`acc/x`) omitted."""
    rows = ['| task | metric | value | random baseline | docs |', '|---|---|---:|---:|---:|']
    for name, r in results.items():
        for metric, value in r['metrics'].items():
            if '/' in metric:
                continue
            stderr = r['stderr'].get(metric)
            shown = _number(value) + (f' ± {_number(stderr)}' if stderr is not None else '')
            base = r['baseline'].get(metric)
            rows.append(f'| {name} | {metric} | {shown} | '
                        f'{"-" if base is None else _number(base)} | {r["num_docs"]} |')
    return '\n'.join(rows)


def truncation_note(num_truncated: int, num_docs: int, max_length: int) -> str:
    return (f"{num_truncated} of {num_docs} documents did not fit the model's {max_length}-token "
            'context: their prompts were cut on the left, as lm-evaluation-harness cuts them '
            '(where the harness refuses to run, on a continuation longer than the context or '
            'max_gen_toks >= the context, jaxlm scores the continuation in rolling windows and '
            'generates at most half the context)')


def _jsonable(x: Any) -> Any:
    """NaN and infinities as null, so that results are valid JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x


def _dump(obj: Any, f: Any, **kwargs: Any) -> None:
    json.dump(_jsonable(obj), f, allow_nan=False, **kwargs)


def run(workdir: str, task_names: list[str], *, checkpoint: str | None = None,
        num_fewshot: int | None = None, limit: int | None = None, batch_size: int = 16,
        data_dir: str | None = None, options: dict[str, dict[str, str]] | None = None,
        add_bos: bool = True, dtype: str | None = None,
        chat: bool = False) -> tuple[str, dict[str, Any]]:
    """Evaluates the run's latest checkpoint; returns the output dir and the results."""
    from jaxlm.evaluation.lm import JaxLM
    from jaxlm.evaluation.registry import get_task

    if limit is not None and limit < 1:
        raise UserError(f'--limit must be at least 1 (documents per task), got {limit}; leave '
                        'it out to evaluate every document')
    options = options or {}
    tasks = {}
    for name in task_names:  # unknown names fail before the model loads
        kwargs: dict[str, Any] = dict(options.get(name, {}))
        if name == 'perplexity' and 'text' not in kwargs:
            with open(os.path.join(workdir, 'config.json')) as f:
                kwargs['data_cfg'] = ml_collections.ConfigDict(json.load(f)['data'])
        tasks[name] = get_task(name, **kwargs)
    if chat:  # before reading any checkpoint
        from jaxlm.inference.load import read_run_config
        from jaxlm.models import registry

        if registry.family(read_run_config(workdir).model).decoder_start is not None:
            raise UserError('--chat renders a chat template for a decoder; an encoder-decoder '
                            'run (objective seq2seq) reads the plain prompt: leave out --chat')
    lm = JaxLM.from_workdir(workdir, checkpoint, batch_size=batch_size, add_bos=add_bos,
                            dtype=dtype)
    if chat:
        from jaxlm.data.chat_format import run_template
        from jaxlm.evaluation.chat import ChatLM

        lm = ChatLM(lm, run_template(lm.config.data))
    out_dir = os.path.join(workdir, 'eval', str(lm.step))
    os.makedirs(out_dir, exist_ok=True)
    results: dict[str, Any] = {}
    for name, task in tasks.items():
        start = time.perf_counter()
        r = task.evaluate(lm, data_dir=data_dir, num_fewshot=num_fewshot, limit=limit)
        seconds = time.perf_counter() - start
        results[name] = {'metrics': r.metrics, 'stderr': r.stderr, 'baseline': r.baseline,
                         'num_docs': r.num_docs, 'num_fewshot': r.num_fewshot,
                         'num_requests': r.num_requests, 'truncated_docs': r.truncated_docs,
                         'seconds': round(seconds, 3),
                         'requests_per_second': round(r.num_requests / max(seconds, 1e-9), 3)}
        if r.truncated_docs:
            results[name]['truncation'] = truncation_note(r.truncated_docs, r.num_docs,
                                                          lm.max_length)
            logging.warning('%s: %s', name, results[name]['truncation'])
        with open(os.path.join(out_dir, f'samples_{name}.jsonl'), 'w') as f:
            for record in r.per_doc:
                _dump(record, f)
                f.write('\n')
        logging.info('%s: %s (%.1f s)', name, r.metrics, seconds)
    summary = {'workdir': os.path.abspath(workdir), 'step': lm.step, 'checkpoint': checkpoint,
               'limit': limit, 'batch_size': batch_size, 'chat': chat,
               'dtype': lm.config.model.dtype, 'max_length': lm.max_length,
               'results': results}
    with open(os.path.join(out_dir, 'results.json'), 'w') as f:
        _dump(summary, f, indent=2)
    return out_dir, results


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    for name in ('absl', 'jax._src.xla_bridge'):  # backend probing noise on CPU hosts
        logging.getLogger(name).setLevel(logging.WARNING)
    out_dir, results = run(_WORKDIR.value, _TASKS.value, checkpoint=_CHECKPOINT.value,
                           num_fewshot=_NUM_FEWSHOT.value, limit=_LIMIT.value,
                           batch_size=_BATCH_SIZE.value, data_dir=_DATA_DIR.value,
                           options=_task_options(_OPTION.value), add_bos=_ADD_BOS.value,
                           dtype=_DTYPE.value, chat=_CHAT.value)
    print(markdown_table(results))
    for name, r in results.items():
        if 'truncation' in r:
            print(f'note: {name}: {r["truncation"]}')
    print(f'\nwrote {os.path.join(out_dir, "results.json")}')


if __name__ == '__main__':
    cli.run(main, 'jaxlm.eval')
