"""Growing a trained model's vocabulary (new special tokens for a chat template) without changing
any existing row: the token embedding [V, D] gains rows and an untied `lm_head` [D, V] gains
columns, each new one the mean of the existing ones (transformers' `resize_token_embeddings`
with `mean_resizing`), so the new tokens start as likely as an average token instead of at
random."""

from __future__ import annotations

from typing import Any

import numpy as np

EMBEDDING = ('token_embed', 'embedding')
LM_HEAD = ('lm_head',)


def grow_vocab(params: dict[str, Any], new_size: int) -> dict[str, Any]:
    """`params` (host arrays) with `new_size` tokens; the parameters of every existing token are
    bit-identical. Raises ValueError when `new_size` is smaller than the vocabulary."""
    embedding_VxD = np.asarray(params[EMBEDDING[0]][EMBEDDING[1]])
    old_size = embedding_VxD.shape[0]
    if new_size < old_size:
        raise ValueError(f'the vocabulary can only grow: {old_size} -> {new_size} tokens')
    out = {**params, EMBEDDING[0]: {**params[EMBEDDING[0]],
                                    EMBEDDING[1]: _append_mean(embedding_VxD, new_size, 0)}}
    if LM_HEAD[0] in params:
        out[LM_HEAD[0]] = _append_mean(np.asarray(params[LM_HEAD[0]]), new_size, 1)
    return out


def _append_mean(x: np.ndarray, new_size: int, axis: int) -> np.ndarray:
    extra = new_size - x.shape[axis]
    mean = x.astype(np.float64).mean(axis=axis, keepdims=True).astype(x.dtype)
    return np.concatenate([x, np.repeat(mean, extra, axis=axis)], axis=axis)
