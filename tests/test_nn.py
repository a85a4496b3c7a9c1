"""Linen modules: GatedCell in Flax's machinery, and GatedRNN against nn.RNN(GatedCell).

In the style of Flax's ``tests/linen/linen_recurrent_test.py``: step the cell by hand and
compare with ``nn.RNN``, with and without ``seq_lengths``, ``reverse``, ``keep_order``, several
batch dims; plus parameter shapes, dtypes, gradients, transformations and errors.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from gated_jax.cell import GatedParams, gated_scan, gated_step, init_gated_params
from gated_jax.nn import GatedCell, GatedRNN, from_gated_params, to_gated_params
from gated_jax.testing import max_rel_error

F64 = jnp.float64


def _ref_step(tree, z, x):
    """The cell written out from the parameter table, independent of the package (no ``'hc'``:
    the minGRU cell, whose gate reads the input alone)."""
    ic, ix = tree["ic"], tree["ix"]
    a = x @ ic["kernel"] + (z @ tree["hc"]["kernel"] if "hc" in tree else 0.0)
    u = x @ ix["kernel"]
    if "bias" in ic:
        a = a + jnp.broadcast_to(ic["bias"], a.shape)  # explicit: rank promotion raises
        u = u + jnp.broadcast_to(ix["bias"], u.shape)
    c = 1.0 / (1.0 + jnp.exp(-a))
    return c * z + (1.0 - c) * u


def _ref_sequence(tree, xs, z0, lengths=None, reverse=False):
    """Per-sequence python loop over ``xs`` ``(B, T, n)``: outputs at valid steps, final carry."""
    xs, z0 = np.asarray(xs), np.asarray(z0)
    B, T, _ = xs.shape
    outs, carries = [], []
    for b in range(B):
        L = T if lengths is None else int(lengths[b])
        seq = xs[b, :L][::-1] if reverse else xs[b, :L]
        z, ys = z0[b], []
        for t in range(L):
            z = _ref_step(tree, z, seq[t])
            ys.append(z)
        outs.append(ys)
        carries.append(z)
    return outs, np.stack(carries)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _tree(n, m, use_bias, seed, dtype=np.float64):
    """A random cell parameter tree built with numpy (no JAX compilation), biases nonzero."""
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return (0.7 * rng.normal(size=shape)).astype(dtype)

    tree = {"ic": {"kernel": normal(n, m)}, "hc": {"kernel": normal(m, m)}}
    tree["ix"] = {"kernel": normal(n, m)}
    if use_bias:
        tree["ic"]["bias"] = normal(m)
        tree["ix"]["bias"] = normal(m)
    return tree


def _vars(n, m, use_bias, seed, dtype=np.float64):
    """Variables of ``nn.RNN(GatedCell)`` / ``GatedRNN``: the cell tree under ``'cell'``."""
    return {"params": {"cell": _tree(n, m, use_bias, seed, dtype)}}


# ---------------------------------------------------------------------------------------------
# the cell


@pytest.mark.parametrize("use_bias", [False, True])
def test_cell_parameter_shapes_and_carry(use_bias):
    cell = GatedCell(features=6, use_bias=use_bias, carry_init=nn.initializers.ones_init())
    x = jnp.ones((2, 3, 5), jnp.float32)
    carry = cell.initialize_carry(jax.random.key(0), x.shape)
    assert carry.shape == (2, 3, 6) and carry.dtype == jnp.float32
    np.testing.assert_array_equal(carry, 1.0)
    assert cell.num_feature_axes == 1
    variables = jax.eval_shape(cell.init, jax.random.key(1), carry, x)
    shapes = jax.tree.map(lambda a: a.shape, variables["params"])
    expected = {"ic": {"kernel": (5, 6)}, "hc": {"kernel": (6, 6)}, "ix": {"kernel": (5, 6)}}
    if use_bias:
        expected["ic"]["bias"] = (6,)
        expected["ix"]["bias"] = (6,)
    assert shapes == expected
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(variables))
    new_carry, y = jax.eval_shape(cell.apply, variables, carry, x)
    assert new_carry.shape == y.shape == (2, 3, 6)


def test_default_initialisers():
    n = m = 256
    cell = GatedCell(m, use_bias=True)
    init = jax.jit(cell.init)
    p = init(jax.random.key(0), jnp.zeros((m,), jnp.float32), jnp.zeros((n,), jnp.float32))
    p = jax.tree.map(np.asarray, p["params"])
    # LeCun normal (truncated, rescaled to variance 1/fan_in): fan-in is the input width
    for name in ("ic", "ix"):
        var = float(np.var(p[name]["kernel"]))
        assert abs(var * n - 1.0) < 0.05, (name, var * n)
        np.testing.assert_array_equal(p[name]["bias"], 0.0)
    k = p["hc"]["kernel"].astype(np.float64)
    np.testing.assert_allclose(k.T @ k, np.eye(m), atol=1e-5)  # orthogonal
    assert not np.allclose(p["ic"]["kernel"], p["ix"]["kernel"])  # independent draws


def test_cell_step_equals_formula_and_gated_step():
    rng = np.random.default_rng(0)
    for trial in range(4):
        n, m = (int(v) for v in rng.integers(1, 7, size=2))
        batch = tuple(int(v) for v in rng.integers(1, 4, size=trial % 3))
        use_bias = bool(trial % 2)
        cell = GatedCell(m, use_bias=use_bias, param_dtype=F64)
        x = jnp.asarray(rng.normal(size=batch + (n,)))
        z = jnp.asarray(rng.normal(size=batch + (m,)))
        v = {"params": _tree(n, m, use_bias, trial)}

        @jax.jit
        def run(v, z, x, cell=cell):
            new, y = cell.apply(v, z, x)
            return new, y, _ref_step(v["params"], z, x), gated_step(to_gated_params(v), z, x)

        new, y, ref, core = run(v, z, x)
        assert _rel(new, ref) < 1e-13
        assert _rel(new, core) < 1e-13
        np.testing.assert_array_equal(new, y)


def test_parameter_map_round_trip():
    rng = np.random.default_rng(3)
    gp = GatedParams(*(jnp.asarray(rng.normal(size=s)) for s in [(3, 4), (3, 4), (3, 3), 3, 3]))
    tree = from_gated_params(gp)
    assert tree["ic"]["kernel"].shape == (4, 3) and tree["hc"]["kernel"].shape == (3, 3)
    back = to_gated_params({"params": {"cell": tree}})
    for a, b in zip(back, gp, strict=True):
        np.testing.assert_array_equal(a, b)
    # the fast layer with converted weights computes gated_scan with the original ones, and the
    # kernels' gradients are the transposes of the GatedParams gradients ((n, m) vs (m, n))
    xs = jax.random.normal(jax.random.key(4), (2, 9, 4), F64)
    layer = GatedRNN(3, use_bias=True, param_dtype=F64)

    def losses(tree, gp):
        return (
            jnp.sum(jnp.sin(layer.apply({"params": {"cell": tree}}, xs))),
            jnp.sum(jnp.sin(gated_scan(gp, xs))),
        )

    (y_tree, y_gp), (g_tree, g_gp) = jax.jit(
        lambda tree, gp: (
            losses(tree, gp),
            (
                jax.grad(lambda t: losses(t, gp)[0])(tree),
                jax.grad(lambda p: losses(tree, p)[1])(gp),
            ),
        )
    )(tree, gp)
    assert _rel(y_tree, y_gp) < 1e-14
    assert g_tree["ix"]["kernel"].shape == (4, 3) and g_gp.w_x.shape == (3, 4)
    assert _rel(to_gated_params(g_tree).w_x, g_gp.w_x) < 1e-13
    for a, b in zip(to_gated_params(g_tree), g_gp, strict=True):
        assert _rel(a, b) < 1e-13
    no_bias = to_gated_params(from_gated_params(gp._replace(b_c=None, b_x=None)))
    assert no_bias.b_c is None and no_bias.b_x is None


# ---------------------------------------------------------------------------------------------
# the cell inside Flax's machinery (step by hand == nn.RNN)

B, T, N, M = 3, 6, 4, 5  # shared small sizes: repeated shapes reuse compiled primitives


@pytest.mark.parametrize("reverse,keep_order", [(False, False), (True, False), (True, True)])
def test_step_by_hand_equals_nn_rnn(reverse, keep_order):
    xs = jax.random.normal(jax.random.key(0), (B, T, N), F64)
    cell = GatedCell(M, use_bias=True, param_dtype=F64)
    kw = dict(reverse=reverse, keep_order=keep_order, return_carry=True)
    v = _vars(N, M, True, 2)
    carry, ys = jax.jit(nn.RNN(cell, **kw).apply)(v, xs)
    z = cell.initialize_carry(jax.random.key(0), (B, N))
    step = jax.jit(cell.apply)
    steps = []
    for t in range(T - 1, -1, -1) if reverse else range(T):
        z, y = step({"params": v["params"]["cell"]}, z, xs[:, t])
        steps.append(y)
    expected = jnp.stack(steps, axis=1)
    if reverse and keep_order:
        expected = expected[:, ::-1]
    assert _rel(ys, expected) < 1e-13
    assert _rel(carry, z) < 1e-13
    fast_carry, fast_ys = jax.jit(GatedRNN(M, use_bias=True, param_dtype=F64, **kw).apply)(v, xs)
    assert _rel(fast_ys, expected) < 1e-13
    assert _rel(fast_carry, z) < 1e-13


@pytest.mark.parametrize("reverse,keep_order", [(False, False), (True, True)])
def test_seq_lengths_against_python_loop(reverse, keep_order):
    Bl = 4
    xs = jax.random.normal(jax.random.key(5), (Bl, T, N), F64)
    lengths = jnp.array([T, 4, 1, 0])
    v = _vars(N, M, True, 6)
    z0 = jnp.asarray(np.random.default_rng(1).normal(size=(Bl, M)))
    ref_outs, ref_carry = _ref_sequence(v["params"]["cell"], xs, z0, lengths, reverse=reverse)
    kw = dict(reverse=reverse, keep_order=keep_order, return_carry=True)
    fast = GatedRNN(M, use_bias=True, param_dtype=F64, **kw)
    slow = nn.RNN(GatedCell(M, use_bias=True, param_dtype=F64), **kw)
    fast_carry, fast_ys = jax.jit(fast.apply)(v, xs, initial_carry=z0, seq_lengths=lengths)
    slow_carry, slow_ys = jax.jit(slow.apply)(v, xs, initial_carry=z0, seq_lengths=lengths)
    for b in range(Bl):
        L = int(lengths[b])
        held = ref_carry[b]
        if L:
            ref = np.asarray(ref_outs[b])
            ref = ref[::-1] if reverse and keep_order else ref
            assert _rel(fast_ys[b, :L], ref) < 1e-13
            assert _rel(slow_ys[b, :L], ref) < 1e-13
            assert _rel(slow_carry[b], held) < 1e-13
        # padded steps of the fast layer hold the last valid state (nn.RNN's are not masked)
        np.testing.assert_allclose(fast_ys[b, L:], np.broadcast_to(held, (T - L, M)), rtol=1e-13)
    assert _rel(fast_carry, ref_carry) < 1e-13
    # a length-0 sequence returns its initial carry
    np.testing.assert_array_equal(fast_carry[3], z0[3])


def test_nn_scan_and_bidirectional():
    xs = jax.random.normal(jax.random.key(0), (B, T, N), F64)
    v = _vars(N, M, False, 1)
    ys = jax.jit(nn.RNN(GatedCell(M, param_dtype=F64)).apply)(v, xs)
    scan_cell = nn.scan(
        GatedCell,
        variable_broadcast="params",
        split_rngs={"params": False},
        in_axes=1,
        out_axes=1,
    )(M, param_dtype=F64)
    carry, ys_scan = jax.jit(scan_cell.apply)(
        {"params": v["params"]["cell"]}, jnp.zeros((B, M), F64), xs
    )
    assert _rel(ys_scan, ys) < 1e-13
    assert _rel(carry, ys[:, -1]) < 1e-13

    slow = nn.Bidirectional(
        nn.RNN(GatedCell(M, use_bias=True, param_dtype=F64)),
        nn.RNN(GatedCell(M, use_bias=True, param_dtype=F64)),
    )
    fast = nn.Bidirectional(
        GatedRNN(M, use_bias=True, param_dtype=F64), GatedRNN(M, use_bias=True, param_dtype=F64)
    )
    vb = {
        "params": {
            "forward_rnn": _vars(N, M, True, 3)["params"],
            "backward_rnn": _vars(N, M, True, 4)["params"],
        }
    }
    for module in (slow, fast):
        shapes = jax.eval_shape(module.init, jax.random.key(2), xs)
        assert jax.tree.structure(shapes) == jax.tree.structure(vb)
    lengths = jnp.array([T, 3, 1])
    out_s = jax.jit(slow.apply)(vb, xs, seq_lengths=lengths)
    out_f = jax.jit(fast.apply)(vb, xs, seq_lengths=lengths)
    assert out_f.shape == (B, T, 2 * M)
    for b, L in enumerate(lengths.tolist()):
        assert _rel(out_f[b, :L], out_s[b, :L]) < 1e-13


# ---------------------------------------------------------------------------------------------
# GatedRNN == nn.RNN(GatedCell): same tree, same outputs, same gradients


def test_parameter_tree_identical_and_same_init():
    xs = jnp.ones((2, 4, 3), jnp.float32)
    for use_bias in (False, True):
        shapes = [
            jax.eval_shape(module.init, jax.random.key(7), xs)
            for module in (nn.RNN(GatedCell(5, use_bias=use_bias)), GatedRNN(5, use_bias=use_bias))
        ]
        assert jax.tree.structure(shapes[0]) == jax.tree.structure(shapes[1])
        assert jax.tree.map(jnp.shape, shapes[0]) == jax.tree.map(jnp.shape, shapes[1])
    # parameter RNGs follow module paths, so the same key gives the same weights
    v_slow, v_fast = jax.jit(
        lambda key: (
            nn.RNN(GatedCell(5, use_bias=True)).init(key, xs),
            GatedRNN(5, use_bias=True).init(key, xs),
        )
    )(jax.random.key(7))
    for a, b in zip(jax.tree.leaves(v_slow), jax.tree.leaves(v_fast), strict=True):
        np.testing.assert_array_equal(a, b)


CONFIGS = list(
    itertools.product(
        [(), (3,), (2, 3)],  # batch dims
        [False, True],  # time_major
        [(False, False), (True, False), (True, True)],  # reverse, keep_order
        [False, True],  # seq_lengths
    )
)


def test_gated_rnn_equals_nn_rnn_random_configs():
    """Random option combinations, float64: outputs at valid steps and carries agree."""
    rng = np.random.default_rng(0)
    picks = rng.choice(len(CONFIGS), size=8, replace=False)
    for trial, i in enumerate(picks):
        batch, time_major, (reverse, keep_order), use_lengths = CONFIGS[int(i)]
        use_lengths = use_lengths and bool(batch)  # nn.RNN needs a batch axis for seq_lengths
        T, n, m = int(rng.integers(1, 7)), int(rng.integers(1, 5)), int(rng.integers(1, 5))
        use_bias = bool(rng.integers(2))
        x = jnp.asarray(rng.normal(size=batch + (T, n)))
        xs = jnp.moveaxis(x, -2, 0) if time_major else x
        lengths = jnp.asarray(rng.integers(1, T + 1, size=batch)) if use_lengths else None
        # nn.RNN's carry selection with seq_lengths handles exactly one batch dim
        rc = not (use_lengths and len(batch) != 1)
        kw = dict(time_major=time_major, reverse=reverse, keep_order=keep_order, return_carry=rc)
        slow = nn.RNN(GatedCell(m, use_bias=use_bias, param_dtype=F64), **kw)
        fast = GatedRNN(m, use_bias=use_bias, param_dtype=F64, **kw)
        v = _vars(n, m, use_bias, trial)
        z0 = jnp.asarray(rng.normal(size=batch + (m,)))
        out_s = jax.jit(slow.apply)(v, xs, initial_carry=z0, seq_lengths=lengths)
        out_f = jax.jit(fast.apply)(v, xs, initial_carry=z0, seq_lengths=lengths)
        ys_s, ys_f = (out_s[1], out_f[1]) if rc else (out_s, out_f)
        assert ys_f.shape == ys_s.shape == xs.shape[:-1] + (m,)
        if rc:
            assert _rel(out_f[0], out_s[0]) < 1e-12, CONFIGS[int(i)]
        if lengths is None:
            assert _rel(ys_f, ys_s) < 1e-12, CONFIGS[int(i)]
        else:
            valid = np.arange(T).reshape((-1,) + (1,) * len(batch)) < np.asarray(lengths)
            valid = valid if time_major else np.moveaxis(valid, 0, -1)
            assert _rel(np.asarray(ys_f)[valid], np.asarray(ys_s)[valid]) < 1e-12


def test_two_batch_dims_seq_lengths_return_carry():
    """nn.RNN's carry selection assumes one batch dim; GatedRNN's works for several."""
    batch = (2, 3)
    x = jax.random.normal(jax.random.key(0), batch + (T, N), F64)
    lengths = jnp.array([[T, 2, 1], [3, 4, 0]])
    v = _vars(N, M, True, 4)
    fast = GatedRNN(M, use_bias=True, param_dtype=F64, return_carry=True)
    carry, ys = jax.jit(fast.apply)(v, x, seq_lengths=lengths)
    assert carry.shape == batch + (M,) and ys.shape == batch + (T, M)
    # reference: the same batch flattened to one dim, through nn.RNN
    slow = nn.RNN(GatedCell(M, use_bias=True, param_dtype=F64), return_carry=True)
    flat = lengths.reshape(6)
    c_ref, _ = jax.jit(slow.apply)(v, x.reshape(6, T, N), seq_lengths=jnp.maximum(flat, 1))
    c_ref = jnp.where(flat[:, None] > 0, c_ref, 0.0)  # empty sequence: its zero initial carry
    assert _rel(carry.reshape(6, M), c_ref) < 1e-13


@pytest.mark.parametrize("reverse", [False, True])
def test_gradients_equal_nn_rnn(reverse):
    """d loss / d (params, inputs) through the fast path (closed-form BPTT) == nn.RNN's."""
    rng = np.random.default_rng(10 + reverse)
    xs = jnp.asarray(rng.normal(size=(B, T, N)))
    lengths = jnp.asarray(rng.integers(1, T + 1, size=(B,)))
    mask = (jnp.arange(T)[None, :] < lengths[:, None])[..., None]
    w = jnp.asarray(rng.normal(size=(B, T, M)))
    kw = dict(reverse=reverse, keep_order=True, return_carry=True)
    slow = nn.RNN(GatedCell(M, use_bias=True, param_dtype=F64), **kw)
    fast = GatedRNN(M, use_bias=True, param_dtype=F64, **kw)
    v = _vars(N, M, True, 20 + reverse)

    def grad_fn(module):
        def f(variables, xs):
            carry, ys = module.apply(variables, xs, seq_lengths=lengths)
            return jnp.sum(jnp.where(mask, ys * w, 0.0)) + jnp.sum(jnp.sin(carry))

        return jax.jit(jax.grad(f, argnums=(0, 1)))

    g_slow, g_fast = grad_fn(slow)(v, xs), grad_fn(fast)(v, xs)
    leaves = jax.tree.leaves(g_fast)
    assert len(leaves) == 6
    for a, b in zip(leaves, jax.tree.leaves(g_slow), strict=True):
        assert _rel(a, b) < 1e-11


def test_jit_vmap_and_float32():
    x32 = jax.random.normal(jax.random.key(0), (B, T, N), jnp.float32)
    slow, fast = nn.RNN(GatedCell(M, use_bias=True)), GatedRNN(M, use_bias=True)
    v = _vars(N, M, True, 0, np.float32)
    y_slow = jax.jit(slow.apply)(v, x32)
    y_fast = jax.jit(fast.apply)(v, x32)
    assert y_fast.dtype == y_slow.dtype == jnp.float32
    np.testing.assert_allclose(y_fast, y_slow, rtol=2e-5, atol=2e-6)
    # vmap of unbatched calls over the batch axis == the batched call
    y_vmap = jax.jit(jax.vmap(lambda xb: fast.apply(v, xb)))(x32)
    np.testing.assert_allclose(y_vmap, y_fast, rtol=2e-5, atol=2e-6)


def test_bfloat16_computation_keeps_float32_carry():
    x = jax.random.normal(jax.random.key(0), (B, T, N), jnp.float32)
    v = _vars(N, M, False, 3, np.float32)
    y_slow = jax.jit(nn.RNN(GatedCell(M, dtype=jnp.bfloat16)).apply)(v, x)
    y_fast = jax.jit(GatedRNN(M, dtype=jnp.bfloat16).apply)(v, x)
    y_ref = jax.jit(GatedRNN(M).apply)(v, x)  # float32 throughout
    assert y_slow.dtype == y_fast.dtype == jnp.float32
    np.testing.assert_allclose(y_fast, y_ref, atol=3e-2)
    np.testing.assert_allclose(y_slow, y_ref, atol=3e-2)


def test_remat_and_unroll_reach_the_scan():
    """``remat``/``unroll`` are passed to ``gated_scan`` (checked there) and keep the values."""
    xs = jax.random.normal(jax.random.key(0), (2, 9, N), F64)
    v = _vars(N, M, True, 1)
    y0 = jax.jit(GatedRNN(M, use_bias=True, param_dtype=F64).apply)(v, xs)
    for kw in (dict(remat=True), dict(unroll=2)):
        y = jax.jit(GatedRNN(M, use_bias=True, param_dtype=F64, **kw).apply)(v, xs)
        assert _rel(y, y0) < 1e-13
    with pytest.raises(ValueError, match=r"`remat` \(=-1\)"):
        GatedRNN(M, remat=-1).apply(v, xs)


def test_backward_autodiff_gives_forward_mode():
    """``backward="autodiff"`` reaches the scan: ``jacfwd`` works and equals ``jacrev``."""
    xs = jax.random.normal(jax.random.key(2), (2, 5, N), F64)
    v = _vars(N, M, True, 2)
    fast = GatedRNN(M, use_bias=True, param_dtype=F64)
    fwd = GatedRNN(M, use_bias=True, param_dtype=F64, backward="autodiff")
    jr = jax.jit(jax.jacrev(lambda x: fast.apply(v, x)))(xs)
    assert _rel(jax.jit(jax.jacfwd(lambda x: fwd.apply(v, x)))(xs), jr) < 1e-12
    with pytest.raises(TypeError, match="backward='autodiff'"):
        jax.jacfwd(lambda x: fast.apply(v, x))(xs)
    with pytest.raises(ValueError, match=r"`backward` \(='fast'\)"):
        GatedRNN(M, backward="fast")


# ---------------------------------------------------------------------------------------------
# errors name the argument and its value


def test_errors():
    with pytest.raises(ValueError, match=r"`features` \(=0\)"):
        GatedCell(0)
    with pytest.raises(ValueError, match=r"`features` \(=2.5\)"):
        GatedRNN(2.5)
    with pytest.raises(ValueError, match=r"`unroll` \(=0\)"):
        GatedRNN(3, unroll=0)
    xs = jnp.ones((2, 4, 3), jnp.float32)
    fast = GatedRNN(5)
    v = _vars(3, 5, False, 0, np.float32)
    with pytest.raises(ValueError, match=r"`inputs` \(=array of shape \(3,\).*rank >= 2"):
        fast.apply(v, jnp.ones((3,)))
    with pytest.raises(
        ValueError, match=r"`seq_lengths` \(=array of shape \(3,\).*batch shape \(2,\)"
    ):
        fast.apply(v, xs, seq_lengths=jnp.array([1, 2, 3]))
    with pytest.raises(
        ValueError, match=r"`seq_lengths` \(=\[1, 9\]\) must be ints in \[0, T\] = \[0, 4\]"
    ):
        fast.apply(v, xs, seq_lengths=jnp.array([1, 9]))
    with pytest.raises(
        ValueError, match=r"`initial_carry` \(=array of shape \(2, 4\).* = \(2, 5\)"
    ):
        fast.apply(v, xs, initial_carry=jnp.ones((2, 4), jnp.float32))
    with pytest.raises(ValueError, match=r"`carry` \(=array of shape \(2, 4\).*features = 5"):
        GatedCell(5).apply({"params": v["params"]["cell"]}, jnp.ones((2, 4)), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"'ic', 'ix' and \(with a recurrent gate\) 'hc'"):
        to_gated_params({"params": {"dense": {}}})
    gp = init_gated_params(jax.random.key(0), 3, 2, use_bias=True)
    with pytest.raises(ValueError, match=r"both biases or neither"):
        from_gated_params(gp._replace(b_x=None))
    with pytest.raises(
        TypeError,
        match=r"`params` \(=dict with keys \['b_c', .*must be a gated_jax.cell.GatedParams",
    ):
        from_gated_params(gp._asdict())


# ---------------------------------------------------------------------------------------------
# GatedRNN takes its cell; each cell option is defined once, on the cell


@pytest.mark.parametrize("use_bias", [False, True])
def test_variables_move_between_nn_rnn_and_gated_rnn_of_a_cell(use_bias):
    """Variables of nn.RNN(GatedCell) load into GatedRNN(GatedCell) and back: same outputs."""
    xs = jax.random.normal(jax.random.key(3), (2, 5, 3), F64)
    cell = GatedCell(4, use_bias=use_bias, param_dtype=F64)
    slow, fast, first = (
        nn.RNN(cell),
        GatedRNN(cell),
        GatedRNN(4, use_bias=use_bias, param_dtype=F64),
    )
    v_slow, v_fast = slow.init(jax.random.key(1), xs), fast.init(jax.random.key(2), xs)
    assert jax.tree.structure(v_slow) == jax.tree.structure(v_fast)
    assert jax.tree.map(jnp.shape, v_slow) == jax.tree.map(jnp.shape, v_fast)
    for v in (v_slow, v_fast):
        ref = slow.apply(v, xs)
        assert _rel(fast.apply(v, xs), ref) < 1e-13
        assert _rel(first.apply(v, xs), ref) < 1e-13
    # the same key gives the same weights in both spellings and in nn.RNN
    v_first = first.init(jax.random.key(2), xs)
    for a, b in zip(jax.tree.leaves(v_fast), jax.tree.leaves(v_first), strict=True):
        np.testing.assert_array_equal(a, b)


def test_first_spelling_builds_the_same_cell():
    init = nn.initializers.constant(0.5)
    old = GatedRNN(4, use_bias=True, bias_init=init, reverse=True, unroll=2)
    new = GatedRNN(GatedCell(4, use_bias=True, bias_init=init), reverse=True, unroll=2)
    assert old.cell == new.cell and old.reverse and old.unroll == 2
    assert GatedRNN(features=4).cell == GatedCell(4)
    with pytest.raises(TypeError, match=r"cell options \['use_bias'\] beside a cell"):
        GatedRNN(GatedCell(4), use_bias=True)
    with pytest.raises(TypeError, match="by keyword"):
        GatedRNN(4, True)
    with pytest.raises(TypeError, match=r"`cell` \(=.*GRUCell.*must be a gated_jax.nn.GatedCell"):
        GatedRNN(nn.GRUCell(4))


def test_first_spelling_is_read_by_the_class_constructor():
    """The constructor in the class body reads both spellings; Flax's ``clone``,
    ``dataclasses.replace`` and ``inspect.signature`` see the fields, as for any module."""
    import dataclasses
    import inspect

    import gated_jax.nn as gnn

    assert "__init__" in vars(GatedRNN) and not hasattr(gnn, "_accept_features")
    layer = GatedRNN(4, use_bias=True, reverse=True)
    clone = layer.clone(unroll=2)
    assert clone.cell == layer.cell and clone.unroll == 2 and clone.reverse
    assert dataclasses.replace(layer, reverse=False).cell == layer.cell
    params = list(inspect.signature(GatedRNN).parameters)
    assert params[:3] == ["cell", "time_major", "return_carry"]
    with pytest.raises(TypeError, match="both a positional `cell` and `features`"):
        GatedRNN(4, features=4)


def test_gate_bias_init_is_separate_and_keeps_the_gate_open():
    """``gate_bias_init`` sets ``b_c`` only; a gate bias of +b gives c = sigmoid(b) at x=z=0."""
    x0, z0 = jnp.zeros((1, 3), F64), jnp.zeros((1, 4), F64)
    kw = dict(use_bias=True, param_dtype=F64)
    v = GatedCell(4, bias_init=nn.initializers.constant(0.25), **kw).init(jax.random.key(0), z0, x0)
    np.testing.assert_array_equal(v["params"]["ic"]["bias"], 0.25)  # default: follows bias_init
    np.testing.assert_array_equal(v["params"]["ix"]["bias"], 0.25)
    cell = GatedCell(4, gate_bias_init=nn.initializers.constant(3.0), **kw)
    v = cell.init(jax.random.key(0), z0, x0)
    np.testing.assert_array_equal(v["params"]["ic"]["bias"], 3.0)
    np.testing.assert_array_equal(v["params"]["ix"]["bias"], 0.0)
    # at x = 0 the candidate is b_x = 0, so z' = c z with c = sigmoid(3 + W_z z): from z = 1e-3
    # (W_z z tiny) the state keeps sigmoid(3) = 0.9526 of itself
    z = jnp.full((1, 4), 1e-3, F64)
    new, _ = cell.apply(v, z, x0)
    np.testing.assert_allclose(new / z, 1.0 / (1.0 + np.exp(-3.0)), rtol=1e-3)
    with pytest.raises(TypeError, match=r"`gate_bias_init` \(=2.0\) must be an initializer"):
        GatedCell(4, gate_bias_init=2.0)


def _np_run(tree, xs):
    """The cell over ``xs`` ``(B, T, n)`` from zeros, in float64 NumPy (no JAX)."""
    k = {name: np.asarray(tree[name]["kernel"], np.float64) for name in ("ic", "hc", "ix")}
    b = {name: np.asarray(tree[name].get("bias", 0.0), np.float64) for name in ("ic", "ix")}
    xs = np.asarray(xs, np.float64)
    z, out = np.zeros((xs.shape[0], k["hc"].shape[0])), []
    for t in range(xs.shape[1]):
        c = 1.0 / (1.0 + np.exp(-(xs[:, t] @ k["ic"] + b["ic"] + z @ k["hc"])))
        z = c * z + (1.0 - c) * (xs[:, t] @ k["ix"] + b["ix"])
        out.append(z)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_parameters_initialise_and_run(dtype):
    """bfloat16 / float16 ``param_dtype``: the orthogonal kernel is drawn in float32 and cast."""
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 3)), dtype)
    cell = GatedCell(4, use_bias=True, param_dtype=dtype, dtype=dtype)
    v = cell.init(jax.random.key(0), jnp.zeros((4,), dtype), xs[0, 0])
    v32 = GatedCell(4, use_bias=True).init(jax.random.key(0), jnp.zeros((4,)), xs[0, 0])
    assert {a.dtype for a in jax.tree.leaves(v)} == {jnp.dtype(dtype)}
    for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(v32), strict=True):
        np.testing.assert_array_equal(a, b.astype(dtype))  # the float32 draw, rounded
    variables = {"params": {"cell": v["params"]}}
    ref = _np_run(v["params"], xs)
    runs = [GatedRNN(cell).apply(variables, xs)]
    if dtype == jnp.bfloat16:  # nn.RNN in half precision once (one more compilation)
        runs.append(nn.RNN(cell).apply(variables, xs))
    for y in runs:
        assert y.dtype == jnp.dtype(dtype)
        np.testing.assert_allclose(np.asarray(y, np.float64), ref, atol=3e-2)


@pytest.mark.parametrize("name", ["time_major", "return_carry", "reverse", "keep_order"])
@pytest.mark.parametrize("value", ["no", 1, None])
def test_flags_are_strict_bools(name, value):
    """A truthy non-bool never runs reversed / time-major: refused as attribute and argument."""
    if value is not None:
        with pytest.raises(ValueError, match=rf"`{name}` \(={value!r}\) must be a bool"):
            GatedRNN(4, **{name: value})
    v = _vars(3, 4, False, 0, np.float32)
    bad = "no" if value is None else value
    with pytest.raises(ValueError, match=rf"`{name}` \(={bad!r}\) must be a bool"):
        GatedRNN(4).apply(v, jnp.ones((2, 5, 3), jnp.float32), **{name: bad})
    with pytest.raises(ValueError, match=r"`use_bias` \('yes'\)|`use_bias` \(='yes'\)"):
        GatedCell(4, use_bias="yes")


def test_list_and_numpy_inputs_are_arrays():
    v = _vars(3, 4, True, 1)
    x = np.random.default_rng(0).normal(size=(2, 5, 3))
    ref = GatedRNN(4, use_bias=True, param_dtype=F64).apply(v, jnp.asarray(x))
    for given in (x, x.tolist()):
        assert _rel(GatedRNN(4, use_bias=True, param_dtype=F64).apply(v, given), ref) < 1e-15
    with pytest.raises(TypeError, match=r"`inputs` \(=.*must be an array .*of numbers"):
        GatedRNN(4).apply(v, [["a", "b", "c"]])
    with pytest.raises(ValueError, match=r"`inputs` \(=.*must be an array"):
        GatedRNN(4).apply(v, [[1.0, 2.0], [3.0]])


def test_verification_rows_pass(monkeypatch):
    """The ``gated-jax verify`` rows of the modules (float64, random configs) are within 1e-10."""
    from gated_jax.lab import modules

    monkeypatch.setattr(modules, "_CASES", 2)  # fewer compilations; `gated-jax verify` runs 4
    with jax.enable_x64(True):
        rows = modules.checks(seed=0)
    assert len(rows) == 6
    for row in rows:
        assert row.ok, row
        assert row.cases >= 2


def test_method_solves_the_same_recurrence_with_the_same_gradients():
    """GatedRNN(method=...) passes the solver to gated_scan: states and parameter gradients
    equal the sequential layer's (float64, a contractive cell, seq_lengths and reverse), for
    every method; the sequential reference is computed once and each method compiles once."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(7)
        x = jnp.asarray(rng.normal(size=(3, 20, 2)))
        lengths = jnp.asarray([20, 11, 0])
        cell = GatedCell(3, use_bias=True, param_dtype=jnp.float64)
        seq = GatedRNN(cell, reverse=True)
        v = seq.init(jax.random.key(1), x)
        v = jax.tree.map(lambda a: 0.5 * a, v)  # ||W_z|| = 0.5: Newton converges fast

        def loss(m, v):
            return jnp.sum(m.apply(v, x, seq_lengths=lengths) ** 2)

        ref_val, ref_grad = jax.jit(jax.value_and_grad(lambda v: loss(seq, v)))(v)
        for method in ("deer", "quasi_deer", "auto"):
            par = GatedRNN(cell, reverse=True, method=method)
            val, grad = jax.jit(jax.value_and_grad(lambda v, par=par: loss(par, v)))(v)
            assert max_rel_error(val, ref_val) < 1e-10, method
            assert max_rel_error(grad, ref_grad) < 1e-10, method
        with pytest.raises(ValueError, match=r"`method` \(='newton'\)"):
            GatedRNN(cell, method="newton")


# ---------------------------------------------------------------------------------------------
# recurrent_gate=False: the minGRU cell, no 'hc' kernel


def _min_tree(n, m, use_bias, seed):
    tree = _tree(n, m, use_bias, seed)
    del tree["hc"]
    return tree


def _flip_valid(xs, lengths):
    """Each sequence's valid part reversed, padding left at the end (NumPy, as nn.RNN flips)."""
    out = np.array(xs)
    for b, L in enumerate(lengths):
        out[b, :L] = out[b, :L][::-1]
    return out


def _valid_loss(ys, carry, lengths, ct, cc):
    """A loss that reads only valid outputs (padding conventions differ) and the carry."""
    mask = (np.arange(ys.shape[1])[None, :] < np.asarray(lengths)[:, None])[..., None]
    return jnp.sum(jnp.where(mask, ys * ct, 0.0)) + jnp.sum(carry * cc)


def _loop_loss(tree, xs, z0, lengths, reverse, ct, cc):
    """The loss of a plain per-sequence loop written from the parameter table (jnp, autodiff)."""
    total = 0.0
    for b, L in enumerate(lengths):
        seq = xs[b, :L][::-1] if reverse else xs[b, :L]
        z = z0[b]
        for t in range(L):
            z = _ref_step(tree, z, seq[t])
            total = total + jnp.sum(z * ct[b, t])
        total = total + jnp.sum(z * cc[b])
    return total


MIN_CONFIGS = [  # (use_bias, reverse, lengths): randomized weights and inputs per config
    (True, False, [7, 7, 7]),
    (False, True, [7, 3, 0]),
    (True, True, [5, 7, 1]),
]


@pytest.mark.parametrize("cfg", range(len(MIN_CONFIGS)))
def test_min_gru_layer_equals_a_loop_and_gated_scan_with_w_z_none(cfg):
    """GatedRNN(recurrent_gate=False): no 'hc' in the tree; outputs, final carry and parameter
    gradients equal a plain loop of the minGRU recurrence and gated_scan(GatedParams(w_z=None))
    (float64, seq_lengths, reverse); nn.RNN of the same cell gives the same outputs."""
    use_bias, reverse, lengths = MIN_CONFIGS[cfg]
    n, m, T = 2, 3, 7
    rng = np.random.default_rng(100 + cfg)
    xs = rng.normal(size=(3, T, n))
    z0, ct, cc = rng.normal(size=(3, m)), rng.normal(size=(3, T, m)), rng.normal(size=(3, m))
    cell = GatedCell(m, use_bias=use_bias, recurrent_gate=False, param_dtype=F64)
    layer = GatedRNN(cell, reverse=reverse, return_carry=True)
    shapes = jax.eval_shape(layer.init, jax.random.key(0), jnp.asarray(xs))
    expect = {"ic": {"kernel": (n, m)}, "ix": {"kernel": (n, m)}}
    if use_bias:
        expect["ic"]["bias"] = expect["ix"]["bias"] = (m,)
    assert jax.tree.map(lambda a: a.shape, shapes["params"]["cell"]) == expect
    tree = _min_tree(n, m, use_bias, seed=cfg)
    v = {"params": {"cell": tree}}
    lens = jnp.asarray(lengths)

    def layer_loss(v):
        carry, ys = layer.apply(v, xs, initial_carry=z0, seq_lengths=lens)
        return _valid_loss(ys, carry, lengths, ct, cc), (carry, ys)

    def core_loss(p):  # gated_scan of the layer's processing order (flipped inputs if reverse)
        ys = gated_scan(
            p, jnp.asarray(_flip_valid(xs, lengths) if reverse else xs), z0, seq_lengths=lens
        )
        return _valid_loss(ys, ys[:, -1], lengths, ct, cc)

    methods = ("deer", "quasi_deer", "auto") if cfg == 2 else ()

    def par_loss(method, v):
        par = GatedRNN(cell, reverse=reverse, return_carry=True, method=method)
        carry, ys = par.apply(v, xs, initial_carry=z0, seq_lengths=lens)
        return _valid_loss(ys, carry, lengths, ct, cc)

    @jax.jit  # one compilation: the layer, the loop, gated_scan, nn.RNN and the methods
    def run(v, p):
        slow = nn.RNN(cell, reverse=reverse, return_carry=True).apply(
            v, xs, initial_carry=z0, seq_lengths=lens
        )
        return (
            jax.value_and_grad(layer_loss, has_aux=True)(v),
            jax.grad(_loop_loss)(v["params"]["cell"], xs, z0, lengths, reverse, ct, cc),
            jax.value_and_grad(core_loss)(p),
            slow,
            [jax.value_and_grad(functools.partial(par_loss, m))(v) for m in methods],
        )

    p = to_gated_params(v)
    assert p.w_z is None and (p.b_c is None) == (not use_bias)
    ((val, (carry, ys)), g), g_loop, (val_core, g_core), (slow_carry, slow), par = run(v, p)
    ref_outs, ref_carry = _ref_sequence(tree, xs, z0, lengths, reverse)
    for b, L in enumerate(lengths):
        assert L == 0 or _rel(ys[b, :L], np.stack(ref_outs[b])) < 1e-12
    assert _rel(carry, ref_carry) < 1e-12
    assert "hc" not in g["params"]["cell"]
    assert max_rel_error(g["params"]["cell"], g_loop) < 1e-10
    assert max_rel_error(val, val_core) < 1e-10
    assert g_core.w_z is None
    assert max_rel_error(to_gated_params(g["params"]), g_core) < 1e-10
    # nn.RNN of the same cell: the same outputs at valid steps and the same final carry
    for b, L in enumerate(lengths):  # (length 0: nn.RNN's carry differs, documented)
        assert L == 0 or _rel(slow[b, :L], ys[b, :L]) < 1e-12
        assert L == 0 or _rel(slow_carry[b], carry[b]) < 1e-12
    for pv, pg in par:  # the parallel methods: one exact scan, same states and gradients
        assert max_rel_error(pv, val) < 1e-10
        assert max_rel_error(pg, g) < 1e-10
    assert len(par) == len(methods)


def test_min_gru_parameter_map_round_trips_both_ways():
    rng = np.random.default_rng(11)
    for use_bias in (False, True):
        gp = GatedParams(
            jnp.asarray(rng.normal(size=(3, 2))),
            jnp.asarray(rng.normal(size=(3, 2))),
            None,
            *(jnp.asarray(rng.normal(size=3)) for _ in range(2 * use_bias)),
        )
        tree = from_gated_params(gp)
        assert sorted(tree) == ["ic", "ix"]
        back = to_gated_params({"params": {"cell": tree}})
        assert back.w_z is None
        for a, b in zip(back, gp, strict=True):
            assert (a is None and b is None) or np.array_equal(a, b)
        again = from_gated_params(to_gated_params(tree))
        assert jax.tree.structure(again) == jax.tree.structure(tree)
        for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(tree), strict=True):
            np.testing.assert_array_equal(a, b)


def test_min_gru_first_spelling_jit_vmap_and_errors():
    """GatedRNN(features, recurrent_gate=False) builds the same cell; vmap over inputs equals
    the batched call; a tree with / without 'hc' and the wrong flag names `recurrent_gate`."""
    xs = jnp.asarray(np.random.default_rng(5).normal(size=(2, 4, 6, 2)))
    first = GatedRNN(3, recurrent_gate=False, use_bias=True, param_dtype=F64)
    second = GatedRNN(GatedCell(3, recurrent_gate=False, use_bias=True, param_dtype=F64))
    v = first.init(jax.random.key(0), xs[0])
    assert sorted(v["params"]["cell"]) == ["ic", "ix"]
    v2 = second.init(jax.random.key(0), xs[0])
    assert all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(v2), strict=True)
    )
    batched = jax.jit(first.apply)(v, xs)
    mapped = jax.vmap(lambda x: first.apply(v, x))(xs)
    assert _rel(mapped, batched) < 1e-13
    full = {"params": {"cell": _tree(2, 3, True, 0)}}
    with pytest.raises(ValueError, match=r"`recurrent_gate` \(=False\) must be True .*'hc'"):
        first.apply(full, xs[0])
    with pytest.raises(ValueError, match=r"`recurrent_gate` \(=True\) must be False .*no 'hc'"):
        GatedRNN(3, use_bias=True).apply(v, xs[0])
    with pytest.raises(ValueError, match=r"`recurrent_gate` \(=True\) must be False"):
        nn.RNN(GatedCell(3, use_bias=True)).apply(v, xs[0])
    for bad in ("no", 1, None, np.int64(0)):
        with pytest.raises(ValueError, match=r"`recurrent_gate` \(=.*\) must be a bool"):
            GatedCell(3, recurrent_gate=bad)
        with pytest.raises(ValueError, match=r"`recurrent_gate` \(=.*\) must be a bool"):
            GatedRNN(3, recurrent_gate=bad)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_min_gru_half_precision_parameters(dtype):
    xs = jnp.asarray(np.random.default_rng(2).normal(size=(2, 5, 3)), dtype)
    layer = GatedRNN(4, recurrent_gate=False, use_bias=True, param_dtype=dtype, dtype=dtype)
    v = layer.init(jax.random.key(0), xs)
    assert sorted(v["params"]["cell"]) == ["ic", "ix"]
    assert {a.dtype for a in jax.tree.leaves(v)} == {jnp.dtype(dtype)}
    tree = jax.tree.map(lambda a: np.asarray(a, np.float64), v["params"]["cell"])
    outs, _ = _ref_sequence(tree, np.asarray(xs, np.float64), np.zeros((2, 4)))
    y = layer.apply(v, xs)
    assert y.dtype == jnp.dtype(dtype)
    np.testing.assert_allclose(np.asarray(y, np.float64), np.asarray(outs), atol=3e-2)
