"""einsum_f32: same values and gradients as a float32 einsum, with f32-accumulated backward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.layers.matmul import einsum_f32

SPECS = [('ab,bc->ac', (6, 5), (5, 4)), ('bld,dhk->blhk', (2, 3, 8), (8, 2, 4)),
         ('blkgd,bskd->bkgls', (2, 5, 2, 3, 4), (2, 5, 2, 4)),
         ('bkgls,bskd->blkgd', (2, 2, 3, 5, 5), (2, 5, 2, 4))]


@pytest.mark.parametrize('spec,sa,sb', SPECS)
def test_value_and_gradients_match_float32_einsum(spec, sa, sb):
    a = jax.random.normal(jax.random.PRNGKey(0), sa)
    b = jax.random.normal(jax.random.PRNGKey(1), sb)
    w = jax.random.normal(jax.random.PRNGKey(2), jnp.einsum(spec, a, b).shape)
    def ref(a, b):
        return jnp.sum(jnp.einsum(spec, a, b) * w)

    def ours(a, b):
        return jnp.sum(einsum_f32(spec, a, b, jnp.float32) * w)

    np.testing.assert_allclose(ours(a, b), ref(a, b), rtol=1e-5)
    for g_ours, g_ref in zip(jax.grad(ours, (0, 1))(a, b), jax.grad(ref, (0, 1))(a, b),
                             strict=True):
        np.testing.assert_allclose(g_ours, g_ref, rtol=1e-5, atol=1e-5)


def test_bf16_backward_accumulates_in_float32():
    """The weight gradient sums 4096 products of 1 + 2^-7: exact (4128, representable in bf16)
    with an f32 accumulator; a bf16 accumulator stalls once the ulp exceeds the addend."""
    a = jnp.full((4096, 1), 1.0 + 2 ** -7, jnp.bfloat16)
    b = jnp.ones((1, 1), jnp.bfloat16)
    grad_b = jax.grad(lambda b: einsum_f32('ab,bc->ac', a, b, jnp.bfloat16)
                      .astype(jnp.float32).sum())(b)
    assert grad_b.dtype == jnp.bfloat16
    assert float(grad_b[0, 0]) == 4128.0
