"""The chunked hybrid (``gated_chunked``, ``gated_scan(method="chunked")``) against the
sequential scan and autodiff of it, in float64 on seeded random cells of every ``w_z``
structure, odd lengths (a padded last chunk), lengths, reverse, and its honesty on a solve
that cannot converge in the iterations allowed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gated_jax.cell import (
    DeerNotConverged,
    GatedParams,
    gated_chunked,
    gated_scan,
    init_gated_params,
)
from gated_jax.cell._affine import residual_bound
from gated_jax.cell.chunked import chunk_length

KINDS = {
    "mingru": dict(recurrent_gate=False),
    "dense": {},
    "diagonal": dict(recurrent_gate="diagonal"),
    "heads": dict(recurrent_gate="heads", heads=2),
}


def _cell(kind: str, seed: int, n: int = 3, m: int = 4):
    """A random cell with biases, its weights scaled by a seeded factor in [0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    p = init_gated_params(jax.random.key(seed), n, m, use_bias=True, **KINDS[kind])
    scale = float(rng.uniform(0.5, 1.5))
    p = p._replace(b_c=jnp.asarray(rng.standard_normal(m)), b_x=jnp.asarray(rng.standard_normal(m)))
    return p._replace(w_z=None if p.w_z is None else scale * p.w_z), rng


def _loss(zs):
    return jnp.sum(jnp.sin(zs) * jnp.reshape(jnp.arange(1.0, zs.shape[-1] + 1), (1, 1, -1)))


def _max_diff(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@jax.jit
def _chunked_all(p, xs, z0):
    """One program: the chunked states, info, gradients, and a warm start at the solution."""

    def loss(p, xs, z0):
        zs, info = gated_chunked(p, xs, z0, chunk=5, fallback=True)
        return _loss(zs), (zs, info)

    grads, (zs, info) = jax.grad(loss, (0, 1, 2), has_aux=True)(p, xs, z0)
    init = jax.lax.stop_gradient(zs)
    return zs, info, grads, gated_chunked(p, xs, z0, chunk=5, fallback=True, init=init)[1]


@jax.jit
def _sequential_all(p, xs, z0):
    loss = lambda *a: (lambda zs: (_loss(zs), zs))(gated_scan(*a, backward="autodiff"))
    grads, zs = jax.grad(loss, (0, 1, 2), has_aux=True)(p, xs, z0)
    return zs, grads


@pytest.mark.parametrize("kind", list(KINDS))
def test_states_and_gradients_equal_the_sequential_scan(kind):
    p, rng = _cell(kind, seed=list(KINDS).index(kind))
    xs = jnp.asarray(rng.standard_normal((2, 23, 3)))  # 5 chunks of 5, the last padded by 2
    z0 = jnp.asarray(rng.standard_normal((2, 4)))
    zs, info, grads, warm = _chunked_all(p, xs, z0)
    want, want_grads = _sequential_all(p, xs, z0)
    assert bool(info.converged) and not bool(info.sequential)
    assert _max_diff(zs, want) < 1e-10
    assert _max_diff(grads, want_grads) < 1e-10
    k = int(info.iterations)
    assert k == 1 if kind == "mingru" else 1 <= k <= 4  # at most C - 1 updates
    # the returned residual is measured over every step, and it is within the bound
    bound = residual_bound(1e-12, jnp.float64) * max(1.0, float(jnp.max(jnp.abs(zs))))
    assert float(info.residuals[k]) <= bound
    if kind != "mingru":  # a warm start at the solution needs no update
        assert int(warm.iterations) == 0 and bool(warm.converged)


def test_gated_scan_chunked_with_lengths_reverse_and_final_state():
    p, rng = _cell("heads", seed=11)
    xs = jnp.asarray(rng.standard_normal((3, 13, 3)))
    lengths = jnp.asarray([13, 6, 0])
    kw = dict(seq_lengths=lengths, reverse=True)

    def fn(method):
        loss = lambda p, x: (lambda zs: (_loss(zs), zs))(
            gated_scan(p, x, method=method, chunk=4, **kw)
        )
        return jax.grad(loss, (0, 1), has_aux=True)(p, xs)

    (grads, zs), (want_grads, want) = fn("chunked"), fn("sequential")
    assert _max_diff(zs, want) < 1e-10 and _max_diff(grads, want_grads) < 1e-10
    last = gated_scan(p, xs, method="chunked", chunk=4, return_sequence=False, **kw)
    assert _max_diff(last, want[:, 0]) < 1e-10


def test_chunk_lengths_from_one_step_to_one_chunk():
    p, rng = _cell("diagonal", seed=5)
    xs = jnp.asarray(rng.standard_normal((2, 16, 3)))
    want = gated_scan(p, xs)
    for chunk, most in ((None, 3), (1, 15), (16, 0), (100, 0)):  # 4 chunks, 16, one, one
        zs, info = gated_chunked(p, xs, chunk=chunk)
        assert bool(info.converged) and int(info.iterations) <= most, chunk
        assert _max_diff(zs, want) < 1e-10, chunk
    assert [chunk_length(T) for T in (1, 2, 16, 17, 4096)] == [1, 2, 4, 5, 64]


def test_float32_long_sequence_converges_to_the_sequential_states():
    p, rng = _cell("diagonal", seed=3, n=4, m=8)
    p = jax.tree.map(lambda a: a.astype(jnp.float32), p)
    xs = jnp.asarray(rng.standard_normal((2, 4096, 4)), jnp.float32)
    zs, info = gated_chunked(p, xs)
    want = gated_scan(p, xs)
    assert zs.dtype == jnp.float32 and bool(info.converged)
    assert int(info.iterations) <= 10  # of 63 possible, on a contractive cell
    assert _max_diff(zs, want) < 1e-4


def test_no_convergence_is_never_silent():
    # one update cannot fix 7 unknown chunk starts of a cell whose gate reads its state
    one = lambda v: jnp.full((1, 1), v)
    p = GatedParams(one(1.0), one(0.5), one(1.5))  # the expanding counterexample
    xs = jnp.asarray(np.random.default_rng(0).standard_normal((1, 16, 1)))
    z0 = jnp.ones((1, 1))
    with pytest.raises(DeerNotConverged, match=r"method='chunked', chunk=2"):
        gated_scan(p, xs, z0, method="chunked", chunk=2, max_iters=1)
    want = gated_scan(p, xs, z0)
    jitted = jax.jit(lambda x: gated_scan(p, x, z0, method="chunked", chunk=2, max_iters=1))
    assert _max_diff(jitted(xs), want) < 1e-12  # under jit: the sequential loop instead
    zs, info = gated_chunked(p, xs, z0, chunk=2, max_iters=1)
    assert not bool(info.converged) and not bool(info.sequential)
    assert float(info.residuals[1]) > 1e-12


def test_bad_options_are_named():
    p, _ = _cell("dense", seed=0)
    xs = jnp.zeros((2, 8, 3))
    with pytest.raises(ValueError, match=r"^`chunk` \(=0\) must be"):
        gated_scan(p, xs, method="chunked", chunk=0)
    with pytest.raises(ValueError, match=r"^`chunk` \(=2.5\) must be"):
        gated_chunked(p, xs, chunk=2.5)
    with pytest.raises(ValueError, match=r"^`init` .* must be of shape \(2, 8, 4\)"):
        gated_chunked(p, xs, init=jnp.zeros((2, 8, 3)))
