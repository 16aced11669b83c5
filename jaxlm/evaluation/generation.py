"""Generation tasks' answer extraction and matching, as lm-evaluation-harness 0.4's
`RegexFilter` (`lm_eval/filters/extraction.py`) and `exact_match` (`lm_eval/api/metrics.py`,
HF `evaluate`'s exact_match: regexes removed from both sides, then optional lower-casing)."""

from __future__ import annotations

import re
from collections.abc import Sequence

FALLBACK = '[invalid]'  # the harness's RegexFilter fallback when nothing matches


def regex_extract(text: str, pattern: str, group_select: int = 0) -> str:
    """The `group_select`-th match of `pattern` (negative counts from the end); with several
    groups, the first non-empty group of that match."""
    matches = re.findall(pattern, text)
    if not matches:
        return FALLBACK
    match = matches[group_select]
    if isinstance(match, tuple):
        found = [m for m in match if m]
        if not found:
            return FALLBACK
        match = found[0]
    return match.strip()


def exact_match(prediction: str, reference: str, *, regexes_to_ignore: Sequence[str] = (),
                ignore_case: bool = False) -> float:
    for pattern in regexes_to_ignore:
        prediction = re.sub(pattern, '', prediction)
        reference = re.sub(pattern, '', reference)
    if ignore_case:
        prediction, reference = prediction.lower(), reference.lower()
    return float(prediction == reference)
