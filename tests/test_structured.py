"""Structured recurrent gates: a diagonal ``w_z`` ``(m,)`` and block-diagonal heads
``(H, h, h)`` across the core, proved in float64 against autodiff of a plain ``lax.scan``
written here (the structure expanded to a dense ``W_z`` inside the reference, so that autodiff
gives the gradient in the structure's own shape) and against ``numpy_loop``; exact structured
Newton (``method="deer"``) converging quadratically in a few iterations."""

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from gated_jax.cell import (
    GatedParams,
    gated_bptt,
    gated_deer,
    gated_scan,
    gated_step,
    gradient_flow,
    init_gated_params,
    jacobian_norm_bound,
    jacobian_product,
    lyapunov_exponent,
    state_jacobians,
    step_jacobian,
)
from gated_jax.testing import dense_params, max_rel_error, numpy_loop, plain_scan

STRUCTURES = {"diagonal": None, "heads": 3}  # m = 6: heads of h = 2
B, T, N, M = 3, 10, 2, 6


def expand(w_z):
    """The structure as a dense ``W_z``, differentiably (the reference's own expansion)."""
    if w_z.ndim == 1:
        return jnp.diag(w_z)
    return jax.scipy.linalg.block_diag(*w_z)


def reference(p, xs, z0, lengths, reverse=False):
    """A plain ``lax.scan`` of the step equations with the dense ``W_z``."""
    w_z = expand(p.w_z)

    def step(z, inp):
        x, t = inp
        c = jax.nn.sigmoid(x @ p.w_c.T + z @ w_z.T + p.b_c[None])
        new = c * z + (1 - c) * (x @ p.w_x.T + p.b_x[None])
        new = jnp.where((t < lengths)[:, None], new, z)
        return new, new

    _, zs = lax.scan(step, z0, (jnp.swapaxes(xs, 0, 1), jnp.arange(xs.shape[1])), reverse=reverse)
    return jnp.swapaxes(zs, 0, 1)


@functools.cache
def case(structure: str, wz_scale: float = 1.0):
    """Seeded random params (with biases), inputs, initial state, lengths, cotangent."""
    rng = np.random.default_rng(zlib.crc32(f"{structure}{wz_scale}".encode()))
    p = init_gated_params(
        jax.random.key(int(rng.integers(1 << 30))),
        N,
        M,
        use_bias=True,
        recurrent_gate=structure,
        heads=STRUCTURES[structure],
        dtype=jnp.float64,
        bias_init=jax.nn.initializers.normal(1.0),
    )
    p = p._replace(w_z=wz_scale * p.w_z)
    xs = jnp.asarray(rng.normal(size=(B, T, N)))
    z0 = jnp.asarray(rng.normal(size=(B, M)))
    lengths = jnp.asarray(rng.integers(0, T + 1, size=B))
    ct = jnp.asarray(rng.normal(size=(B, T, M)))
    return p, xs, z0, lengths, ct


# ---- init and validation ----------------------------------------------------------------------


def test_init_shapes_and_bad_structures_name_their_argument():
    key = jax.random.key(0)
    shape = lambda **kw: jax.eval_shape(lambda: init_gated_params(key, 3, 8, **kw))
    assert shape(recurrent_gate=True).w_z.shape == (8, 8)
    assert shape(recurrent_gate="dense").w_z.shape == (8, 8)
    assert shape(recurrent_gate=False).w_z is None
    d = init_gated_params(key, 3, 8, recurrent_gate="diagonal").w_z
    assert d.shape == (8,) and float(jnp.max(jnp.abs(d))) <= 1.0
    hds = init_gated_params(key, 3, 8, recurrent_gate="heads", heads=2, dtype=jnp.float64).w_z
    assert hds.shape == (2, 4, 4)  # each head orthogonal
    np.testing.assert_allclose(jnp.einsum("gij,gik->gjk", hds, hds), [np.eye(4)] * 2, atol=1e-12)
    bad = [
        (dict(recurrent_gate="block"), "`recurrent_gate`"),
        (dict(recurrent_gate="heads"), "`heads`"),
        (dict(recurrent_gate="heads", heads=3), "`heads`"),
        (dict(recurrent_gate="heads", heads=0), "`heads`"),
        (dict(recurrent_gate="diagonal", heads=2), "`heads`"),
    ]
    for kw, match in bad:
        with pytest.raises(ValueError, match=match):
            init_gated_params(key, 3, 8, **kw)
    w = jnp.ones((4, 3))
    for w_z in (jnp.ones((3,)), jnp.ones((2, 2, 3)), jnp.ones((3, 1, 1)), jnp.ones((4, 2))):
        with pytest.raises(ValueError, match=r"`params.w_z`.*\(H, h, h\) with H h = m = 4"):
            gated_scan(GatedParams(w, w, w_z), jnp.ones((5, 3)))


# ---- every core function against the dense references -----------------------------------------


@pytest.mark.parametrize("structure", STRUCTURES)
def test_every_core_function_equals_the_dense_cell(structure):
    p, xs, z0, lengths, ct = case(structure)
    pd = dense_params(p)
    assert pd.w_z.shape == (M, M)
    kw = dict(seq_lengths=lengths)
    # every structure: the default path, DEER, quasi-DEER; the options that only route the same
    # structured primitives (loop weights, adjoint, weight gradients) alternate between them
    extra = [dict(remat=4)] if structure == "diagonal" else [dict(backward="autodiff")]
    modes = [
        dict(),
        dict(method="deer", max_iters=T, reverse=True),
        dict(method="quasi_deer", max_iters=T),
        *extra,
    ]

    @jax.jit  # one compilation: every mode, its vjp, the final-state path, BPTT, the references
    def run(p, xs, z0, ct):
        out, refs, vjp_refs = {}, {}, {}
        for rev in (False, True):
            f = lambda p, x, z, rev=rev: reference(p, x, z, lengths, rev)
            ref, vjp_refs[rev] = jax.vjp(f, p, xs, z0)
            refs[rev] = (ref, vjp_refs[rev](ct))
        for i, e in enumerate(modes):
            f = lambda p, x, z, e=e: gated_scan(p, x, z, **kw, **e)
            zs, vjp = jax.vjp(f, p, xs, z0)
            out[str(i)] = (zs, vjp(ct), *refs[e.get("reverse", False)])
        # the final-state path: its gradient is the sequence's with a cotangent on the last step
        fin = lambda p, x, z: gated_scan(p, x, z, **kw, return_sequence=False)
        last, vjp_fin = jax.vjp(fin, p, xs, z0)
        ct_last = jnp.zeros_like(ct).at[:, -1].set(ct[:, 0])
        out["final"] = (last, vjp_fin(ct[:, 0]), refs[False][0][:, -1], vjp_refs[False](ct_last))
        out["bptt"] = gated_bptt(p, xs, z0, ct, **kw)
        return out

    out = run(p, xs, z0, ct)
    for i, e in enumerate(modes):
        zs, g, ref, g_ref = out[str(i)]
        assert g[0].w_z.shape == p.w_z.shape, e
        assert max_rel_error(zs, ref) < 1e-12, e
        assert max_rel_error(g, g_ref) < 1e-10, e
    last, g_last, last_ref, g_last_ref = out["final"]
    assert max_rel_error(last, last_ref) < 1e-12
    assert max_rel_error(g_last, g_last_ref) < 1e-10
    assert max_rel_error(out["bptt"], out["0"][3]) < 1e-10
    expect = numpy_loop(p, xs, z0, seq_lengths=np.asarray(lengths))
    assert max_rel_error(out["0"][0], expect) < 1e-12
    assert max_rel_error(numpy_loop(pd, xs, z0, seq_lengths=np.asarray(lengths)), expect) == 0
    assert max_rel_error(plain_scan(p, xs[:1, :3], z0[:1]), expect[:1, :3]) < 1e-12


@pytest.mark.parametrize("structure", STRUCTURES)
def test_step_jacobians_and_diagnostics_equal_the_dense_cell(structure):
    p, xs, z0, _, _ = case(structure)
    pd = dense_params(p)

    @jax.jit
    def run(p, pd, xs, z0):
        x0 = xs[:, 0]
        auto = jax.vmap(jax.jacfwd(lambda z, x: gated_step(pd, z, x)))(z0, x0)
        diag = lambda q: (
            gated_step(q, z0, x0),
            step_jacobian(q, z0, x0),
            state_jacobians(q, xs, z0),
            jacobian_product(q, xs, z0, start=2, end=7),
            gradient_flow(q, xs, z0),
            jacobian_norm_bound(q, xs, z0),
            lyapunov_exponent(q, xs, z0),
        )
        return diag(p), diag(pd), auto

    got, dense, auto = run(p, pd, xs, z0)
    assert max_rel_error(got[1], auto) < 1e-12  # the Jacobian built from the structure
    for a, b in zip(got, dense, strict=True):
        assert max_rel_error(a, b) < 1e-10
    # the closed-form bound with the structure's norm holds, and is the formula
    Js = got[2]
    assert np.all(np.linalg.norm(np.asarray(Js), 2, axis=(-2, -1)) <= np.asarray(got[5]) + 1e-12)
    norm = float(jnp.max(jnp.abs(p.w_z))) if structure == "diagonal" else None
    if norm is None:
        norm = max(float(np.linalg.norm(np.asarray(w), 2)) for w in p.w_z)
    assert abs(norm - float(np.linalg.norm(np.asarray(pd.w_z), 2))) < 1e-12


# ---- exact structured Newton ----------------------------------------------------------------


@pytest.mark.parametrize("structure", STRUCTURES)
def test_structured_newton_converges_quadratically_in_few_iterations(structure):
    """Contractive cell: exact Newton with the structured Jacobian needs a handful of iterations,
    its residuals fall quadratically, and it agrees with the sequential loop."""
    p, xs, z0, _, _ = case(structure, 0.5)
    ref = numpy_loop(p, xs, z0)
    zs, info = gated_deer(p, xs, z0)
    _, quasi = gated_deer(p, xs, z0, jacobian="diagonal")
    k = int(info.iterations)
    assert bool(info.converged) and 1 < k <= 6
    assert max_rel_error(zs, ref) < 1e-12
    r = np.asarray(info.residuals)[: k + 1]
    # quadratic: once small, each residual is below a constant times the square of the last
    assert np.all(r[2:] <= 10 * r[1:-1] ** 2 + 1e-14), r
    if structure == "diagonal":  # quasi-DEER's diagonal IS the exact Jacobian
        assert int(quasi.iterations) == k
        assert np.array_equal(np.asarray(quasi.residuals), np.asarray(info.residuals), True)
    else:  # the per-head blocks beat their diagonals
        assert int(quasi.iterations) > k


# ---- the Flax cells -------------------------------------------------------------------------


@pytest.mark.parametrize("structure", STRUCTURES)
def test_flax_cells_expose_the_structure_and_round_trip(structure):
    from flax import nnx

    from gated_jax import nn as gnn
    from gated_jax import nnx as gnnx

    H = STRUCTURES[structure]
    p, xs, z0, _, _ = case(structure)
    shape = p.w_z.shape
    opts = dict(recurrent_gate=structure, heads=H, use_bias=True, param_dtype=jnp.float64)
    layer = gnn.GatedRNN(gnn.GatedCell(M, **opts))
    v = layer.init(jax.random.key(0), xs)
    assert v["params"]["cell"]["hc"]["kernel"].shape == shape
    tree = gnn.from_gated_params(p)
    assert tree["hc"]["kernel"].shape == shape
    # the kernel is W_z transposed in its structure: a vector as it is, each head transposed
    np.testing.assert_array_equal(dense_params(gnn.to_gated_params(tree)).w_z, dense_params(p).w_z)
    want = numpy_loop(p, xs, z0)
    got = layer.apply({"params": {"cell": tree}}, xs, initial_carry=z0)
    assert max_rel_error(got, want) < 1e-12
    cell = gnnx.GatedCell(N, M, **opts, rngs=nnx.Rngs(0))
    assert cell.hc.kernel.shape == shape
    gnnx.load_gated_params(cell, p)
    assert max_rel_error(gnnx.to_gated_params(cell), p) == 0
    assert max_rel_error(gnnx.GatedRNN(cell)(xs, initial_carry=z0), want) < 1e-12
    other = "heads" if structure == "diagonal" else "diagonal"
    with pytest.raises(ValueError, match="`recurrent_gate`"):
        cell_other = gnn.GatedCell(M, recurrent_gate=other, heads=STRUCTURES[other])
        cell_other.apply({"params": tree}, z0, xs[:, 0])
