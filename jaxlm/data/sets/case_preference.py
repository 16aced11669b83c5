"""A synthetic preference set that a tiny model learns in a few dozen steps, for checks of the
reward model and DPO on CPU: the user names a topic, the chosen reply is a short word in lower
case and the rejected reply the same word in upper case. It needs no data files (`data_dir` is
unused) and is the same on every machine (a fixed seed)."""

from __future__ import annotations

import numpy as np

from jaxlm.data.chat import Message
from jaxlm.data.records import Preference

LICENSE = 'synthetic (no third-party data)'
NUM_PAIRS = 512
_TOPICS = ('cats', 'rain', 'tea', 'maps', 'songs', 'ships', 'trees', 'bread')
_LETTERS = np.array(list('abcdefghijklmnopqrstuvwxyz'))


def load(data_dir: str = '') -> list[Preference]:
    del data_dir  # synthetic
    rng = np.random.default_rng(0)
    out = []
    for i in range(NUM_PAIRS):
        word = ''.join(rng.choice(_LETTERS, size=int(rng.integers(3, 7))))
        topic = _TOPICS[int(rng.integers(len(_TOPICS)))]
        out.append(Preference((Message('user', f'A word on {topic}?'),), word, word.upper(),
                              origin=f'case_preference:{i}'))
    return out
