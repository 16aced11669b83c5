"""Post-training datasets by name (`data.mixture` names them): one line each, a loader
(data_dir: str, '' = $JAXLM_DATA_DIR) -> list of records (jaxlm/data/records.py), each module's
`LICENSE` says under which terms, and `NONCOMMERCIAL = True` marks data that a commercial model
must not be trained on."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from jaxlm.data.sets import (
    alpaca_eval,
    arithmetic,
    case_preference,
    fastchat,
    gsm8k,
    hh_rlhf,
    self_instruct,
)

DATASETS: dict[str, Callable[[str], list[Any]]] = {
    'gsm8k': gsm8k.load,
    'fastchat': fastchat.load,
    'self_instruct': self_instruct.load,
    'alpaca_eval': alpaca_eval.load,
    'arithmetic': arithmetic.load,
    'hh_rlhf': hh_rlhf.load,
    'case_preference': case_preference.load,
}


def license_of(name: str) -> tuple[str, bool]:
    """(licence, non-commercial) of a registered dataset, from its module."""
    module = sys.modules[DATASETS[name].__module__]
    return getattr(module, 'LICENSE', 'unknown'), getattr(module, 'NONCOMMERCIAL', False)
