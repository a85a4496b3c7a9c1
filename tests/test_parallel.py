"""The recurrence in parallel over time: minGRU (``w_z=None``) in the core, affine scans, DEER
and quasi-DEER against the sequential recurrence, implicit gradients against autodiff of a plain
scan, and the largest Lyapunov exponent against hand-computable cases and Jacobian products."""

import functools
import zlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gated_jax.cell import (
    GatedParams,
    affine_scan,
    gated_bptt,
    gated_deer,
    gated_scan,
    gated_step,
    jacobian_norm_bound,
    jacobian_product,
    lyapunov_exponent,
    resolve_method,
    state_jacobians,
    step_jacobian,
)
from gated_jax.cell.parallel import DeerNotConverged, scan_levels
from gated_jax.experiments import counterexample
from gated_jax.testing import max_rel_error, numpy_loop, plain_scan


class Config(NamedTuple):
    """One randomized case: batch dims, sizes, which options, and the recurrent weights' norm
    (``None``: the minGRU cell)."""

    batch: tuple[int, ...]
    T: int
    n: int
    m: int
    bias: bool
    reverse: bool
    lengths: bool
    wz_norm: float | None

    def __repr__(self) -> str:
        wz = "minGRU" if self.wz_norm is None else f"wz{self.wz_norm}"
        opts = "".join(
            k
            for k, v in (("-bias", self.bias), ("-rev", self.reverse), ("-len", self.lengths))
            if v
        )
        return f"{wz}-B{'x'.join(map(str, self.batch)) or '0'}-T{self.T}-n{self.n}-m{self.m}{opts}"


def _draw(cfg: Config):
    rng = np.random.default_rng(zlib.crc32(repr(cfg).encode()))
    m, n = cfg.m, cfg.n
    w_x = jnp.asarray(rng.normal(size=(m, n)))
    w_c = jnp.asarray(rng.normal(size=(m, n)))
    w_z = None
    if cfg.wz_norm is not None:
        w = rng.normal(size=(m, m))
        w_z = jnp.asarray(cfg.wz_norm * w / np.linalg.norm(w, 2))
    b = [jnp.asarray(rng.normal(size=m)) for _ in range(2)] if cfg.bias else [None, None]
    p = GatedParams(w_x, w_c, w_z, *b)
    xs = jnp.asarray(rng.normal(size=cfg.batch + (cfg.T, n)))
    z0 = jnp.asarray(rng.normal(size=cfg.batch + (m,)))
    lengths = None
    if cfg.lengths:
        lengths = jnp.asarray(rng.integers(0, cfg.T + 1, size=cfg.batch))
    ct = jnp.asarray(rng.normal(size=cfg.batch + (cfg.T, m)))
    return p, xs, z0, lengths, ct


def _flat_reference(cfg, p, xs, z0, lengths):
    """Autodiff of a plain lax.scan on the flattened batch, reshaped back."""
    T, n, m = cfg.T, cfg.n, cfg.m

    def ref(p, xs, z0):
        lf = None if lengths is None else jnp.reshape(lengths, (-1,))
        out = plain_scan(
            p, xs.reshape(-1, T, n), z0.reshape(-1, m), seq_lengths=lf, reverse=cfg.reverse
        )
        return out.reshape(cfg.batch + (T, m))

    return ref


@functools.cache
def _case(cfg: Config):
    """``(p, xs, z0, lengths, ct, zs_ref, grads_ref)``: the draw and autodiff of a plain scan,
    computed once per config (one compilation) and shared by every test of that config."""
    p, xs, z0, lengths, ct = _draw(cfg)
    ref = _flat_reference(cfg, p, xs, z0, lengths)

    @jax.jit
    def run(p, xs, z0, ct):
        zs, vjp = jax.vjp(ref, p, xs, z0)
        return zs, vjp(ct)

    return (p, xs, z0, lengths, ct, *run(p, xs, z0, ct))


# Batch (4,) and (2, 2) flatten to the same shapes: one compilation serves both (fast tests).
MINGRU = [
    Config((4,), 24, 3, 4, True, False, False, None),
    Config((2, 2), 24, 3, 4, True, True, True, None),
    Config((1,), 1, 1, 1, False, False, False, None),
]
FULL = [
    Config((4,), 24, 3, 4, True, False, False, 0.5),
    Config((2, 2), 24, 3, 4, True, True, True, 1.5),
    Config((4,), 24, 3, 4, True, False, True, 2.0),
]


# ---- 1. w_z = None across the core -----------------------------------------------------------


@pytest.mark.parametrize("cfg", MINGRU, ids=repr)
def test_mingru_core_equals_numpy_loop_and_autodiff(cfg):
    p, xs, z0, lengths, ct, ref, g_ref = _case(cfg)
    kw = dict(seq_lengths=lengths, reverse=cfg.reverse)
    extras = () if cfg != MINGRU[0] else (dict(remat=True), dict(backward="autodiff"))
    B = int(np.prod(cfg.batch))
    lf = None if lengths is None else np.reshape(lengths, (B,))
    expect = numpy_loop(
        p,
        np.reshape(xs, (B, cfg.T, cfg.n)),
        np.reshape(z0, (B, cfg.m)),
        seq_lengths=lf,
        reverse=cfg.reverse,
    ).reshape(cfg.batch + (cfg.T, cfg.m))

    @jax.jit  # one compilation for the scan, its vjp, gated_bptt, remat and autodiff
    def run(p, xs, z0, ct):
        zs, vjp = jax.vjp(lambda p, x, z: gated_scan(p, x, z, **kw), p, xs, z0)
        others = [
            jax.grad(lambda p, e=e: jnp.vdot(gated_scan(p, xs, z0, **kw, **e), ct))(p)
            for e in extras  # remat and the autodiff backward agree as well
        ]
        return zs, vjp(ct), gated_bptt(p, xs, z0, ct, **kw), others

    zs, g, g_bptt, others = run(p, xs, z0, ct)
    assert max_rel_error(zs, expect) < 1e-12
    assert max_rel_error(ref, expect) < 1e-12
    assert g[0].w_z is None
    assert max_rel_error(g, g_ref) < 1e-10
    assert max_rel_error(g_bptt, g_ref) < 1e-10
    for g2 in others:
        assert max_rel_error(g2, g_ref[0]) < 1e-10


def test_mingru_step_and_jacobians_are_diagonal_gates():
    p, xs, z0, *_ = _case(MINGRU[0])

    @jax.jit  # one compilation for all the diagnostics
    def run(p, xs, z0):
        x0 = xs[:, 0]
        J_ad = jax.vmap(jax.jacfwd(lambda z, x: gated_step(p, z, x)))(z0, x0)
        return (
            step_jacobian(p, z0, x0),
            J_ad,
            state_jacobians(p, xs, z0),
            jacobian_norm_bound(p, xs, z0),
            jacobian_product(p, xs, z0, start=2, end=6),
        )

    J, J_ad, Js, bound, P = run(p, xs, z0)
    w_c, b_c = np.asarray(p.w_c), np.asarray(p.b_c)
    cs = 1.0 / (1.0 + np.exp(-(np.asarray(xs) @ w_c.T + b_c)))  # NumPy: the gates
    diag = lambda c: c[..., :, None] * np.eye(c.shape[-1])
    assert max_rel_error(J, diag(cs[:, 0])) < 1e-14
    assert max_rel_error(J, J_ad) < 1e-12
    assert max_rel_error(Js, diag(cs)) < 1e-14
    # the norm bound is exact for a diagonal Jacobian, and the product is the gates' product
    assert max_rel_error(bound, np.max(cs, axis=-1)) < 1e-14
    assert max_rel_error(P, diag(np.prod(cs[:, 2:6], axis=1))) < 1e-13


def test_mingru_under_jit_vmap_and_grad():
    cfg = MINGRU[0]
    p, xs, z0, _, ct, ref, g_ref = _case(cfg)
    f = lambda p, x, z: gated_scan(p, x, z)
    half = jax.tree.map(lambda a: 0.5 * a, p)
    # vmap over parameter sets (None stays None: an empty subtree)
    ps = jax.tree.map(lambda a, b: jnp.stack([a, b]), p, half)

    @jax.jit  # one compilation: the scan, vmapped over parameter sets, and its gradient
    def run(p, ps, xs, z0, ct):
        out = jax.vmap(f, in_axes=(0, None, None))(ps, xs, z0)
        return f(p, xs, z0), out, jax.grad(lambda p: jnp.vdot(f(p, xs, z0), ct))(p)

    zs, out, g = run(p, ps, xs, z0, ct)
    assert max_rel_error(zs, ref) < 1e-12 and max_rel_error(out[0], ref) < 1e-12
    assert max_rel_error(out[1], numpy_loop(half, xs, z0)) < 1e-12
    assert max_rel_error(g, g_ref[0]) < 1e-10


# ---- affine scans ----------------------------------------------------------------------------


@pytest.mark.parametrize("full", [False, True], ids=["diagonal", "full"])
def test_affine_scan_equals_a_loop(full):
    rng = np.random.default_rng(3)
    T, m = 37, 3
    A = rng.normal(size=(2, T, m, m) if full else (2, T, m)) * 0.7
    b, z0 = rng.normal(size=(2, T, m)), rng.normal(size=(2, m))
    z, expect = z0.copy(), np.zeros((2, T, m))
    for t in range(T):
        z = (np.einsum("bij,bj->bi", A[:, t], z) if full else A[:, t] * z) + b[:, t]
        expect[:, t] = z
    out = jax.jit(affine_scan)(jnp.asarray(A), jnp.asarray(b), jnp.asarray(z0))  # one compile
    assert max_rel_error(out, expect) < 1e-12
    with pytest.raises(ValueError, match="`A`"):
        affine_scan(jnp.ones((2, T, m + 1)), jnp.asarray(b))


def test_scan_levels():
    assert [scan_levels(T) for T in (1, 2, 3, 4, 5, 256, 257, 4096)] == [0, 1, 2, 2, 3, 8, 9, 12]


# ---- 2. minGRU's exact parallel scan ----------------------------------------------------------


@pytest.mark.parametrize("cfg", MINGRU, ids=repr)
def test_mingru_parallel_is_one_exact_scan(cfg):
    """Both methods and gated_deer's two Jacobians under one jit; quasi-DEER eagerly once."""
    p, xs, z0, lengths, ct, ref, g_ref = _case(cfg)
    kw = dict(seq_lengths=lengths, reverse=cfg.reverse)
    methods = ("deer", "quasi_deer")

    def vjp_of(method, p, xs, z0, ct):
        zs, vjp = jax.vjp(lambda p, x, z: gated_scan(p, x, z, method=method, **kw), p, xs, z0)
        return zs, vjp(ct)

    @jax.jit
    def run(p, xs, z0, ct):
        solved = [gated_deer(p, xs, z0, jacobian=j) for j in ("full", "diagonal")]
        return [vjp_of(method, p, xs, z0, ct) for method in methods], solved

    results, solved = run(p, xs, z0, ct)
    if cfg == MINGRU[1]:  # eagerly too (no DeerNotConverged: one scan is exact); DEER eagerly
        results.append(vjp_of("quasi_deer", p, xs, z0, ct))  # is in the next test
    for zs, g in results:
        assert zs.shape == cfg.batch + (cfg.T, cfg.m)
        assert max_rel_error(zs, ref) < 1e-10
        assert max_rel_error(g, g_ref) < 1e-10
    for zd, info in solved:
        assert int(info.iterations) == 1 and bool(info.converged)
        if lengths is None and not cfg.reverse:
            assert max_rel_error(zd, ref) < 1e-10


# ---- 3. DEER and quasi-DEER with a recurrent gate ----------------------------------------------


@pytest.mark.parametrize("cfg", FULL, ids=repr)
def test_deer_equals_sequential_and_gradients_are_exact(cfg):
    """DEER and quasi-DEER under one jit (the compiled program also holds the sequential
    fallback, never taken here: eager calls and the fallback are tested below)."""
    p, xs, z0, lengths, ct, ref, g_ref = _case(cfg)
    opts = dict(seq_lengths=lengths, reverse=cfg.reverse, max_iters=cfg.T)
    methods = ("deer", "quasi_deer")

    def vjp_of(method, p, xs, z0, ct):
        zs, vjp = jax.vjp(lambda p, x, z: gated_scan(p, x, z, method=method, **opts), p, xs, z0)
        return zs, vjp(ct)

    run = jax.jit(lambda *a: [vjp_of(method, *a) for method in methods])
    for method, (zs, g) in zip(methods, run(p, xs, z0, ct), strict=True):
        assert max_rel_error(zs, ref) < 1e-10, method
        assert max_rel_error(g, g_ref) < 1e-10, method
        if cfg == FULL[0] and method == "deer":  # eagerly too: converged, so no
            zs, g = vjp_of(method, p, xs, z0, ct)  # DeerNotConverged and the same result
            assert max_rel_error(zs, ref) < 1e-10 and max_rel_error(g, g_ref) < 1e-10


def test_deer_converges_faster_than_quasi_deer_and_reports_residuals():
    cfg = FULL[0]
    p, xs, z0, _, _, ref, _ = _case(cfg)
    _, full = gated_deer(p, xs, z0, jacobian="full")
    _, diag = gated_deer(p, xs, z0, jacobian="diagonal")
    assert bool(full.converged) and bool(diag.converged)
    k = int(full.iterations)
    assert 1 < k < int(diag.iterations) <= cfg.T
    # the per-step residual of every iterate, the initial guess's first; NaN past the last
    r = np.asarray(full.residuals)
    assert r.shape == (min(cfg.T, 100) + 1,)
    assert np.all(np.isfinite(r[: k + 1])) and np.all(np.isnan(r[k + 1 :]))
    assert r[k] <= 1e-12 * max(1.0, float(jnp.max(jnp.abs(ref))))
    assert np.all(r[:k] > 1e-12)  # it stopped at the first iterate within the bound
    # the answer as the initial guess is accepted without a Newton update
    _, again = gated_deer(p, xs, z0, init=ref)
    assert int(again.iterations) == 0 and bool(again.converged)


def test_any_jacobian_is_exact_after_T_iterations_even_when_unstable():
    """Iteration k fixes step k: with ``max_iters = T`` and no early stop, the result is exact."""
    cfg = Config((1,), 12, 2, 3, True, False, False, 4.0)
    p, xs, z0, _, _ = _draw(cfg)
    ref = numpy_loop(p, xs, z0)
    for jac in ("full", "diagonal"):
        zs, info = gated_deer(p, xs, z0, jacobian=jac, tol=1e-300, max_iters=cfg.T)
        assert int(info.iterations) <= cfg.T
        assert max_rel_error(zs, ref) < 1e-10


def test_unconverged_raises_eagerly_and_runs_the_sequential_loop_under_jit():
    cfg = FULL[2]  # ||W_z|| = 2: two iterations are far from converged
    p, xs, z0, lengths, ct, ref, g_ref = _case(cfg)
    _, info = gated_deer(p, xs, z0, jacobian="diagonal", max_iters=2)
    assert not bool(info.converged) and int(info.iterations) == 2
    for method in ("deer", "quasi_deer"):
        with pytest.raises(DeerNotConverged, match="max_iters"):
            gated_scan(p, xs, z0, seq_lengths=lengths, method=method, max_iters=2)
    scan = lambda p: gated_scan(p, xs, z0, seq_lengths=lengths, method="quasi_deer", max_iters=2)
    # one compilation: the states and the gradient of the jitted scan (fallback taken)
    zs, g = jax.jit(lambda p: (scan(p), jax.grad(lambda p: jnp.vdot(scan(p), ct))(p)))(p)
    assert max_rel_error(zs, ref) < 1e-12
    assert max_rel_error(g, g_ref[0]) < 1e-10


def test_parallel_under_vmap_over_params_and_inputs():
    p, xs, z0, _, _, ref, _ = _case(FULL[0])
    half = jax.tree.map(lambda a: 0.5 * a, p)
    ps = jax.tree.map(lambda a, b: jnp.stack([a, b]), p, half)

    @jax.jit  # one compilation: DEER vmapped over parameter sets, quasi-DEER over sequences
    def run(ps, xs, z0):
        out = jax.vmap(lambda p: gated_scan(p, xs, z0, method="deer"))(ps)
        one = lambda x: gated_scan(p, x[None], method="quasi_deer")[0]  # z0 = None: zeros
        return out, jax.vmap(one)(xs)

    out, out2 = run(ps, xs, z0)
    assert max_rel_error(out[0], ref) < 1e-10
    assert max_rel_error(out[1], numpy_loop(half, xs, z0)) < 1e-10
    assert max_rel_error(out2, numpy_loop(p, xs)) < 1e-10


def test_float32_and_bfloat16():
    p, xs, z0, _, _, ref, _ = _case(FULL[0])
    cast = lambda d: (jax.tree.map(lambda a: a.astype(d), p), xs.astype(d), z0.astype(d))

    @jax.jit  # one compilation for the three runs
    def run(f32, bf16):
        return (
            gated_scan(*f32, method="deer"),
            gated_scan(*f32, method="quasi_deer"),
            gated_scan(*bf16, method="quasi_deer"),
        )

    deer32, quasi32, quasi16 = run(cast(jnp.float32), cast(jnp.bfloat16))
    for out in (deer32, quasi32):
        assert out.dtype == jnp.float32 and max_rel_error(out, ref) < 1e-4
    assert quasi16.dtype == jnp.bfloat16 and max_rel_error(quasi16, ref) < 5e-2


def test_auto_is_sequential_on_cpu():
    assert resolve_method("auto", "cpu") == "sequential"
    assert resolve_method("deer") == "deer"


# ---- 4. the largest Lyapunov exponent --------------------------------------------------------


def test_lyapunov_exponent_of_the_counterexample_is_log2_over_2():
    for T in (16, 64, 100):
        params, xs, z0 = counterexample(T)
        assert abs(float(lyapunov_exponent(params, xs, z0)) - np.log(2) / 2) < 1e-12


def test_lyapunov_exponent_of_scalar_cells():
    # minGRU scalar with a constant input: J = c = sigma(w_c x + b_c) every step
    p = GatedParams(jnp.ones((1, 1)), jnp.full((1, 1), 0.7), None, jnp.array([-0.3]), None)
    xs = jnp.full((50, 1), 1.5)
    assert abs(float(lyapunov_exponent(p, xs)) - np.log(jax.nn.sigmoid(0.7 * 1.5 - 0.3))) < 1e-13
    # a scalar full cell at a fixed point z = u: s = 0, so J = c there
    p = GatedParams(jnp.ones((1, 1)), jnp.zeros((1, 1)), jnp.full((1, 1), 2.0))
    xs = jnp.full((30, 1), 0.8)
    c = jax.nn.sigmoid(2.0 * 0.8)
    assert abs(float(lyapunov_exponent(p, xs, jnp.array([0.8]))) - np.log(c)) < 1e-13


@pytest.mark.parametrize("wz_norm", [None, 0.5, 3.0])
def test_lyapunov_exponent_is_the_growth_rate_of_the_jacobian_product(wz_norm):
    cfg = Config((2,), 400, 3, 4, True, False, False, wz_norm)
    p, xs, z0, _, _ = _draw(cfg)
    lle = np.asarray(lyapunov_exponent(p, xs, z0))
    P = np.asarray(jacobian_product(p, xs, z0))
    rate = np.log(np.linalg.norm(P, 2, axis=(-2, -1))) / cfg.T
    # log||P v|| <= log||P||, and the gap is log(1 / |cos angle|) = O(1), so O(1/T) per step
    assert np.all(lle <= rate + 1e-12)
    assert np.all(lle >= rate - 3.0 / cfg.T)
    # one batch element alone gives the same exponent
    assert abs(float(lyapunov_exponent(p, xs[1], z0[1])) - lle[1]) < 1e-12


# ---- 5. bad arguments ------------------------------------------------------------------------

_P = GatedParams(jnp.ones((2, 1)), jnp.ones((2, 1)), jnp.eye(2))
_X = jnp.ones((3, 1))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: gated_scan(_P, _X, method="newton"), "`method`"),
        (lambda: gated_scan(_P, _X, method=None), "`method`"),
        (lambda: gated_scan(_P, _X, method="deer", tol=0.0), "`tol`"),
        (lambda: gated_scan(_P, _X, method="deer", tol=float("nan")), "`tol`"),
        (lambda: gated_scan(_P, _X, method="quasi_deer", tol="1e-5"), "`tol`"),
        (lambda: gated_scan(_P, _X, method="deer", max_iters=0), "`max_iters`"),
        (lambda: gated_scan(_P, _X, method="deer", max_iters=2.5), "`max_iters`"),
        (lambda: gated_scan(_P, _X, method="deer", max_iters=True), "`max_iters`"),
        (lambda: gated_scan(_P, _X, method="deer", backward="autodiff"), "`backward`"),
        (lambda: gated_deer(_P, _X, jacobian="dense"), "`jacobian`"),
        (lambda: gated_deer(_P, _X, tol=-1.0), "`tol`"),
        (lambda: gated_deer(_P, _X, max_iters=-3), "`max_iters`"),
        (lambda: gated_deer(_P, _X, init=jnp.ones((3, 3))), "`init`"),
        (lambda: gated_deer(_P, jnp.ones((3, 2))), "`xs`"),
        (lambda: lyapunov_exponent(_P, jnp.ones((0, 1))), "`xs`"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()
