"""Decontamination: drop documents sharing an n-gram span (13 words) with an evaluation set.

The evaluation items of each benchmark in the data directory are turned into hashed word n-grams
(lower-cased `\\w+` words, as datatrove's n-gram decontamination normalises); the index is a sorted
uint64 array per run, saved once and memory-mapped by every worker. A document matching one is
removed with reason `contaminated_<benchmark>` (the first benchmark in config order it matches).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import glob
import gzip
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator

import numpy as np

from data_pipelines.document import Document

_WORD = re.compile(r'\w+')
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant of the rolling n-gram hash


def _json_strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _json_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _json_strings(v)


def _jsonl_items(path: str) -> Iterator[str]:
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rt', encoding='utf-8') as f:
        for line in f:
            if line.strip():
                yield ' '.join(_json_strings(json.loads(line)))


def _csv_items(path: str, header: bool) -> Iterator[str]:
    with open(path, newline='', encoding='utf-8') as f:
        rows = csv.reader(f)
        if header:
            next(rows, None)
        for row in rows:
            yield ' '.join(row)


def _hellaswag_items(path: str) -> Iterator[str]:
    # 6 lines per task: context, gold index, four endings; the context runs into its gold ending.
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    for i in range(0, len(lines) - 5, 6):
        yield f'{lines[i]} {lines[i + 2 + int(lines[i + 1])]}'


def _mmlu_items(path: str) -> Iterator[str]:
    return _csv_items(path, header=False)


def _truthfulqa_items(path: str) -> Iterator[str]:
    return _csv_items(path, header=True)


_ICL_TASKS = ('arc_challenge', 'arc_easy', 'boolq', 'commonsense_qa', 'copa', 'lambada_openai',
              'openbook_qa', 'piqa', 'winograd_wsc', 'winogrande')
# name -> (glob under the data dir, parser of one file into item texts)
BENCHMARKS: dict[str, tuple[str, Callable[[str], Iterator[str]]]] = {
    'mmlu': ('mmlu/*/*.csv', _mmlu_items),
    'hellaswag': ('hellaswag/*.txt', _hellaswag_items),
    'gsm8k': ('gsm8k/test_sample.jsonl', _jsonl_items),
    'humaneval': ('humaneval/HumanEval.jsonl.gz', _jsonl_items),
    'truthfulqa': ('truthfulqa/TruthfulQA.csv', _truthfulqa_items),
    **{task: (f'icl_eval_tasks/{task}.jsonl', _jsonl_items) for task in _ICL_TASKS},
}


def _word_hashes(words: list[str]) -> np.ndarray:
    cache: dict[str, int] = {}
    out = np.empty(len(words), dtype=np.uint64)
    for i, w in enumerate(words):
        h = cache.get(w)
        if h is None:
            digest = hashlib.blake2b(w.encode(), digest_size=8).digest()
            h = cache[w] = int.from_bytes(digest, 'little')
        out[i] = h
    return out


def ngram_hashes(text: str, n: int) -> np.ndarray:
    """Hashes of every n-word window of `text` (empty when it has fewer than n words)."""
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return np.empty(0, dtype=np.uint64)
    w = _word_hashes(words)
    h = np.zeros(len(words) - n + 1, dtype=np.uint64)
    for i in range(n):  # uint64 arithmetic wraps: a polynomial hash mod 2**64
        h = h * _MULTIPLIER + w[i:len(words) - n + 1 + i]
    return h


def build_index(data_dir: str, benchmarks: tuple[str, ...], n: int, out_path: str
                ) -> dict[str, int]:
    """Writes the n-gram index of `benchmarks` to `out_path` (.npz); returns items per benchmark."""
    hashes, owners, items = [], [], {}
    for b, name in enumerate(benchmarks):
        if name not in BENCHMARKS:
            raise ValueError(f'decontamination.benchmarks: unknown benchmark {name!r}; '
                             f'known: {sorted(BENCHMARKS)}')
        pattern, parse = BENCHMARKS[name]
        paths = sorted(glob.glob(os.path.join(data_dir, pattern)))
        if not paths:
            raise FileNotFoundError(f'decontamination: no files for {name!r} '
                                    f'({pattern} under {data_dir})')
        texts = [t for p in paths for t in parse(p)]
        items[name] = len(texts)
        grams = np.unique(np.concatenate([np.empty(0, np.uint64)]
                                         + [ngram_hashes(t, n) for t in texts]))
        hashes.append(grams)
        owners.append(np.full(len(grams), b, dtype=np.uint8))
    all_hashes = np.concatenate(hashes)
    order = np.argsort(all_hashes, kind='stable')  # ties keep config order: first benchmark wins
    np.savez(out_path, hashes=all_hashes[order], owners=np.concatenate(owners)[order],
             names=np.array(benchmarks))
    return items


@functools.lru_cache(maxsize=2)
def _load_index(path: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    with np.load(path) as z:
        return z['hashes'], z['owners'], tuple(str(s) for s in z['names'])


@dataclasses.dataclass(frozen=True)
class Decontaminator:
    index_path: str
    ngram_size: int = 13

    def __call__(self, doc: Document) -> Document | str:
        hashes, owners, names = _load_index(self.index_path)
        grams = ngram_hashes(doc.text, self.ngram_size)
        if not len(grams) or not len(hashes):
            return doc
        pos = np.minimum(np.searchsorted(hashes, grams), len(hashes) - 1)
        hits = pos[hashes[pos] == grams]
        if not len(hits):
            return doc
        # Equal hashes sort in config order (stable argsort): a hit's entry is its first benchmark.
        return f'contaminated_{names[int(owners[hits].min())]}'
