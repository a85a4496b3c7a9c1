"""The parallel solvers never report a wrong trajectory: convergence is judged by the per-step
residual of the returned states, measured here independently in NumPy float64, over
contractive, marginal (largest Lyapunov exponent near 0) and expanding cells, float32 and
float64, eager and under ``jit``, the default budget (here ``T``, as ``T < 100``: the same as
``max_iters = T``) and a small one (8)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gated_jax as gj
from gated_jax.cell import GatedParams, gated_deer, gated_scan, lyapunov_exponent
from gated_jax.cell.parallel import DeerNotConverged, residual_bound

B, T, N, M = 3, 64, 4, 8

# (name, recurrent-weight scale, gate bias, the sign the exponent must have: -1, 0 or +1)
CELLS = (
    ("contractive", 0.5, 0.0, -1),
    ("marginal", 0.05, 6.0, 0),
    ("expanding", 6.0, 2.0, +1),
)


def _numpy_residual(p: GatedParams, xs, z0, zs) -> tuple[float, float]:
    """``(max_t |z[t] - f(z[t-1], x[t])|, max |z|)`` in float64, from the equations."""
    w_x, w_c, w_z, b_c = (None if a is None else np.asarray(a, np.float64) for a in p[:4])
    xs, zs = np.asarray(xs, np.float64), np.asarray(zs, np.float64)
    zprev = np.concatenate(
        [
            np.broadcast_to(np.asarray(z0, np.float64), zs[:, :1].shape[:1] + zs.shape[2:])[
                :, None
            ],
            zs[:, :-1],
        ],
        1,
    )
    pre = xs @ w_c.T + (0.0 if b_c is None else b_c) + (0.0 if w_z is None else zprev @ w_z.T)
    c = 1.0 / (1.0 + np.exp(-pre))
    f = c * zprev + (1.0 - c) * (xs @ w_x.T)
    return float(np.max(np.abs(zs - f))), float(np.max(np.abs(zs)))


def _cell(scale: float, bias: float, dtype, seed: int = 0):
    rng = np.random.default_rng(seed)
    w_z = scale * np.linalg.qr(rng.normal(size=(M, M)))[0]  # every singular value is `scale`
    p = GatedParams(
        jnp.asarray(rng.normal(size=(M, N)), dtype),
        jnp.asarray(rng.normal(size=(M, N)) / np.sqrt(N), dtype),
        jnp.asarray(w_z, dtype),
        jnp.full((M,), bias, dtype),
    )
    xs = jnp.asarray(rng.normal(size=(B, T, N)), dtype)
    z0 = jnp.asarray(rng.uniform(-1, 1, size=(B, M)), dtype)
    return p, xs, z0


def _within(p, xs, z0, zs, dtype, tol, slack: float = 2.0) -> bool:
    r, scale = _numpy_residual(p, xs, z0, zs)
    # the solver measures in its own dtype; a few epsilons of slack for measuring again here
    return r <= slack * residual_bound(tol, dtype) * max(1.0, scale)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", CELLS, ids=[c[0] for c in CELLS])
def test_every_returned_trajectory_is_within_the_residual_bound(cell, dtype):
    _, scale, bias, sign = cell
    with jax.enable_x64(dtype == "float64"):
        p, xs, z0 = _cell(scale, bias, dtype)
        lle = np.asarray(lyapunov_exponent(p, xs, z0))
        if sign < 0:
            assert np.all(lle < -0.1), lle
        elif sign == 0:
            assert np.all(np.abs(lle) < 0.02), lle
        else:
            assert np.all(lle > 0.03), lle
        tol = 1e-12 if dtype == "float64" else 1e-5
        verdicts = []
        combos = list(itertools.product(("full", "diagonal"), (None, 8)))  # None: min(T, 100) = T
        for jacobian, max_iters in combos:
            # gated_deer runs one compiled program eagerly or under jit alike
            zs, info = gated_deer(p, xs, z0, jacobian=jacobian, max_iters=max_iters)
            k = int(info.iterations)
            own = float(info.residuals[k])
            bound = residual_bound(tol, dtype) * max(1.0, float(jnp.max(jnp.abs(zs))))
            where = (jacobian, max_iters)
            # the solver's verdict is its residual test on the returned states, and that test holds
            assert bool(info.converged) == (own <= bound), where
            assert not bool(info.sequential), where
            if bool(info.converged):
                assert _within(p, xs, z0, zs, dtype, tol), where
            if max_iters is None:
                verdicts.append(bool(info.converged))
            # gated_scan eagerly: a trajectory or DeerNotConverged
            method = "deer" if jacobian == "full" else "quasi_deer"
            try:
                out = gated_scan(p, xs, z0, method=method, max_iters=max_iters)
            except DeerNotConverged:
                assert not bool(info.converged), where
            else:
                assert _within(p, xs, z0, out, dtype, tol), where
        # gated_scan under jit: always a trajectory (the sequential loop where Newton fell short)
        methods = {"full": "deer", "diagonal": "quasi_deer"}
        run = jax.jit(
            lambda p, xs, z0: [
                gated_scan(p, xs, z0, method=methods[j], max_iters=k) for j, k in combos
            ]
        )
        for where, out in zip(combos, run(p, xs, z0), strict=True):
            assert _within(p, xs, z0, out, dtype, tol), where
        if sign < 0:
            assert all(verdicts)  # contractive cells converge within the default budget


def _expanding(n: int, m: int, T: int, batch: int):
    p = gj.init_gated_params(jax.random.key(0), n, m, use_bias=True)
    p = p._replace(w_z=8.0 * p.w_z, b_c=jnp.full((m,), 2.0))
    return p, jax.random.normal(jax.random.key(1), (batch, T, n), jnp.float32)


def test_the_expanding_counterexample_is_not_reported_converged():
    """float32, T = 256: after T iterations the last change was 14 and |z| reached 20, outside
    the box every trajectory of the convex mix stays in; it used to be reported converged."""
    p, xs = _expanding(16, 32, 256, 4)
    zs, info = gj.gated_deer(p, xs, max_iters=256, safeguard=False)  # plain DEER
    box = float(jnp.max(jnp.abs(xs @ p.w_x.T)))  # z0 = 0: |z| <= max |W_x x| on every trajectory
    assert float(jnp.max(jnp.abs(gated_scan(p, xs)))) <= box + 1e-5 < float(jnp.max(jnp.abs(zs)))
    assert not bool(info.converged) and not bool(info.sequential)
    assert int(info.iterations) == 256 and info.residuals.shape == (257,)
    assert float(info.residuals[256]) > 1.0  # far from the bound, 1e-5 * max(1, max |z|)


def test_an_unconverged_solve_raises_eagerly_and_falls_back_visibly_under_jit():
    p, xs = _expanding(16, 32, 128, 2)  # 8 updates: far from solved (T = 128 now converge)
    ref = gated_scan(p, xs)
    with pytest.raises(DeerNotConverged, match=r"per-step residual .* `tol` \(=1e-05\)"):
        gated_scan(p, xs, method="deer", max_iters=8)
    # under jit the sequential loop finishes the job, and gated_deer(fallback=True) says so
    out = jax.jit(lambda p, xs: gated_scan(p, xs, method="deer", max_iters=8))(p, xs)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    zs, info = jax.jit(lambda p, xs: gated_deer(p, xs, max_iters=8, fallback=True))(p, xs)
    assert bool(info.sequential) and not bool(info.converged)
    np.testing.assert_allclose(zs, ref, atol=1e-5)


def test_the_budget_is_capped_at_T_and_validated():
    p, xs, z0 = _cell(0.5, 0.0, "float32")
    xs = xs[:, :16]
    for max_iters in (10**9, 2**40):
        _, info = gated_deer(p, xs, z0, max_iters=max_iters)
        assert info.residuals.shape == (17,) and bool(info.converged)
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="`max_iters`"):
            gated_deer(p, xs, z0, max_iters=bad)
    with pytest.raises(ValueError, match="`fallback`"):
        gated_deer(p, xs, z0, fallback="no")


def test_an_eager_gradient_through_an_unconverged_solve_raises_deer_not_converged():
    p, xs = _expanding(4, 8, 32, 2)
    for method in ("deer", "quasi_deer"):
        with pytest.raises(DeerNotConverged, match=f"method='{method}'"):
            jax.grad(lambda p, m=method: gated_scan(p, xs, method=m, max_iters=2).sum())(p)
