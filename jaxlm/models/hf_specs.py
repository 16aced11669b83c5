"""Hugging Face tensor specs: how one HF tensor maps onto jaxlm parameters.

Each model family lists its own specs (`ModelFamily.hf_specs`); `jaxlm/interop/hf.py` streams
checkpoints through them in both directions. numpy only, so families can import it without
pulling in the conversion code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxlm.errors import UserError

Path = tuple[str, ...]


class ConversionError(UserError, ValueError):
    """A checkpoint that cannot be converted; the message names the tensor or field."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """One HF tensor ('{i}' = layer index) <-> one or more jaxlm parameters. `to_jax` maps the
    HF array to the jaxlm arrays (one layer's slice for layer tensors); `to_hf` the reverse.
    `copies`: other names a checkpoint may store the same tensor under (ignored when reading);
    `fallback`: the stored tensor to read when the checkpoint has no `hf`."""

    hf: str
    paths: tuple[Path, ...]
    hf_shape: tuple[int, ...]
    to_jax: Callable[[np.ndarray], list[np.ndarray]]
    to_hf: Callable[[list[np.ndarray]], np.ndarray]
    per_layer: bool = False
    copies: tuple[str, ...] = ()
    fallback: str | None = None


def hf_names(spec: Spec, num_layers: int) -> list[str]:
    return [spec.hf.format(i=i) for i in range(num_layers)] if spec.per_layer else [spec.hf]


def _one(w: np.ndarray) -> list[np.ndarray]:
    return [w]


def _first(ws: list[np.ndarray]) -> np.ndarray:
    return ws[0]


def _transpose(w: np.ndarray) -> list[np.ndarray]:
    return [w.T]


def _first_transposed(ws: list[np.ndarray]) -> np.ndarray:
    return ws[0].T


def same(hf: str, path: Path, shape: tuple[int, ...], per_layer: bool = False, *,
         copies: tuple[str, ...] = ()) -> Spec:
    """The same array on both sides."""
    return Spec(hf, (path,), shape, _one, _first, per_layer, copies)


def transposed(hf: str, path: Path, shape: tuple[int, ...], per_layer: bool = False, *,
               fallback: str | None = None) -> Spec:
    """torch Linear [out, in] (`shape`) -> kernel [in, out]."""
    return Spec(hf, (path,), shape, _transpose, _first_transposed, per_layer, fallback=fallback)


def linear_in(hf: str, path: Path, d: int, n: int, dh: int) -> Spec:
    """torch Linear [n*dh, d] -> per-layer kernel [d, n, dh] (query, key, value)."""
    return Spec(hf, (path,), (n * dh, d), lambda w: [w.T.reshape(d, n, dh)],
                lambda ws: ws[0].reshape(d, n * dh).T, True)


def linear_out(hf: str, path: Path, d: int, n: int, dh: int) -> Spec:
    """torch Linear [d, n*dh] -> per-layer kernel [n, dh, d] (attention output)."""
    return Spec(hf, (path,), (d, n * dh), lambda w: [w.T.reshape(n, dh, d)],
                lambda ws: ws[0].reshape(n * dh, d).T, True)


def token_embedding(hf: str, m: dict[str, Any], copies: tuple[str, ...] = ()) -> Spec:
    """The [vocab, d_model] token embedding; with tied embeddings a checkpoint's `lm_head.weight`
    is another copy of it."""
    if m['tie_embeddings']:
        copies += ('lm_head.weight',)
    return same(hf, ('token_embed', 'embedding'), (m['vocab_size'], m['d_model']),
                copies=copies)


def lm_head(m: dict[str, Any], fallback: str | None = None) -> list[Spec]:
    """The untied output projection `lm_head.weight` [vocab, d_model]; none when tied."""
    if m['tie_embeddings']:
        return []
    return [transposed('lm_head.weight', ('lm_head',), (m['vocab_size'], m['d_model']),
                       fallback=fallback)]


def no_mapping(family: str) -> ConversionError:
    return ConversionError(f'model family {family!r} has no Hugging Face mapping (jaxlm/models/'
                           'hf_specs.py; a family maps itself in its `hf_specs`, `hf_config`)')
