"""Gradient-flow experiments: sweeps, baselines, bounds and the counterexample (float64)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gated_jax.cell import GatedParams, gated_scan, gradient_flow
from gated_jax.experiments import (
    COUNTEREXAMPLE_RATE,
    FAMILIES,
    a_priori_step_bound,
    check_bounds,
    counterexample,
    counterexample_check,
    flow_sweep,
    growth_rate,
    random_bases,
    state_box,
    state_flow,
    step_norm_bound,
)
from gated_jax.experiments.baselines import gated_plain_step


def _random_gated(rng, n, m, *, rho, bias=True):
    wz = rng.standard_normal((m, m))
    wz *= rho / np.linalg.norm(wz, 2)
    p = GatedParams(
        jnp.asarray(rng.standard_normal((m, n)) / np.sqrt(n)),
        jnp.asarray(rng.standard_normal((m, n)) / np.sqrt(n)),
        jnp.asarray(wz),
        jnp.asarray(2 * rng.standard_normal(m)) if bias else None,
        jnp.asarray(2 * rng.standard_normal(m)) if bias else None,
    )
    return p


def _plain_final(p, xs, z):
    """The recurrence as a Python loop over the cell's formula."""
    for t in range(xs.shape[0]):
        z = gated_plain_step(p, z, xs[t])
    return z


# ---- analysis: the bounds and the counterexample -------------------------------------------


@pytest.mark.parametrize("length", [3, 40])
def test_counterexample_is_exact_and_confirmed_by_jax_grad(length):
    r = counterexample_check(length)
    half, odd = divmod(length, 2)
    expected = (-2.0) ** half * (-1.0 if odd else 1.0)  # J alternates -1, 2
    assert r["jax_grad"] == expected  # exact: every number in the orbit is dyadic
    assert r["gradient_flow"] == pytest.approx(abs(expected), rel=1e-12)
    assert r["state_min"] >= -1.0 and r["state_max"] <= 1.0
    if length >= 40:
        assert abs(r["grad_w_z"]) > 2.0 ** (half - 1)  # parameter gradients explode too
        assert r["rate"] == pytest.approx(COUNTEREXAMPLE_RATE, rel=0.05)


def test_counterexample_against_jacrev_of_scan():
    with jax.enable_x64(True):
        params, xs, z0 = counterexample(30)
        jac = jax.jit(jax.jacrev(lambda z: gated_scan(params, xs, z)[-1]))(z0)
    assert float(jac[0, 0]) == (-2.0) ** 15  # 15 (-1, 2) pairs of Jacobians, exact


def test_counterexample_rejects_bad_length():
    with pytest.raises(ValueError, match="length"):
        counterexample(0)


def test_forward_box_and_step_bounds_on_random_configs():
    r = check_bounds(48, length=12, n=3, m=5, seed=3)
    assert r["box_violation"] == 0.0
    assert r["bound_ratio"] <= 1 + 1e-12
    assert r["a_priori_ratio"] <= 1 + 1e-12
    # single steps do amplify for large ||W_z|| (the bound is not vacuous in either direction)
    assert 0 < r["frac_norm_above_1"] <= r["frac_bound_above_1"] <= 1


def test_step_norm_bound_against_jacrev_on_random_configs():
    rng = np.random.default_rng(7)
    n, m, c = 3, 6, 40
    rho = np.exp(rng.uniform(np.log(0.1), np.log(20.0), c))
    ps = [_random_gated(rng, n, m, rho=r) for r in rho]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *ps)
    z = jnp.asarray(3 * rng.standard_normal((c, m)))
    x = jnp.asarray(3 * rng.standard_normal((c, n)))

    def one(p, z, x):
        jac = jax.jacrev(gated_plain_step, argnums=1)(p, z, x)
        return jnp.linalg.matrix_norm(jac, ord=2), step_norm_bound(p, z, x)

    norms, bounds = jax.jit(jax.vmap(one))(stacked, z, x)
    assert np.all(np.asarray(norms) <= np.asarray(bounds) * (1 + 1e-12))
    assert np.any(np.asarray(norms) > 1)  # the one-step norm can exceed 1
    # the bound is the documented formula, in NumPy: max c + max|(z - u) c (1 - c)| ||W_z||_2
    for i, p in enumerate(ps):
        w_x, w_c, w_z, b_c, b_x = (np.asarray(a) for a in p)
        zi, xi = np.asarray(z[i]), np.asarray(x[i])
        cg = 1 / (1 + np.exp(-(w_c @ xi + w_z @ zi + b_c)))
        want = cg.max() + np.abs((zi - w_x @ xi - b_x) * cg * (1 - cg)).max() * rho[i]
        assert float(bounds[i]) == pytest.approx(want, rel=1e-12)


def test_state_box_contains_every_state_and_a_priori_bound_dominates():
    rng = np.random.default_rng(11)
    for _ in range(3):
        p = _random_gated(rng, 2, 4, rho=8.0)
        xs = jnp.asarray(2 * rng.standard_normal((25, 2)))
        z0 = jnp.asarray(rng.standard_normal(4))
        zs = np.asarray(gated_scan(p, xs, z0))
        lo, hi = (np.asarray(a) for a in state_box(p, xs, z0))
        assert np.all(zs >= lo - 1e-15) and np.all(zs <= hi + 1e-15)
        # the box is the range of z0 and the candidates u = W_x x + b_x, computed here
        u = np.asarray(xs) @ np.asarray(p.w_x).T + np.asarray(p.b_x)
        pts = np.concatenate([np.asarray(z0)[None], u])
        np.testing.assert_array_equal(lo, pts.min(0))
        np.testing.assert_array_equal(hi, pts.max(0))
        traj = np.concatenate([np.asarray(z0)[None], zs])
        prior = float(a_priori_step_bound(p, xs, z0))
        want = 1 + (hi - lo).max() * np.linalg.norm(np.asarray(p.w_z), 2) / 4
        assert prior == pytest.approx(want, rel=1e-12)
        # every step's Jacobian in one vmapped call (not 25 eager jacrev calls)
        jac_fn = jax.vmap(jax.jacrev(gated_plain_step, argnums=1), in_axes=(None, 0, 0))
        jacs = np.asarray(jac_fn(p, jnp.asarray(traj[:-1]), xs))
        assert jacs.shape == (25, 4, 4)
        norms = np.linalg.norm(jacs, 2, axis=(-2, -1))
        assert np.all(norms <= prior * (1 + 1e-12))


# ---- the sweep machinery --------------------------------------------------------------------


def test_gated_flow_equals_autodiff_reference_on_random_configs():
    """cell.gradient_flow (closed-form J) == norms of jacrev of a plain Python loop."""
    rng = np.random.default_rng(0)
    for rho, scale in [(0.5, 1.0), (4.0, 2.0), (12.0, 0.5)]:
        p = _random_gated(rng, 3, 4, rho=rho)
        xs = jnp.asarray(scale * rng.standard_normal((9, 3)))
        z0 = jnp.asarray(rng.standard_normal(4))
        got = np.asarray(gradient_flow(p, xs, z0))
        ref = np.asarray(state_flow(gated_plain_step, p, xs, z0))
        np.testing.assert_allclose(got, ref, rtol=1e-10)
        for k in (0, 4):
            jac = jax.jit(jax.jacrev(lambda z, k=k, p=p, xs=xs: _plain_final(p, xs[k:], z)))(
                jnp.asarray(gated_scan(p, xs, z0)[k - 1]) if k else z0
            )
            assert np.linalg.norm(np.asarray(jac), 2) == pytest.approx(got[k], rel=1e-10)


@pytest.mark.parametrize("cell", ["tanh", "gru", "lstm"])
def test_baseline_flow_equals_jacrev_of_unrolled_cell(cell):
    fam = FAMILIES[cell]
    n, m, T = 3, 4, 7
    base = {k: jnp.asarray(v[0]) for k, v in random_bases([5], n=n, m=m, length=T).items()}
    params = fam.init(base, jnp.float64(3.0), jnp.float64(0.7))
    xs = 1.5 * base["xs"]
    z0 = jnp.asarray(np.random.default_rng(2).standard_normal(fam.state_size(m)))
    norms = np.asarray(fam.flow(params, xs, z0))

    def unrolled(z, start):
        for t in range(start, T):
            z = fam.step(params, z, xs[t])
        return z

    assert norms[T] == pytest.approx(1.0)
    jac0 = jax.jit(jax.jacrev(lambda z: unrolled(z, 0)))(z0)
    assert np.linalg.norm(np.asarray(jac0), 2) == pytest.approx(norms[0], rel=1e-10)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_flax_parameter_trees_match_flax_init_and_cell(kind):
    n, m = 3, 4
    fam = FAMILIES[kind]
    base = {k: jnp.asarray(v[0]) for k, v in random_bases([1], n=n, m=m, length=2).items()}
    mine = fam.init(base, jnp.float64(2.0), jnp.float64(1.5))
    cls = nn.GRUCell if kind == "gru" else nn.LSTMCell
    cell = cls(features=m, param_dtype=jnp.float64)
    h = jnp.zeros(m)
    carry = h if kind == "gru" else (h, h)
    ref = jax.eval_shape(cell.init, jax.random.key(0), carry, jnp.zeros(n))["params"]
    assert jax.tree.structure(mine) == jax.tree.structure(ref)
    assert jax.tree.map(jnp.shape, mine) == jax.tree.map(lambda a: a.shape, ref)
    # recurrent kernels scaled to the spectral norm asked for; the keep gate carries the bias
    rec = ("hr", "hz", "hn") if kind == "gru" else ("hi", "hf", "hg", "ho")
    for name in rec:
        assert np.linalg.norm(np.asarray(mine[name]["kernel"]), 2) == pytest.approx(2.0)
    gate = mine["iz"] if kind == "gru" else mine["hf"]
    np.testing.assert_array_equal(np.asarray(gate["bias"]), np.full(m, 1.5))
    # the flat step is Flax's own cell
    z = jnp.asarray(np.random.default_rng(0).standard_normal(fam.state_size(m)))
    x = jnp.ones(n)
    if kind == "gru":
        want, _ = cell.apply({"params": mine}, z, x)
    else:
        (c, hh), _ = cell.apply({"params": mine}, (z[:m], z[m:]), x)
        want = jnp.concatenate([c, hh])
    np.testing.assert_allclose(np.asarray(fam.step(mine, z, x)), np.asarray(want), rtol=1e-14)


def test_flow_sweep_grid_indexing_matches_direct_computation():
    sw = flow_sweep(
        "gated",
        wz_norms=(0.5, 6.0),
        gate_biases=(-1.0, 1.0),
        input_scales=(0.5, 2.0),
        lengths=(5, 9),
        seeds=(3, 8),
        n=3,
        m=4,
        progress=False,
    )
    assert sw.norms[9].shape == (2, 2, 2, 2, 10) and sw.norms[5].shape == (2, 2, 2, 2, 6)
    np.testing.assert_allclose(sw.norms[9][..., 0], 1.0, rtol=1e-12)  # lag 0: identity
    bases = random_bases([3, 8], n=3, m=4, length=9)
    for i, j, k, r in [(1, 0, 1, 1), (0, 1, 0, 0), (1, 1, 1, 0)]:
        base = {key: jnp.asarray(v[r]) for key, v in bases.items()}
        p = FAMILIES["gated"].init(base, sw.wz_norms[i], sw.gate_biases[j])
        xs = sw.input_scales[k] * base["xs"]
        want = np.asarray(gradient_flow(p, xs, jnp.zeros(4)))[::-1]
        np.testing.assert_allclose(sw.norms[9][i, j, k, r], want, rtol=1e-12)
        # a shorter length sees a prefix of the same inputs
        want5 = np.asarray(gradient_flow(p, xs[:5], jnp.zeros(4)))[::-1]
        np.testing.assert_allclose(sw.norms[5][i, j, k, r], want5, rtol=1e-12)
    np.testing.assert_allclose(sw.growth_rate(9), np.log(sw.norms[9][..., 9]) / 9)
    assert growth_rate(np.array([1.0, np.e**3])) == pytest.approx(3.0)
    with pytest.raises(
        ValueError, match=r"`length` \(=7\) must be a swept length, one of \(5, 9\)"
    ):
        sw.growth_rate(7)


def test_flow_sweep_is_chunk_invariant_and_float32_close(tmp_path):
    kw = dict(wz_norms=(1.0, 3.0, 9.0), input_scales=(1.0,), gate_biases=(0.0,), lengths=(6,))
    kw.update(seeds=(0, 1), n=2, m=3, progress=False)
    a = flow_sweep("tanh", chunk_size=4, **kw)
    b = flow_sweep("tanh", chunk_size=256, **kw)
    np.testing.assert_allclose(a.norms[6], b.norms[6], rtol=1e-13)
    c = flow_sweep("tanh", dtype=jnp.float32, **kw)
    np.testing.assert_allclose(c.norms[6], a.norms[6], rtol=1e-3)
    assert c.norms[6].dtype == np.float32
    # data files
    a.save_npz(tmp_path / "f.npz")
    a.save_csv(tmp_path / "f.csv")
    z = np.load(tmp_path / "f.npz")
    np.testing.assert_array_equal(z["norms_T6"], a.norms[6])
    lines = (tmp_path / "f.csv").read_text().splitlines()
    assert lines[0] == "cell,length,wz_norm,gate_bias,input_scale,seed,lag,norm"
    assert len(lines) == 1 + 3 * 2 * 7
    row = lines[1 + 7 * 2 + 3].split(",")  # wz index 1, seed 0, lag 3
    assert float(row[2]) == 3.0 and int(row[5]) == 0 and int(row[6]) == 3
    assert float(row[7]) == a.norms[6][1, 0, 0, 0, 3]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(cell="rnn"), "cell"),
        (dict(wz_norms=()), "wz_norms"),
        (dict(wz_norms=(-1.0,)), "wz_norms"),
        (dict(gate_biases=(np.nan,)), "gate_biases"),
        (dict(input_scales=(-0.5,)), "input_scales"),
        (dict(lengths=(0,)), "lengths"),
        (dict(lengths=(2.5,)), "lengths"),
        (dict(seeds=(-1,)), "seeds"),
        (dict(n=0), "`n`"),
        (dict(m=True), "`m`"),
        (dict(dtype=jnp.int32), "dtype"),
        (dict(chunk_size=0), "chunk_size"),
    ],
)
def test_flow_sweep_rejects_bad_arguments(kwargs, match):
    kwargs = dict(kwargs)
    cell = kwargs.pop("cell", "gated")
    with pytest.raises(ValueError, match=match):
        flow_sweep(cell, lengths=kwargs.pop("lengths", (3,)), progress=False, **kwargs)
