"""The safe Newton solver (issue 28): on expanding cells, float32 and float64, the default
parallel solver converges within its residual bound with every iterate finite and inside the box
every trajectory of the cell stays in, its work stays within a small factor of the sequential
loop, its gradients equal autodiff of the sequential scan, the generic ``deer_scan`` never
overflows, and a warm start from a nearby trajectory saves iterations. Residuals and references
are computed here independently (NumPy float64, ``lax.scan`` of the cell's step)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gated_jax.cell import GatedParams, deer_scan, gated_deer, gated_scan, gated_step
from gated_jax.cell.parallel import DeerInfo, residual_bound

T = 64
WORK_FACTOR = 10  # documented: at most ~10 T step evaluations on the expanding grid cells


def _numpy_residual(p: GatedParams, xs, z0, zs) -> tuple[float, float]:
    """``(max_t |z[t] - f(z[t-1], x[t])|, max |z|)`` in float64 from the equations; dense,
    diagonal or head ``w_z``."""
    w_x, w_c, w_z, b_c = (None if a is None else np.asarray(a, np.float64) for a in p[:4])
    xs, zs = np.asarray(xs, np.float64), np.asarray(zs, np.float64)
    z0 = np.broadcast_to(np.asarray(z0, np.float64), zs[:, 0].shape)
    zprev = np.concatenate([z0[:, None], zs[:, :-1]], 1)
    if w_z.ndim == 1:
        rec = zprev * w_z
    elif w_z.ndim == 3:
        H, h, _ = w_z.shape
        heads = zprev.reshape(zprev.shape[:-1] + (H, h))
        rec = np.einsum("gij,btgj->btgi", w_z, heads).reshape(zprev.shape)
    else:
        rec = zprev @ w_z.T
    c = 1.0 / (1.0 + np.exp(-(xs @ w_c.T + b_c + rec)))
    f = c * zprev + (1.0 - c) * (xs @ w_x.T)
    return float(np.max(np.abs(zs - f))), float(np.max(np.abs(zs)))


def _cell(structure: str, dtype, seed: int = 0, B: int = 2, n: int = 3, m: int = 8):
    """An expanding cell (positive Lyapunov exponent): large recurrent gate weights."""
    rng = np.random.default_rng(seed)
    if structure == "dense":
        w_z = 16.0 * np.linalg.qr(rng.normal(size=(m, m)))[0]
    elif structure == "diagonal":
        w_z = 12.0 * rng.choice([-1.0, 1.0], size=(m,))
    else:  # two heads of 4
        w_z = 16.0 * np.stack([np.linalg.qr(rng.normal(size=(4, 4)))[0] for _ in range(2)])
    p = GatedParams(
        jnp.asarray(rng.normal(size=(m, n)), dtype),
        jnp.asarray(rng.normal(size=(m, n)) / np.sqrt(n), dtype),
        jnp.asarray(w_z, dtype),
        jnp.full((m,), 2.0, dtype),
    )
    xs = jnp.asarray(rng.normal(size=(B, T, n)), dtype)
    z0 = jnp.asarray(rng.uniform(-1, 1, size=(B, m)), dtype)
    return p, xs, z0


def _box(p, xs, z0) -> float:
    """``max(|z0|, |W_x x|)``: every trajectory of the convex mix stays within it."""
    u = np.asarray(xs, np.float64) @ np.asarray(p.w_x, np.float64).T
    return max(float(np.max(np.abs(u))), float(np.max(np.abs(np.asarray(z0)))))


# (structure, dtype, jacobian): DEER in w_z's structure and quasi-DEER on the dense cell
CASES = (
    ("dense", "float32", "full"),
    ("dense", "float64", "diagonal"),
    ("heads", "float32", "full"),
    ("diagonal", "float64", "full"),
)


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_expanding_cells_converge_with_finite_bounded_iterates(case):
    structure, dtype, jacobian = case
    with jax.enable_x64(dtype == "float64"):
        p, xs, z0 = _cell(structure, dtype)
        box = _box(p, xs, z0)
        tol = 1e-12 if dtype == "float64" else 1e-5
        zs, info = gated_deer(p, xs, z0, jacobian=jacobian, max_iters=T)
        assert bool(info.converged) and int(info.verified) == T
        # no overflow, no NaN in any iterate: the peak is inside the cell's box
        assert np.isfinite(float(info.peak)) and float(info.peak) <= box * (1 + 1e-6)
        r, scale = _numpy_residual(p, xs, z0, zs)
        assert r <= 2 * residual_bound(tol, dtype) * max(1.0, scale)
        # the work bound: step evaluations within a small factor of the sequential loop's T
        assert T <= int(info.work) <= WORK_FACTOR * T
        k = int(info.iterations)
        assert np.all(np.isfinite(np.asarray(info.residuals)[: k + 1]))


def test_plain_deer_leaves_the_box_where_the_safe_solver_does_not():
    """The first expanding cell in float32: plain DEER (``safeguard=False``) passes through
    iterates far outside the box every trajectory stays in (here ~1e19); the default never
    leaves it."""
    p, xs, z0 = _cell("dense", "float32")
    box = _box(p, xs, z0)
    _, plain = gated_deer(p, xs, z0, max_iters=T, safeguard=False)
    _, safe = gated_deer(p, xs, z0, max_iters=T)
    assert not float(plain.peak) <= 100 * box  # far outside, or not finite
    assert float(safe.peak) <= box * (1 + 1e-6) and bool(safe.converged)


def _sequential_loss(p, xs, z0, ct):
    step = lambda z, x: (gated_step(p, z, x),) * 2
    zs = jax.lax.scan(step, z0, jnp.swapaxes(xs, 0, 1))[1]
    return jnp.vdot(jnp.swapaxes(zs, 0, 1), ct)


def test_gradients_equal_autodiff_of_the_sequential_scan():
    """float64, an expanding cell where the wide passes stall and the short window takes over:
    implicit gradients at the returned trajectory equal autodiff through a plain ``lax.scan``
    of ``gated_step``."""
    with jax.enable_x64(True):
        p, xs, z0 = _cell("dense", "float64", seed=2)
        p = p._replace(w_z=0.5 * p.w_z)
        xs = xs[:, :32]
        ct = jnp.asarray(np.random.default_rng(3).normal(size=xs.shape[:2] + (8,)))

        def loss(p, xs, z0):
            zs, info = gated_deer(p, xs, z0, max_iters=32)
            return jnp.vdot(zs, ct), info

        (val, info), g = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(p, xs, z0)
        assert bool(info.converged)
        ref, g_ref = jax.value_and_grad(_sequential_loss, argnums=(0, 1, 2))(p, xs, z0, ct)
        np.testing.assert_allclose(val, ref, rtol=1e-10)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
            err = float(jnp.max(jnp.abs(a - b))) / max(1.0, float(jnp.max(jnp.abs(b))))
            assert err < 1e-10


@pytest.mark.parametrize("dtype", ["float32"])
def test_deer_scan_on_an_expanding_cell_stays_finite_and_converges(dtype):
    """A tanh RNN with recurrent gain 4 (chaotic): plain Newton's extrapolations leave [-1, 1];
    the trust region keeps every iterate finite and the result solves the recurrence."""
    with jax.enable_x64(dtype == "float64"):
        rng = np.random.default_rng(4)
        W = jnp.asarray(4.0 * np.linalg.qr(rng.normal(size=(6, 6)))[0], dtype)
        xs = jnp.asarray(rng.normal(size=(T, 6)), dtype)
        step = lambda h, x: jnp.tanh(W @ h + x)
        hs, info = deer_scan(step, jnp.zeros(6, dtype), xs, max_iters=T)
        assert bool(info.converged) and np.isfinite(float(info.peak))
        assert float(info.peak) <= 1.0 + 4.0 * 2  # |f| <= 1, trust radius 4 max(1, |f|)
        assert int(info.work) <= WORK_FACTOR * T
        hprev = jnp.concatenate([jnp.zeros((1, 6), dtype), hs[:-1]])
        r = float(jnp.max(jnp.abs(hs - jax.vmap(step)(hprev, xs))))
        tol = 1e-12 if dtype == "float64" else 1e-5
        assert r <= residual_bound(tol, dtype) * max(1.0, float(jnp.max(jnp.abs(hs))))


def test_warm_start_from_a_nearby_trajectory_saves_iterations():
    """A training-loop situation: the previous parameters' trajectory as ``init`` for slightly
    moved parameters (diagonal gate, exact Newton, a contractive cell) needs fewer updates than
    zeros, and gives the same answer."""
    with jax.enable_x64(True):
        p, xs, z0 = _cell("diagonal", "float64", seed=5)
        p = p._replace(w_z=p.w_z / 24.0, b_c=jnp.zeros_like(p.b_c))  # |w_z| = 0.5
        prev, _ = gated_deer(p, xs, z0, max_iters=T)
        rng = np.random.default_rng(6)
        moved = jax.tree.map(lambda a: a + 1e-3 * jnp.asarray(rng.normal(size=a.shape)), p)
        cold_zs, cold = gated_deer(moved, xs, z0, max_iters=T)
        warm_zs, warm = gated_deer(moved, xs, z0, max_iters=T, init=prev)
        assert bool(cold.converged) and bool(warm.converged)
        assert int(warm.iterations) < int(cold.iterations)
        np.testing.assert_allclose(warm_zs, cold_zs, atol=1e-11)


def test_info_fields_stay_compatible_and_options_are_validated():
    assert DeerInfo._fields[:4] == ("iterations", "residuals", "converged", "sequential")
    old = DeerInfo(jnp.zeros((), jnp.int32), jnp.zeros(2), jnp.array(True), jnp.array(False))
    assert old.work is None and old.peak is None and old.verified is None
    p, xs, z0 = _cell("diagonal", "float32")
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="`window`"):
            gated_deer(p, xs, z0, window=bad)
    with pytest.raises(ValueError, match="`safeguard`"):
        gated_deer(p, xs, z0, safeguard="no")
    # a window longer than T is T; minGRU reports one exact scan
    _, info = gated_deer(p._replace(w_z=None), xs, z0, window=10**6)
    assert int(info.iterations) == 1 and int(info.work) == T and bool(info.converged)
    np.testing.assert_allclose(
        gated_deer(p, xs, z0, window=10**6, max_iters=T)[0], gated_scan(p, xs, z0), atol=1e-4
    )
