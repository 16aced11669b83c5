"""Programmatic rewards for the RL loop (jaxlm/trainer/rl.py), and how it calls them.

A reward function is named 'module:function' in `rl.reward` (or is a trained reward model,
`rl.reward_model`: `model_reward`) and called as
`fn(prompts, completions, answers) -> sequence of floats`, one per completion (texts; `answers`
are the records' reference answers, '' where there is none), once per prompt with its group of
completions. A function that raises, returns the wrong number of scores or a non-finite one
stops the run with a `RewardError` naming the function and the prompt (never a silently wrong
advantage): rewards are not skipped, since a skipped prompt would change the group statistics.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxlm.data.chat import Message
from jaxlm.errors import ConfigError, UserError

RewardFn = Callable[[Sequence[str], Sequence[str], Sequence[str]], Sequence[float]]
_INTEGER = re.compile(r'-?\d+')


class RewardError(UserError):
    """A reward function failed on a prompt; the message names both."""


def load(spec: str) -> RewardFn:
    """The function `spec` = 'module:function' names; ConfigError when it cannot be found."""
    module_name, _, attr = spec.partition(':')
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f'`rl.reward` = {spec!r} cannot be loaded: {type(e).__name__}: '
                          f'{e}') from None
    if not callable(fn):
        raise ConfigError(f'`rl.reward` = {spec!r} is not a function')
    return fn


def score_group(fn: RewardFn, name: str, index: int, prompt: str, completions: Sequence[str],
                answer: str) -> np.ndarray:
    """float32 rewards of one prompt's completions; RewardError naming `name` and the prompt's
    index in the prompt stream when `fn` fails."""
    where = f'reward function {name} on prompt {index} ({prompt[:60]!r})'
    try:
        scores = [float(s) for s in fn([prompt] * len(completions), list(completions),
                                       [answer] * len(completions))]
    except Exception as e:  # any failure of user code stops the run with its location
        raise RewardError(f'{where} raised {type(e).__name__}: {e}') from e
    if len(scores) != len(completions):
        raise RewardError(f'{where} returned {len(scores)} scores for {len(completions)} '
                          'completions')
    bad = [s for s in scores if not math.isfinite(s)]
    if bad:
        raise RewardError(f'{where} returned a non-finite reward ({bad[0]})')
    return np.asarray(scores, np.float32)


def model_reward(model: Any, messages: Sequence[Message], prompts: Sequence[str],
                 completions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    """A trained reward model's scores (`jaxlm.inference.reward.RewardModel`, or anything with
    its `score(conversations)`) of the prompt's `messages` each followed by one completion as
    the assistant's reply: a reward function once `model` and `messages` are bound."""
    del prompts, answers
    return model.score([(*messages, Message('assistant', c)) for c in completions])


def _first_integer(text: str) -> str | None:
    found = _INTEGER.search(text)
    return None if found is None else found.group()


def arithmetic_exact(prompts: Sequence[str], completions: Sequence[str],
                     answers: Sequence[str]) -> list[float]:
    """1.0 when the completion's first integer is the answer (jaxlm/data/sets/arithmetic.py),
    else 0.0."""
    del prompts
    return [float(_first_integer(c) == a.strip()) for c, a in zip(completions, answers,
                                                                   strict=True)]


def gsm8k_answer(prompts: Sequence[str], completions: Sequence[str],
                 answers: Sequence[str]) -> list[float]:
    """1.0 when math-verify (the `rl` extra) finds the completion's final answer equal to the
    reference answer, e.g. 'The answer is 72.' for '72'; else 0.0."""
    del prompts
    try:
        import math_verify
    except ImportError:
        raise ConfigError("jaxlm.trainer.rewards:gsm8k_answer needs math-verify: pip install "
                          "'jaxlm[rl]'") from None
    out = []
    for completion, answer in zip(completions, answers, strict=True):
        gold = math_verify.parse(answer)
        out.append(float(bool(gold) and math_verify.verify(gold, math_verify.parse(completion))))
    return out


@functools.cache
def _word_pattern(words: tuple[str, ...]) -> re.Pattern:
    return re.compile(r'\b(?:' + '|'.join(re.escape(w) for w in words) + r')\b', re.IGNORECASE)


def profanity_words() -> tuple[str, ...]:
    """The English list of `$JAXLM_DATA_DIR/profanity_wordlists/en.txt` (CC BY 4.0)."""
    path = os.path.join(os.environ.get('JAXLM_DATA_DIR', ''), 'profanity_wordlists', 'en.txt')
    if not os.path.exists(path):
        raise ConfigError(f'{path} not found: set JAXLM_DATA_DIR to the shared data directory')
    with open(path, encoding='utf-8') as f:
        return tuple(w.strip() for w in f if w.strip())


def avoid_words(prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str],
                words: Sequence[str] | None = None) -> list[float]:
    """1.0 for a completion that contains none of `words` (whole words, any case; default
    `profanity_words()`), else 0.0. Bind another list with functools.partial in your own
    module and name that in `rl.reward`."""
    del prompts, answers
    pattern = _word_pattern(tuple(words) if words is not None else profanity_words())
    return [float(pattern.search(c) is None) for c in completions]
