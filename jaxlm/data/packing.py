"""Best-fit-decreasing packing of variable-length examples into fixed rows (supervised
fine-tuning): each row holds whole examples, each with its own segment id and positions restarted
at 0, so attention (segment masking, jaxlm/layers/attention.py) never crosses examples and every
token's loss equals the unpacked run's.

An example is (tokens [n], loss mask [n] bool); its row fields are the next-token pairs
inputs = tokens[:-1], targets = tokens[1:], trained where the target is masked in.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

FIELDS = ('inputs', 'targets', 'segment_ids', 'positions', 'loss_mask')


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bins of example indices: longest first, each into the fullest bin it still fits (a new
    bin when none does). Every length must be in [1, capacity]."""
    bad = [n for n in lengths if not 1 <= n <= capacity]
    if bad:
        raise ValueError(f'example lengths must be in [1, {capacity}], got {bad[:5]}')
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free space, bin) sorted ascending
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[i]
        at = bisect.bisect_left(free, (n, -1))
        if at == len(free):
            bins.append([i])
            space, b = capacity - n, len(bins) - 1
        else:
            space, b = free.pop(at)
            bins[b].append(i)
            space -= n
        bisect.insort(free, (space, b))
    return bins


def pack(examples: Sequence[tuple[np.ndarray, np.ndarray]], seq_len: int,
         pad_id: int = 0) -> dict[str, np.ndarray]:
    """Rows [R, seq_len] of FIELDS holding every example (tokens of at most seq_len + 1), by
    best-fit decreasing; padding has segment id 0 and no loss."""
    lengths = [len(tokens) - 1 for tokens, _ in examples]
    bins = best_fit_decreasing(lengths, seq_len)
    rows = {k: np.zeros((len(bins), seq_len), np.float32 if k == 'loss_mask' else np.int32)
            for k in FIELDS}
    rows['inputs'][:] = rows['targets'][:] = pad_id
    for r, members in enumerate(bins):
        at = 0
        for segment, i in enumerate(members, start=1):
            tokens, mask = examples[i]
            n = lengths[i]
            span = slice(at, at + n)
            rows['inputs'][r, span] = tokens[:-1]
            rows['targets'][r, span] = tokens[1:]
            rows['loss_mask'][r, span] = mask[1:]
            rows['segment_ids'][r, span] = segment
            rows['positions'][r, span] = np.arange(n)
            at += n
    return rows
