"""The gated recurrence: scan vs a NumPy loop, closed-form BPTT vs autodiff, Jacobians."""

import functools
import zlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import gated_jax
from gated_jax.cell import (
    GatedParams,
    gated_bptt,
    gated_scan,
    gated_step,
    gradient_flow,
    init_gated_params,
    jacobian_norm_bound,
    jacobian_product,
    state_jacobians,
    step_jacobian,
)
from gated_jax.testing import max_rel_error

# ---- independent references (written here, not imported from the package) -------------------


def _sigmoid(x):
    """``1 / (1 + e^-x)`` in NumPy, accurate to rounding for large ``|x|`` and without overflow."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def np_loop(p, xs, z0, lengths=None, reverse=False):
    """The cell's equations step by step in float64; xs (B, T, n), z0 (B, m)."""
    w_x, w_c, w_z, b_c, b_x = (None if a is None else np.asarray(a, np.float64) for a in p)
    B, T, _ = xs.shape
    out = np.zeros((B, T, w_x.shape[0]))
    for b in range(B):
        z = np.array(z0[b], np.float64)
        for t in range(T - 1, -1, -1) if reverse else range(T):
            if lengths is None or t < lengths[b]:
                pre = w_c @ xs[b, t] + w_z @ z + (0 if b_c is None else b_c)
                c = _sigmoid(pre)
                z = c * z + (1 - c) * (w_x @ xs[b, t] + (0 if b_x is None else b_x))
            out[b, t] = z
    return out


def plain(p, xs, z0, lengths=None, reverse=False):
    """A plain lax.scan with all three matmuls in the step; xs (B, T, n), z0 (B, m)."""
    T = xs.shape[1]
    lengths = jnp.full(xs.shape[:1], T) if lengths is None else lengths

    def step(z, inp):
        x, t = inp
        pre = x @ p.w_c.T + z @ p.w_z.T + (0.0 if p.b_c is None else p.b_c[None])
        c = jax.nn.sigmoid(pre)
        zn = c * z + (1 - c) * (x @ p.w_x.T + (0.0 if p.b_x is None else p.b_x[None]))
        zn = jnp.where((t < lengths)[:, None], zn, z)
        return zn, zn

    _, zs = lax.scan(step, z0, (jnp.swapaxes(xs, 0, 1), jnp.arange(T)), reverse=reverse)
    return jnp.swapaxes(zs, 0, 1)


def rand_params(rng, n, m, bias, scale=1.0):
    shapes = [(m, n), (m, n), (m, m)] + ([(m,), (m,)] if bias else [])
    return GatedParams(*[scale * rng.normal(size=s) for s in shapes])


# the one relative-error measure (inf on a shape or structure mismatch, or a NaN)
rel = tree_rel = max_rel_error


# ---- forward -----------------------------------------------------------------------------------

CONFIGS = [
    # (batch, T, n, m, bias, reverse, lengths?, remat, z0 kind)
    ((), 5, 3, 4, False, False, False, False, "none"),
    ((2, 3), 4, 2, 3, True, True, True, False, "bcast"),
    ((3,), 9, 4, 2, True, False, True, True, "full"),
    ((2,), 9, 3, 3, False, True, True, 4, "none"),  # remat, padded to 12 steps
    ((2,), 66, 2, 3, True, True, True, False, "full"),  # 2 segment loops of 33 steps, reversed
]


def _config(rng, batch, T, n, m, bias, has_len, zkind):
    p = rand_params(rng, n, m, bias)
    xs = rng.normal(size=batch + (T, n))
    z0 = {"none": None, "full": rng.normal(size=batch + (m,)), "bcast": rng.normal(size=(m,))}[
        zkind
    ]
    lengths = rng.integers(0, T + 1, size=batch) if has_len else None
    return p, xs, z0, lengths


def _flat(batch, T, n, m, xs, z0, lengths):
    B = int(np.prod(batch))
    xf = np.reshape(xs, (B, T, n))
    zf = np.zeros((B, m)) if z0 is None else np.reshape(np.broadcast_to(z0, batch + (m,)), (B, m))
    lf = None if lengths is None else np.reshape(lengths, (B,))
    return xf, zf, lf


@functools.partial(jax.jit, static_argnames=("cfg",))
def _scan_and_vjps(p, xs, z0, lengths, ct, *, cfg):
    """The scan, its VJP, the plain scan's VJP and ``gated_bptt``: one compiled program."""
    batch, T, n, m, _, reverse, _, remat, _ = cfg
    kw = dict(seq_lengths=lengths, reverse=reverse, remat=remat)

    def ours(p, xs, z0):
        return gated_scan(p, xs, z0, **kw)

    def ref(p, xs, z0):
        z0b = jnp.broadcast_to(z0, batch + (m,)).reshape(-1, m)
        lf_ = None if lengths is None else jnp.reshape(lengths, (-1,))
        out = plain(p, xs.reshape(-1, T, n), z0b, lf_, reverse)
        return out.reshape(batch + (T, m))

    zs, vjp1 = jax.vjp(ours, p, xs, z0)
    _, vjp2 = jax.vjp(ref, p, xs, z0)
    g3 = gated_bptt(p, xs, z0, ct, seq_lengths=lengths, reverse=reverse)
    return zs, vjp1(ct), vjp2(ct), g3


@pytest.mark.parametrize("cfg", CONFIGS)
def test_scan_equals_numpy_loop_and_grads_equal_autodiff(cfg):
    batch, T, n, m, bias, reverse, has_len, remat, zkind = cfg
    rng = np.random.default_rng(zlib.crc32(repr(cfg).encode()))  # stable across processes
    p, xs, z0, lengths = _config(rng, batch, T, n, m, bias, has_len, zkind)
    xf, zf, lf = _flat(batch, T, n, m, xs, z0, lengths)
    kw = dict(seq_lengths=lengths, reverse=reverse, remat=remat)
    ct = rng.normal(size=batch + (T, m))
    z0_arg = zf.reshape(batch + (m,)) if z0 is None else z0
    if z0 is None:
        assert rel(gated_scan(p, xs, **kw), gated_scan(p, xs, z0_arg, **kw)) == 0.0

    # compiled together (one program per config, not one per eager call)
    zs, g1, g2, g3 = _scan_and_vjps(p, xs, z0_arg, lengths, ct, cfg=cfg)
    assert zs.shape == batch + (T, m) and zs.dtype == jnp.float64
    expect = np_loop(p, xf, zf, lf, reverse).reshape(batch + (T, m))
    assert rel(zs, expect) < 1e-12
    # vjp of every argument against autodiff of the plain scan
    assert tree_rel(g1, g2) < 1e-11
    # the exposed closed form agrees too, and dl/dW_x has W_x's shape (m, n)
    assert tree_rel(g3, g2) < 1e-11
    assert g3[0].w_x.shape == (m, n)
    if lengths is not None:
        # no gradient past a sequence's length, exactly
        t = np.arange(T)
        past = t[None, :] >= np.reshape(lengths, (-1, 1))
        dxs = np.reshape(np.asarray(g1[1]), (-1, T, n))
        assert np.all(dxs[past.reshape(-1, T)] == 0.0)


def test_held_states_past_length():
    rng = np.random.default_rng(1)
    p = rand_params(rng, 3, 4, True)
    xs = rng.normal(size=(3, 6, 3))
    z0 = rng.normal(size=(3, 4))
    lengths = np.array([0, 2, 6])
    zs = np.asarray(gated_scan(p, xs, z0, seq_lengths=lengths))
    np.testing.assert_array_equal(zs[0], np.broadcast_to(z0[0], (6, 4)))
    np.testing.assert_array_equal(zs[1, 2:], np.broadcast_to(zs[1, 1], (4, 4)))
    zr = np.asarray(gated_scan(p, xs, z0, seq_lengths=lengths, reverse=True))
    np.testing.assert_array_equal(zr[1, 2:], np.broadcast_to(z0[1], (4, 4)))


def test_step_matches_scan_and_broadcasts():
    rng = np.random.default_rng(2)
    p = rand_params(rng, 3, 4, True)
    xs = rng.normal(size=(2, 5, 3))
    zs = gated_scan(p, xs)
    z = np.zeros((2, 4))
    for t in range(5):
        z = gated_step(p, z, xs[:, t])
        assert rel(z, zs[:, t]) < 1e-13
    # a single state broadcast against a batch of inputs
    zb = gated_step(p, np.ones(4), xs[:, 0])
    assert zb.shape == (2, 4)
    assert rel(zb[1], gated_step(p, np.ones(4), xs[1, 0])) < 1e-14


def test_transforms_jit_vmap_params_jacrev_unroll():
    rng = np.random.default_rng(3)
    p = rand_params(rng, 3, 4, True)
    xs = rng.normal(size=(5, 6, 3))
    zs = gated_scan(p, xs)
    assert rel(jax.jit(gated_scan)(p, xs), zs) < 1e-14
    assert rel(jax.vmap(gated_scan, in_axes=(None, 0))(p, xs), zs) < 1e-14
    assert rel(gated_scan(p, xs, unroll=3), zs) < 1e-14
    # vmap over a stack of parameter sets, and its gradient
    ps = jax.tree.map(lambda *a: jnp.stack(a), p, rand_params(rng, 3, 4, True))
    out = jax.vmap(gated_scan, in_axes=(0, None))(ps, xs)
    assert rel(out[1], gated_scan(jax.tree.map(lambda a: a[1], ps), xs)) < 1e-14
    loss = lambda p, x: jnp.sum(jnp.tanh(gated_scan(p, x, unroll=2)))
    gv = jax.vmap(jax.grad(loss), in_axes=(0, None))(ps, xs)
    g0 = jax.grad(lambda p, x: jnp.sum(jnp.tanh(plain(p, x, jnp.zeros((5, 4))))))(
        jax.tree.map(lambda a: a[0], ps), xs
    )
    assert tree_rel(jax.tree.map(lambda a: a[0], gv), g0) < 1e-12


def test_forward_mode_switch():
    rng = np.random.default_rng(4)
    p = rand_params(rng, 3, 4, False)
    xs = rng.normal(size=(6, 3))
    with pytest.raises(TypeError, match="backward='autodiff'"):
        jax.jvp(lambda x: gated_scan(p, x), (xs,), (xs,))
    # each transform jitted: one program each, not one per operation of the eager transform
    jf = jax.jit(jax.jacfwd(lambda x: gated_scan(p, x, backward="autodiff")))(xs)
    jr = jax.jit(jax.jacrev(lambda x: gated_scan(p, x)))(xs)
    jp = jax.jit(jax.jacfwd(lambda x: plain(p, x[None], jnp.zeros((1, 4)))[0]))(xs)
    assert jr.shape == (6, 4, 6, 3) and rel(jf, jp) < 1e-12 and rel(jr, jp) < 1e-12
    jfr = jax.jit(jax.jacfwd(lambda x: gated_scan(p, x, backward="autodiff", remat=True)))(xs)
    assert rel(jfr, jp) < 1e-12
    # hessian (forward over reverse) differentiates the closed-form backward pass itself
    f = lambda x, **k: jnp.sum(jnp.sin(gated_scan(p, x, **k)))
    h1 = jax.jit(jax.hessian(f))(xs)
    h2 = jax.jit(jax.hessian(lambda x: jnp.sum(jnp.sin(plain(p, x[None], jnp.zeros((1, 4)))))))(xs)
    assert rel(h1, h2) < 1e-11


def test_bptt_edge_cases_empty_integer_and_dtypes():
    p = init_gated_params(jax.random.key(0), 3, 4, dtype=jnp.float64)
    # T = 0: zero gradients of the right shapes (batch dims kept)
    dp, dxs, dz0 = gated_bptt(p, jnp.ones((2, 0, 3)), None, jnp.ones((2, 0, 4)))
    assert dxs.shape == (2, 0, 3) and dz0.shape == (2, 4)
    assert all(float(jnp.abs(d).max()) == 0.0 for d in jax.tree.leaves((dp, dz0)))
    # integer inputs: the gradient is the float one, not truncated to the input's int dtype
    x = jnp.asarray(np.random.default_rng(0).integers(-3, 4, (2, 5, 3)))
    g = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 4)))
    d_int = gated_bptt(p, x, None, g)[1]
    d_flt = gated_bptt(p, x.astype(jnp.float64), None, g)[1]
    assert d_int.dtype == jnp.float64 and float(jnp.abs(d_flt).max()) > 0.1
    np.testing.assert_array_equal(d_int, d_flt)
    # bfloat16 in, bfloat16 gradients out, dz0 included when z0 is None
    pb = jax.tree.map(lambda a: a.astype(jnp.bfloat16), p)
    out = gated_bptt(pb, x.astype(jnp.bfloat16), None, g.astype(jnp.bfloat16))
    assert {a.dtype for a in jax.tree.leaves(out)} == {jnp.dtype(jnp.bfloat16)}


def test_diagnostics_are_differentiable_in_forward_mode():
    rng = np.random.default_rng(5)
    p = rand_params(rng, 3, 4, True)
    xs = jnp.asarray(rng.normal(size=(6, 3)))
    fns = (gradient_flow, state_jacobians, jacobian_norm_bound, jacobian_product)

    def every(x):  # all four diagnostics in one function: each mode traces and compiles once
        return tuple(fn(p, x) for fn in fns)

    jr = jax.jit(jax.jacrev(every))(xs)  # the reference: reverse mode, compiled once
    shapes = [v.shape for v in every(xs)]
    for name, jf in (("eager", jax.jacfwd(every)(xs)), ("jit", jax.jit(jax.jacfwd(every))(xs))):
        for fn, a, b, shape in zip(fns, jf, jr, shapes, strict=True):
            assert a.shape == b.shape == shape + xs.shape
            assert rel(a, b) < 1e-12, (name, fn.__name__)
            assert float(jnp.max(jnp.abs(b))) > 1e-3, fn.__name__  # a real, non-zero derivative


def test_dtypes_float32_bfloat16():
    p32 = init_gated_params(jax.random.key(0), 8, 16, use_bias=True, dtype=jnp.float32)
    xs = jax.random.normal(jax.random.key(1), (2, 10, 8), jnp.float32)
    z32 = gated_scan(p32, xs)
    assert z32.dtype == jnp.float32
    p64 = jax.tree.map(lambda a: a.astype(jnp.float64), p32)
    z64 = gated_scan(p64, xs.astype(jnp.float64))
    assert rel(z32, z64) < 1e-5
    g = jax.grad(lambda p: jnp.sum(gated_scan(p, xs) ** 2))(p32)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(g))
    pb = jax.tree.map(lambda a: a.astype(jnp.bfloat16), p32)
    zb = gated_scan(pb, xs.astype(jnp.bfloat16))
    assert zb.dtype == jnp.bfloat16
    # float32 accumulation: only the bf16 rounding of inputs/params/outputs, no drift over T
    zref = gated_scan(
        jax.tree.map(lambda a: a.astype(jnp.float32), pb),
        xs.astype(jnp.bfloat16).astype(jnp.float32),
    )
    assert rel(zb.astype(jnp.float32), zref) < 1e-2
    gb = jax.grad(lambda p: jnp.sum(gated_scan(p, xs.astype(jnp.bfloat16)).astype(jnp.float32)))(pb)
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(gb))


def test_empty_sequence_and_reexports():
    p = init_gated_params(jax.random.key(0), 3, 4)
    zs = gated_scan(p, jnp.zeros((2, 0, 3)))
    assert zs.shape == (2, 0, 4)
    g = jax.grad(lambda x: jnp.sum(gated_scan(p, x)))(jnp.zeros((2, 0, 3)))
    assert g.shape == (2, 0, 3)
    assert gated_jax.gated_scan is gated_scan and gated_jax.GatedParams is GatedParams


def test_init():
    p = init_gated_params(jax.random.key(0), 5, 7, use_bias=True, dtype=jnp.float64)
    assert p.w_x.shape == p.w_c.shape == (7, 5) and p.w_z.shape == (7, 7)
    assert p.b_c.shape == p.b_x.shape == (7,) and p.w_x.dtype == jnp.float64
    np.testing.assert_allclose(p.w_z @ p.w_z.T, np.eye(7), atol=1e-12)
    big = init_gated_params(jax.random.key(1), 200, 150)
    assert big.b_c is None and abs(float(jnp.var(big.w_x)) * 200 - 1) < 0.05


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p: gated_scan(p, np.zeros(3)), "xs"),
        (lambda p: gated_scan(p, np.zeros((4, 5))), "n = 3"),
        (lambda p: gated_scan(p._replace(w_z=np.zeros((4, 3))), np.zeros((4, 3))), "w_z"),
        (lambda p: gated_scan(p._replace(w_c=np.zeros((3, 3))), np.zeros((4, 3))), "w_c"),
        (lambda p: gated_scan(p._replace(b_c=np.zeros(3)), np.zeros((4, 3))), "b_c"),
        (lambda p: gated_scan(p, np.zeros((2, 4, 3)), np.zeros((3, 4))), "z0"),
        (lambda p: gated_scan(p, np.zeros((2, 4, 3)), np.zeros((2, 5))), "z0"),
        (lambda p: gated_scan(p, np.zeros((2, 4, 3)), seq_lengths=np.array([1])), "seq_lengths"),
        (lambda p: gated_scan(p, np.zeros((2, 4, 3)), seq_lengths=np.array([1, 5])), r"\[0, 4\]"),
        (lambda p: gated_scan(p, np.zeros((2, 4, 3)), seq_lengths=np.array([-1, 2])), "-1"),
        (lambda p: gated_scan(p, np.zeros((2, 4, 3)), seq_lengths=np.ones(2)), "integers"),
        (lambda p: gated_scan(p, np.zeros((4, 3)), unroll=0), "unroll"),
        (lambda p: gated_scan(p, np.zeros((4, 3)), remat=-2), "remat"),
        (lambda p: gated_scan(p, np.zeros((4, 3)), backward="fast"), "backward"),
        (lambda p: gated_bptt(p, np.zeros((4, 3)), None, np.zeros((4, 3))), "dzs"),
        (lambda p: gated_step(p, np.zeros(4), np.zeros(2)), "x_t"),
        (lambda p: step_jacobian(p, np.zeros(3), np.zeros(3)), "z_prev"),
        (lambda p: jacobian_product(p, np.zeros((4, 3)), start=3, end=2), "start"),
        (lambda p: init_gated_params(jax.random.key(0), 0, 3), "n"),
        (lambda p: init_gated_params(jax.random.key(0), 3, 4, dtype=jnp.int32), "dtype"),
        (lambda p: gated_scan(p, [[1.0, 2.0, 3.0]]), r"`xs` .* got list"),
        (lambda p: gated_scan(p, "abc"), r"`xs` .* got str"),
        (lambda p: gated_scan(p, np.zeros((2, 3)), [0.0] * 4), r"`z0` .* got list"),
        (lambda p: gated_bptt(p, np.zeros((2, 3)), None, [[0.0] * 4] * 2), r"`dzs` .* got list"),
    ],
)
def test_bad_input_raises_value_error_naming_argument(call, match):
    p = GatedParams(np.zeros((4, 3)), np.zeros((4, 3)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=match):
        call(p)


# ---- Jacobians -------------------------------------------------------------------------------


def _perturbed_states(p, xs, z0, deltas):
    """States z[1..T] of the plain scan when ``deltas[k]`` is added to ``z[k]`` (k = 0..T-1).

    So ``d z[e] / d deltas[k] = dz[e]/dz[k]`` for ``k < e``: one ``jacfwd`` gives every
    product of Jacobians, independently of the library's formulas.
    """

    def step(z, inp):
        x, d = inp
        z = z + d
        out = plain(p, x[None, None], z[None])[0, 0]
        return out, out

    return lax.scan(step, z0, (xs, deltas))[1]


class Shape(NamedTuple):
    """A trajectory structure for the Jacobian tests: widths, length, biases or not."""

    n: int
    m: int
    T: int
    bias: bool

    def __repr__(self) -> str:
        return f"n{self.n}_m{self.m}_T{self.T}" + "_bias" * self.bias


# A few fixed structures (scalar cell, square, wide, tall; with and without biases):
# hypothesis draws values, not shapes, so each structure compiles once, not once per example.
JACOBIAN_SHAPES = [Shape(1, 1, 1, False), Shape(3, 4, 6, True), Shape(4, 2, 8, False)]
JACOBIAN_SHAPES += [Shape(2, 5, 3, True)]

# D[e-1, :, k, :] = dz[e]/dz[k], by jacfwd through a plain scan (independent of the library)
_all_products = jax.jit(jax.jacfwd(_perturbed_states, argnums=3))


@settings(max_examples=24)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from(JACOBIAN_SHAPES),
    scale=st.floats(0.1, 6.0),
)
def test_jacobians_match_jacfwd(seed, shape, scale):
    n, m, T, bias = shape
    rng = np.random.default_rng(seed)
    p = rand_params(rng, n, m, bias, scale=scale)
    xs, z0 = rng.normal(size=(T, n)), rng.normal(size=m)
    # indexed in NumPy: an eager jnp index per (end, start) pair would compile a program each
    D = np.asarray(_all_products(p, xs, z0, jnp.zeros((T, m))))
    # one step, at a random state of the trajectory
    t = int(rng.integers(0, T))
    traj = np.concatenate([z0[None], np_loop(p, xs[None], z0[None])[0]])
    assert rel(step_jacobian(p, traj[t], xs[t]), D[t, :, t]) < 1e-12
    # all steps, and batched
    Js = state_jacobians(p, xs, z0)
    assert Js.shape == (T, m, m)
    assert rel(Js, jnp.stack([D[k, :, k] for k in range(T)])) < 1e-12
    Jb = state_jacobians(p, np.stack([xs, 2 * xs]), np.stack([z0, z0]))
    assert Jb.shape == (2, T, m, m) and rel(Jb[0], Js) < 1e-12
    # products dz[end]/dz[start], every pair
    for start in range(T):
        for end in range(start + 1, T + 1):
            got = jacobian_product(p, xs, z0, start=start, end=end)
            assert rel(got, D[end - 1, :, start]) < 1e-11, (start, end)
    np.testing.assert_array_equal(jacobian_product(p, xs, z0, start=T, end=T), np.eye(m))
    # gradient flow: spectral norms of dz[T]/dz[k], k = 0..T
    ref = [np.linalg.norm(D[T - 1, :, k], 2) for k in range(T)] + [1.0]
    gf = gradient_flow(p, xs, z0)
    assert gf.shape == (T + 1,) and rel(gf, np.array(ref)) < 1e-11


def test_diagnostics_with_two_batch_dims_equal_the_unbatched_ones():
    rng = np.random.default_rng(12)
    n, m, T = 2, 3, 5
    p = rand_params(rng, n, m, True, scale=2.0)
    xs, z0 = rng.normal(size=(2, 3, T, n)), rng.normal(size=(2, 3, m))
    gf = gradient_flow(p, xs, z0)
    prod = jacobian_product(p, xs, z0, start=1, end=4)
    bound = jacobian_norm_bound(p, xs, z0)
    assert gf.shape == (2, 3, T + 1) and prod.shape == (2, 3, m, m) and bound.shape == (2, 3, T)
    for i in range(2):
        for j in range(3):
            one = (p, xs[i, j], z0[i, j])
            assert rel(gf[i, j], gradient_flow(*one)) < 1e-14
            assert rel(prod[i, j], jacobian_product(*one, start=1, end=4)) < 1e-14
            assert rel(bound[i, j], jacobian_norm_bound(*one)) < 1e-14


_bound_fn = jax.jit(
    lambda p, xs, z0: (
        jnp.linalg.matrix_norm(state_jacobians(p, xs, z0), ord=2),
        jacobian_norm_bound(p, xs, z0),
    )
)


@settings(max_examples=60)
@given(
    seed=st.integers(0, 2**31 - 1),
    w_scale=st.floats(0.01, 30.0),
    x_scale=st.floats(0.0, 10.0),
    z_scale=st.floats(0.0, 10.0),
)
def test_norm_bound_is_an_upper_bound(seed, w_scale, x_scale, z_scale):
    rng = np.random.default_rng(seed)
    p = rand_params(rng, 3, 5, True, scale=w_scale)
    xs = x_scale * rng.normal(size=(4, 8, 3))
    z0 = z_scale * rng.normal(size=(4, 5))
    actual, bound = _bound_fn(p, xs, z0)
    assert bound.shape == (4, 8)
    assert np.all(np.asarray(actual) <= np.asarray(bound) * (1 + 1e-12) + 1e-15)
    # and it is exactly the documented formula, computed here in NumPy from np_loop's states
    w_x, w_c, w_z, b_c, b_x = (np.asarray(a, np.float64) for a in p)
    zs = np_loop(p, xs, z0)
    zprev = np.concatenate([z0[:, None], zs[:, :-1]], axis=1)
    c = _sigmoid(xs @ w_c.T + zprev @ w_z.T + b_c)
    s = (zprev - (xs @ w_x.T + b_x)) * c * (1 - c)
    want = c.max(-1) + np.abs(s).max(-1) * np.linalg.norm(w_z, 2)
    # (1 - c) of a saturated gate cancels to a few digits in either computation: rtol 1e-8 still
    # separates formulas (the Frobenius norm, or 1 for max c, move it by > 1e-3)
    np.testing.assert_allclose(np.asarray(bound), want, rtol=1e-8, atol=1e-14)


def test_gradient_flow_shows_vanishing_and_growth():
    """Gradients can vanish and can explode: a large W_z with states far from u makes them grow."""
    rng = np.random.default_rng(7)
    m = 6
    small = GatedParams(0.1 * rng.normal(size=(m, 2)), rng.normal(size=(m, 2)), 0.01 * np.eye(m))
    xs = rng.normal(size=(40, 2))
    gf = gradient_flow(small, xs)
    assert gf[0] < 1e-6 * gf[-1]  # vanishing
    # large W_z, gate kept half open by its bias, state far from the candidate u = -1:
    # J = 0.5 I + 0.25 (z - u) W_z = 4.5 I, a one-step gain of 4.5
    big = GatedParams(
        np.zeros((m, 2)), np.zeros((m, 2)), 8.0 * np.eye(m), -8.0 * np.ones(m), -np.ones(m)
    )
    J = step_jacobian(big, np.ones(m), np.zeros(2))
    np.testing.assert_allclose(J, 4.5 * np.eye(m), rtol=1e-14)
    # the bound is tight here: max c + max|s| ||W_z|| = 0.5 + 0.5 * 8 = 4.5 = ||J||
    bound = float(jacobian_norm_bound(big, np.zeros((1, 2)), np.ones(m))[0])
    assert bound == pytest.approx(4.5, rel=1e-14)


def test_seq_lengths_as_a_python_list_equals_an_array():
    p = gated_jax.init_gated_params(jax.random.key(0), 3, 4, dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3), dtype=jnp.float64)
    a = gated_jax.gated_scan(p, xs, seq_lengths=[1, 2])
    b = gated_jax.gated_scan(p, xs, seq_lengths=jnp.array([1, 2]))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # held state past the length: equal to the state at the last valid step
    held = np.broadcast_to(np.asarray(a[0, 0]), (4, 4))
    np.testing.assert_array_equal(np.asarray(a[0, 1:]), held)


def test_verify_rows_of_the_cell_pass():
    """The ``gated-jax verify`` rows of the recurrence (float64)."""
    from gated_jax.lab import cell as vcell

    with jax.enable_x64(True):
        rows = vcell.checks(seed=1)
    formulas = [row.formula for row in rows]
    assert len(set(formulas)) == len(formulas), "each row checks its own formula"
    # every weight of the cell has its BPTT row, and the scan, its VJP and remat their own
    for term in ("dl/dw_x", "dl/dw_c", "dl/dw_z", "dl/db_c", "dl/db_x", "dl/dx[t]", "dl/dz0"):
        assert any(f.startswith("gated_bptt " + term) for f in formulas), term
    for head in ("gated_scan:", "jax.vjp(gated_scan)", "jax.vjp(gated_scan, remat=True)"):
        assert any(f.startswith(head) for f in formulas), head
    assert {row.capability for row in rows} == {"gated cell"}
    for row in rows:
        assert row.ok and row.cases >= 1, row


# ---- the minGRU cell: no recurrent gate (w_z=None) -------------------------------------------


class MinGRUConfig(NamedTuple):
    batch: tuple[int, ...]
    T: int
    n: int
    m: int
    bias: bool
    reverse: bool
    lengths: bool
    remat: bool | int

    def __repr__(self) -> str:
        return (
            f"B{'x'.join(map(str, self.batch)) or '0'}_T{self.T}_n{self.n}_m{self.m}"
            + "_bias" * self.bias
            + "_rev" * self.reverse
            + "_len" * self.lengths
            + f"_remat{int(self.remat)}" * bool(self.remat)
        )


MINGRU_CONFIGS = [
    MinGRUConfig((), 6, 3, 4, False, False, False, False),
    MinGRUConfig((2,), 7, 2, 3, True, True, True, False),
    MinGRUConfig((2,), 70, 2, 3, True, False, True, True),  # two segments; remat blocks
]


def _mingru_plain(p, xs, z0, lengths, reverse):
    """minGRU written out: c = sigmoid(W_c x + b_c), z = c z + (1 - c)(W_x x + b_x)."""
    T = xs.shape[1]
    lengths = jnp.full(xs.shape[:1], T) if lengths is None else lengths

    def step(z, inp):
        x, t = inp
        c = jax.nn.sigmoid(x @ p.w_c.T + (0.0 if p.b_c is None else p.b_c[None]))
        zn = c * z + (1 - c) * (x @ p.w_x.T + (0.0 if p.b_x is None else p.b_x[None]))
        zn = jnp.where((t < lengths)[:, None], zn, z)
        return zn, zn

    _, zs = lax.scan(step, z0, (jnp.swapaxes(xs, 0, 1), jnp.arange(T)), reverse=reverse)
    return jnp.swapaxes(zs, 0, 1)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _mingru_scan_and_vjps(p, full, xs, z0, lengths, ct, *, cfg):
    """minGRU's scan and VJPs, the plain scan's, ``gated_bptt`` and the full cell with W_z = 0:
    one compiled program per config."""
    B = int(np.prod(cfg.batch))

    def ref(p, xs, z0):
        L = None if lengths is None else jnp.reshape(lengths, (B,))
        out = _mingru_plain(p, xs.reshape(B, cfg.T, cfg.n), z0.reshape(B, cfg.m), L, cfg.reverse)
        return out.reshape(cfg.batch + (cfg.T, cfg.m))

    kw = dict(seq_lengths=lengths, reverse=cfg.reverse)
    zs, vjp = jax.vjp(lambda p, x, z: gated_scan(p, x, z, remat=cfg.remat, **kw), p, xs, z0)
    want, vjp_ref = jax.vjp(ref, p, xs, z0)
    bptt = gated_bptt(p, xs, z0, ct, **kw)
    zero_wz = gated_scan(full._replace(w_z=jnp.zeros((cfg.m, cfg.m))), xs, z0, **kw)
    return zs, want, vjp(ct), vjp_ref(ct), bptt, zero_wz


@pytest.mark.parametrize("cfg", MINGRU_CONFIGS, ids=repr)
def test_mingru_scan_and_bptt_equal_autodiff_of_a_plain_scan(cfg):
    rng = np.random.default_rng(zlib.crc32(repr(cfg).encode()))
    full = rand_params(rng, cfg.n, cfg.m, cfg.bias)
    p = full._replace(w_z=None)
    xs = rng.normal(size=cfg.batch + (cfg.T, cfg.n))
    z0 = rng.normal(size=cfg.batch + (cfg.m,))
    lengths = rng.integers(0, cfg.T + 1, size=cfg.batch) if cfg.lengths else None
    ct = rng.normal(size=cfg.batch + (cfg.T, cfg.m))
    zs, want, g, g_ref, bptt, zero_wz = _mingru_scan_and_vjps(p, full, xs, z0, lengths, ct, cfg=cfg)
    assert rel(zs, want) < 1e-12
    assert g[0].w_z is None and rel(g, g_ref) < 1e-11
    assert rel(bptt, g_ref) < 1e-11
    # the gate sees no state: the full cell with W_z = 0 is the same recurrence
    assert rel(zero_wz, zs) < 1e-14


def test_mingru_step_and_jacobian_diagnostics():
    rng = np.random.default_rng(21)
    n, m, T = 3, 4, 6
    p = rand_params(rng, n, m, True)._replace(w_z=None)
    xs, z0 = rng.normal(size=(T, n)), rng.normal(size=m)
    # a NumPy trajectory: eager jnp indexing traj[t] would compile a program per t
    traj = np.concatenate(
        [z0[None], np.asarray(_mingru_plain(p, xs[None], z0[None], None, False)[0])]
    )
    for t in range(T):
        assert rel(gated_step(p, traj[t], xs[t]), traj[t + 1]) < 1e-14
        J = jax.jacfwd(lambda z, t=t: _mingru_plain(p, xs[t][None, None], z[None], None, False))(
            traj[t]
        )[0, 0]
        assert rel(step_jacobian(p, traj[t], xs[t]), J) < 1e-13
        np.testing.assert_array_equal(J - np.diag(np.diag(J)), 0.0)  # J = diag(c)
    Js = state_jacobians(p, xs, z0)
    c = np.stack([np.diag(np.asarray(j)) for j in Js])
    assert rel(jacobian_norm_bound(p, xs, z0), c.max(-1)) < 1e-14  # exact: ||diag c|| = max c
    prods = [np.prod(c[k:], axis=0) for k in range(T)] + [np.ones(m)]
    assert rel(gradient_flow(p, xs, z0), np.array([q.max() for q in prods])) < 1e-12
    assert rel(jacobian_product(p, xs, z0, start=1, end=5), np.diag(np.prod(c[1:5], 0))) < 1e-12
    q = init_gated_params(jax.random.key(0), n, m, recurrent_gate=False)
    assert q.w_z is None and gated_scan(q, jnp.ones((2, T, n))).shape == (2, T, m)


# ---- the package's structure --------------------------------------------------------------


def _cell_imports():
    """For each module of ``gated_jax.cell``: the cell modules it imports (module level), the
    names it imports from each, and every ``gated_jax`` import below module level."""
    import ast
    from pathlib import Path

    root = Path(gated_jax.cell.__file__).parent
    modules = {p.stem for p in root.glob("*.py")}
    deps: dict[str, set[str]] = {}
    names: dict[tuple[str, str], set[str]] = {}
    local: list[str] = []
    for mod in sorted(modules):
        tree = ast.parse((root / f"{mod}.py").read_text())
        top = {id(node) for node in tree.body}
        deps[mod] = set()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            source = node.module if isinstance(node, ast.ImportFrom) else None
            if not any(t.startswith("gated_jax") for t in [*targets, source or ""]):
                continue
            if id(node) not in top:
                local.append(f"{mod}: {ast.unparse(node)}")
            if source == "gated_jax.cell":  # from gated_jax.cell import step, ...
                for a in node.names:
                    if a.name in modules:
                        deps[mod].add(a.name)
            elif source and source.startswith("gated_jax.cell."):
                other = source.split(".")[2]
                deps[mod].add(other)
                names.setdefault((mod, other), set()).update(a.name for a in node.names)
    return deps, names, local


def test_cell_modules_import_one_way_without_a_cycle():
    """No import cycle in ``gated_jax.cell``, no function-local import of the package, private
    names shared only from ``_core``, and the diagnostics below the dispatch."""
    import graphlib

    deps, names, local = _cell_imports()
    assert not local, local
    inner = {m: d for m, d in deps.items() if m != "__init__"}
    order = list(graphlib.TopologicalSorter(inner).static_order())  # CycleError on a cycle
    assert set(order) == set(inner)
    private = {(m, o): sorted(n for n in ns if n.startswith("_")) for (m, o), ns in names.items()}
    assert all(not ns or o == "_core" for (m, o), ns in private.items()), private

    def below(mod):
        seen, todo = set(), [mod]
        while todo:
            for d in inner[todo.pop()] - seen:
                seen.add(d)
                todo.append(d)
        return seen

    assert below("_core") <= {"params", "step"}
    assert below("diagnostics") <= {"params", "step", "_core"}
    assert below("sequential") <= {"params", "step", "_core"}
    assert "scan" not in below("parallel") | below("sequential") | below("diagnostics")
    assert {"sequential", "parallel"} <= below("scan")


def test_gated_scan_has_one_backend_per_way_of_running():
    """One dispatch: each resolved method and option set picks one backend of the table."""
    from gated_jax.cell._core import ScanOptions
    from gated_jax.cell.scan import BACKENDS, Backend, select_backend

    assert set(BACKENDS) == set(Backend)
    opts = ScanOptions(reverse=False, unroll=1, remat=False, backward="closed_form")
    cases = [
        ("sequential", opts, True, Backend.SEQUENTIAL),
        ("sequential", opts._replace(remat=True), True, Backend.REMAT),
        ("sequential", opts._replace(remat=4), False, Backend.REMAT),
        ("sequential", opts._replace(return_sequence=False), True, Backend.FINAL_STATE),
        ("sequential", opts._replace(return_sequence=False, remat=4), True, Backend.FINAL_STATE),
        ("deer", opts, True, Backend.DEER),
        ("quasi_deer", opts, True, Backend.QUASI_DEER),
        ("deer", opts, False, Backend.MINGRU_SCAN),
        ("quasi_deer", opts, False, Backend.MINGRU_SCAN),
    ]
    for method, o, recurrent_gate, want in cases:
        assert select_backend(method, o, recurrent_gate) is want, (method, o, recurrent_gate)
    with pytest.raises(ValueError, match="`method`"):
        select_backend("auto", opts, True)  # resolved by resolve_method before the dispatch
