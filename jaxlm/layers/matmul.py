"""einsum with float32 accumulation in the forward AND the backward pass.

`jnp.einsum(..., preferred_element_type=f32)` only sets the forward product's accumulator: JAX's
transpose rule gives the two backward products (input and weight gradients) the input dtype, so
in bf16 they accumulate and return in bf16. That is less precise, and on CPUs with AVX512-BF16 it
takes the slow bf16->bf16 kernel (about half the speed of bf16->f32; two thirds of a train step's
FLOPs are in the backward pass). The custom VJP below writes both backward products as einsums
with f32 accumulation, rounding the result to the operand's dtype once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _parse(spec: str) -> tuple[str, str, str]:
    inputs, out = spec.replace(' ', '').split('->')
    a, b = inputs.split(',')
    return a, b, out


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def einsum_f32(spec: str, a: jax.Array, b: jax.Array, out_dtype: jnp.dtype) -> jax.Array:
    """`jnp.einsum(spec, a, b)` accumulated in float32 and cast to `out_dtype`.

    Every index of `a` must appear in `b` or the output, and likewise for `b` (true of all the
    model's contractions), so that each gradient is itself one einsum.
    """
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32).astype(out_dtype)


def _fwd(spec: str, a: jax.Array, b: jax.Array, out_dtype: jnp.dtype):
    return einsum_f32(spec, a, b, out_dtype), (a, b)


def _bwd(spec: str, out_dtype: jnp.dtype, residuals, g: jax.Array):
    a, b = residuals
    sa, sb, so = _parse(spec)
    g = g.astype(jnp.promote_types(a.dtype, b.dtype))
    da = jnp.einsum(f'{so},{sb}->{sa}', g, b, preferred_element_type=jnp.float32)
    db = jnp.einsum(f'{sa},{so}->{sb}', a, g, preferred_element_type=jnp.float32)
    return da.astype(a.dtype), db.astype(b.dtype)


einsum_f32.defvjp(_fwd, _bwd)
