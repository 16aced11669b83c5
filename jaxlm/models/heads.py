"""Output heads: what a model computes from its backbone's final hidden states.

A head is a small frozen dataclass called inside the model's compact `__call__` with the final
hidden states [B, L, D] (after the final norm) and the token embedding; it creates its own
parameters at the model's top level, so a backbone composes with any head without a fork:
`lm_head` (LM), `score` (a scalar per token: reward or value), `classifier` (class logits).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.layers.embeddings import Embed
from jaxlm.layers.matmul import einsum_f32
from jaxlm.sharding import constrain


def _kernel(model: nn.Module, name: str, features: int, axis: str | None) -> jax.Array:
    c = model.cfg
    kernel = model.param(name, nn.with_logical_partitioning(
        nn.initializers.normal(c.init_std), ('embed', axis)), (c.d_model, features),
        c.param_dtype)
    return kernel.astype(c.dtype)


@dataclasses.dataclass(frozen=True)
class LMHead:
    """Float32 next-token logits [B, L, vocab]: against the token embedding when
    `cfg.tie_embeddings` (first scaled by 1/sqrt(d_model) with `rescale_tied`, as tied T5), else
    through the `lm_head` kernel [D, vocab]."""

    rescale_tied: bool = False

    def __call__(self, model: nn.Module, x_BxLxD: jax.Array, embed: Embed) -> jax.Array:
        c = model.cfg
        if c.tie_embeddings:
            scale = c.d_model ** -0.5 if self.rescale_tied else 1.0
            logits_BxLxV = embed.attend(x_BxLxD * scale)
        else:
            logits_BxLxV = einsum_f32('bld,dv->blv', x_BxLxD,
                                      _kernel(model, 'lm_head', c.vocab_size, 'vocab'),
                                      jnp.float32)
        return constrain(logits_BxLxV, ('batch', 'length', 'vocab'))


@dataclasses.dataclass(frozen=True)
class ScalarHead:
    """One float32 value per token [B, L] through the kernel `name` [D, 1]: a reward model's
    score or a value function (the objective picks the token it reads)."""

    name: str = 'score'

    def __call__(self, model: nn.Module, x_BxLxD: jax.Array, embed: Embed) -> jax.Array:
        del embed
        out_BxLx1 = einsum_f32('bld,dk->blk', x_BxLxD, _kernel(model, self.name, 1, None),
                               jnp.float32)
        return constrain(out_BxLx1[..., 0], ('batch', 'length'))


@dataclasses.dataclass(frozen=True)
class ClassifierHead:
    """Float32 class logits [B, L, cfg.num_classes] per token through the `classifier`
    kernel."""

    def __call__(self, model: nn.Module, x_BxLxD: jax.Array, embed: Embed) -> jax.Array:
        del embed
        return einsum_f32('bld,dc->blc', x_BxLxD,
                          _kernel(model, 'classifier', model.cfg.num_classes, None), jnp.float32)
