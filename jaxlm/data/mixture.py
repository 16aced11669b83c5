"""The 'mixture' source (`data.source = 'mixture'`): post-training records of the datasets that
`data.mixture` names (jaxlm/data/post_datasets.py), weighted.

`data.mixture = 'gsm8k:0.5,fastchat:0.5'` (a name alone weighs 1). Each dataset is split into
train and eval by a fixed seed of its own (`data.eval_fraction`, at least one record each), so eval
losses stay comparable across runs and mixtures. The train split then holds as many records as
all the datasets' train splits together, each dataset's share its weight's: a dataset drawn more
often than it has records repeats (whole passes, each in a new order), one drawn less is
subsampled; the draw follows the run's seed. The eval split is every dataset's eval records, not
weighted.

The tokenizer: 'byte' -> `ChatByteTokenizer`; 'sentencepiece' without a path -> trained on the
train records' texts with the chat markers as symbols (jaxlm/data/chat_format.py); else as
`data.tokenizer` says.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxlm.data import post_datasets, records, tokenizers
from jaxlm.data.chat_format import CHAT_TOKENS, ChatByteTokenizer
from jaxlm.data.documents import Split
from jaxlm.errors import ConfigError


def parse(spec: str) -> list[tuple[str, float]]:
    """[(dataset, weight)] of a `data.mixture` string; ConfigError names what is wrong."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(','))):
        name, _, weight = part.partition(':')
        if name not in post_datasets.DATASETS:
            raise ConfigError(f'data.mixture: unknown dataset {name!r} (known: '
                              f'{", ".join(sorted(post_datasets.DATASETS))})')
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            value = -1.0
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f'data.mixture: the weight of {name!r} must be a positive number, '
                              f'got {weight!r}')
        out.append((name, value))
    if not out or len({n for n, _ in out}) < len(out):
        raise ConfigError(f'data.mixture must name each dataset once, as "name:weight,...", got '
                          f'{spec!r}')
    return out


def _seed(*parts: Any) -> np.random.Generator:
    words = [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]
    return np.random.default_rng(np.random.SeedSequence(words))


def split(items: list[Any], name: str, eval_fraction: float) -> tuple[list[Any], list[Any]]:
    """(train, eval) of one dataset by its own fixed seed."""
    if len(items) < 2:
        raise ConfigError(f'dataset {name!r} has {len(items)} record(s); need 2 to split')
    order = _seed('eval-split', name).permutation(len(items))
    n_eval = min(max(1, round(eval_fraction * len(items))), len(items) - 1)
    held = set(order[:n_eval].tolist())
    return ([x for i, x in enumerate(items) if i not in held],
            [x for i, x in enumerate(items) if i in held])


def draw(train: dict[str, list[Any]], weights: dict[str, float],
         seed: int) -> tuple[list[Any], dict[str, int]]:
    """(the weighted train records, dataset by dataset; how many of each): see the module
    docstring."""
    total, weight_sum = sum(map(len, train.values())), sum(weights.values())
    out, counts = [], {}
    for name, items in train.items():
        counts[name] = round(total * weights[name] / weight_sum)
        rng = _seed('mixture', seed, name)
        passes = -(-counts[name] // len(items))
        order = np.concatenate([rng.permutation(len(items)) for _ in range(passes)])
        out += [items[i] for i in order[:counts[name]]]
    return out, counts


def _load(data_cfg: Any) -> tuple[dict[str, list[Any]], dict[str, list[Any]], dict]:
    train, held, stats = {}, {}, {'mixture': {}, 'noncommercial': []}
    for name, weight in parse(data_cfg.mixture):
        items = post_datasets.DATASETS[name](data_cfg.data_dir)
        train[name], held[name] = split(items, name, data_cfg.eval_fraction)
        terms, noncommercial = post_datasets.license_of(name)
        stats['mixture'][name] = {'records': len(items), 'weight': weight, 'license': terms,
                                  'train_records': len(train[name]),
                                  'eval_records': len(held[name])}
        if noncommercial:
            stats['noncommercial'].append(name)
    return train, held, stats


def _train_texts(train: dict[str, list[Any]]) -> list[str]:
    return [t for items in train.values() for r in items for t in records.texts(r)]


def _read_train_texts(data_cfg: Any) -> list[str]:
    return _train_texts(_load(data_cfg)[0])


def make_tokenizer(data_cfg: Any, texts_fn: Callable[[], list[str]]) -> tokenizers.Tokenizer:
    tok = data_cfg.tokenizer
    if tok.kind == 'byte':
        return ChatByteTokenizer()
    if tok.kind == 'sentencepiece' and not tok.path:
        path = tokenizers.train_sentencepiece(texts_fn(), tok.vocab_size,
                                              data_cfg.cache_dir or None, CHAT_TOKENS)
        return tokenizers.SentencePieceTokenizer(path)
    return tokenizers.build_tokenizer(tok.kind, tok.vocab_size, list, data_cfg.cache_dir or None,
                                      tok.path)


def tokenizer(data_cfg: Any) -> tokenizers.Tokenizer:
    """The tokenizer `open_mixture(data_cfg)` uses; records are read only to train one."""
    return make_tokenizer(data_cfg, functools.partial(_read_train_texts, data_cfg))


def open_mixture(data_cfg: Any, seed: int) -> Split:
    """Weighted train records and every dataset's eval records (lists of records)."""
    train, held, stats = _load(data_cfg)
    weights = dict(parse(data_cfg.mixture))
    drawn, counts = draw(train, weights, seed)
    for name, count in counts.items():
        stats['mixture'][name]['drawn'] = count
    tok = make_tokenizer(data_cfg, functools.partial(_train_texts, train))
    return Split(tok, drawn, [r for items in held.values() for r in items],
                 {**stats, 'train_records': len(drawn)})
