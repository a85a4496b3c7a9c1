"""NNX modules: GatedCell in nnx.RNN / nnx.Bidirectional, GatedRNN, training and transforms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from gated_jax import nn as gnn
from gated_jax.cell import GatedParams, gated_scan
from gated_jax.nnx import (
    GatedCell,
    GatedRNN,
    from_gated_params,
    load_gated_params,
    to_gated_params,
)
from gated_jax.testing import max_rel_error

F64 = jnp.float64


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _randomize(module, seed):
    """Random normal values (numpy, no compilation) in every Param; biases nonzero."""
    state = nnx.state(module, nnx.Param)
    leaves, tdef = jax.tree.flatten(state)
    rng = np.random.default_rng(seed)
    new = [jnp.asarray(0.7 * rng.normal(size=l.shape), l.dtype) for l in leaves]
    nnx.update(module, jax.tree.unflatten(tdef, new))
    return module


def _make(cls, n, m, seed, **kw):
    """``cls(n, m, ...)`` built abstractly (no initialiser runs) and filled with random weights."""
    return _randomize(nnx.eval_shape(lambda: cls(n, m, rngs=nnx.Rngs(0), **kw)), seed)


def _linen_tree(cell: GatedCell):
    """The NNX cell's weights as a linen parameter tree (same names, same leaves)."""
    return gnn.from_gated_params(cell.gated_params())


B, T, N, M = 3, 6, 4, 5  # shared small sizes: repeated shapes reuse compiled primitives


def _run(model, xs, **kw):
    """``model(xs, **kw)`` under ``nnx.jit``; array keywords are traced, the rest static."""
    arrays = {k: v for k, v in kw.items() if isinstance(v, jax.Array)}
    static = {k: v for k, v in kw.items() if k not in arrays}
    return nnx.jit(lambda model, xs, arrays: model(xs, **arrays, **static))(model, xs, arrays)


@pytest.mark.parametrize("use_bias", [False, True])
def test_cell_shapes_and_initialize_carry(use_bias):
    cell = GatedCell(5, 6, use_bias=use_bias, rngs=nnx.Rngs(0))
    params = nnx.state(cell, nnx.Param)
    shapes = jax.tree.map(jnp.shape, nnx.to_pure_dict(params))
    expected = {"ic": {"kernel": (5, 6)}, "hc": {"kernel": (6, 6)}, "ix": {"kernel": (5, 6)}}
    if use_bias:
        expected["ic"]["bias"] = (6,)
        expected["ix"]["bias"] = (6,)
    assert shapes == expected
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(params))
    assert cell.num_feature_axes == 1
    carry = cell.initialize_carry((2, 3, 5))
    assert carry.shape == (2, 3, 6) and carry.dtype == jnp.float32
    np.testing.assert_array_equal(carry, 0.0)
    # a random carry_init draws from the given rngs (Rngs -> its carry stream, or a stream)
    normal = nnx.initializers.normal(1.0)
    a = cell.initialize_carry((4, 5), nnx.Rngs(carry=1), carry_init=normal)
    b = cell.initialize_carry((4, 5), nnx.Rngs(carry=1).carry, carry_init=normal)
    c = cell.initialize_carry((4, 5), nnx.Rngs(carry=2), carry_init=normal)
    assert a.shape == (4, 6)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    new, y = cell(carry, jnp.ones((2, 3, 5), jnp.float32))
    assert new.shape == (2, 3, 6)
    np.testing.assert_array_equal(new, y)


def test_cell_equals_linen_cell_same_weights():
    rng = np.random.default_rng(0)
    for trial in range(4):
        n, m = (int(v) for v in rng.integers(1, 6, size=2))
        batch = tuple(int(v) for v in rng.integers(1, 4, size=trial % 3))
        use_bias = bool(trial % 2)
        cell = _make(GatedCell, n, m, trial, use_bias=use_bias, param_dtype=F64)
        x = jnp.asarray(rng.normal(size=batch + (n,)))
        z = jnp.asarray(rng.normal(size=batch + (m,)))
        linen = gnn.GatedCell(m, use_bias=use_bias, param_dtype=F64)
        new, ref = nnx.jit(
            lambda cell, z, x, linen=linen: (
                cell(z, x)[0],
                linen.apply({"params": _linen_tree(cell)}, z, x)[0],
            )
        )(cell, z, x)
        assert _rel(new, ref) < 1e-14


@pytest.mark.parametrize("reverse,keep_order", [(False, False), (True, True)])
def test_step_by_hand_equals_nnx_rnn_and_gated_rnn(reverse, keep_order):
    xs = jax.random.normal(jax.random.key(0), (B, T, N), F64)
    cell = _make(GatedCell, N, M, 1, use_bias=True, param_dtype=F64)
    rnn = nnx.RNN(cell, return_carry=True, reverse=reverse, keep_order=keep_order)
    carry, ys = _run(rnn, xs)
    z = cell.initialize_carry((B, N))
    step = nnx.jit(lambda cell, z, x: cell(z, x))
    steps = []
    for t in range(T - 1, -1, -1) if reverse else range(T):
        z, y = step(cell, z, xs[:, t])
        steps.append(y)
    expected = jnp.stack(steps, axis=1)
    if reverse and keep_order:
        expected = expected[:, ::-1]
    assert _rel(ys, expected) < 1e-13 and _rel(carry, z) < 1e-13
    fast = _make(GatedRNN, N, M, 9, use_bias=True, param_dtype=F64)
    nnx.update(fast, nnx.state(rnn, nnx.Param))
    fc, fy = _run(fast, xs, return_carry=True, reverse=reverse, keep_order=keep_order)
    assert _rel(fy, expected) < 1e-13 and _rel(fc, z) < 1e-13


def test_gated_rnn_state_tree_matches_nnx_rnn():
    slow = nnx.eval_shape(lambda: nnx.RNN(GatedCell(3, 4, use_bias=True, rngs=nnx.Rngs(0))))
    fast = nnx.eval_shape(lambda: GatedRNN(3, 4, use_bias=True, rngs=nnx.Rngs(0)))
    ps, pf = nnx.state(slow, nnx.Param), nnx.state(fast, nnx.Param)
    assert jax.tree.structure(ps) == jax.tree.structure(pf)
    shape = lambda s: jax.tree.map(lambda a: a.shape, nnx.to_pure_dict(s))
    assert shape(ps) == shape(pf)
    assert shape(pf) == {
        "cell": {
            "ic": {"kernel": (3, 4), "bias": (4,)},
            "hc": {"kernel": (4, 4)},
            "ix": {"kernel": (3, 4), "bias": (4,)},
        }
    }


def test_gated_rnn_equals_nnx_rnn_and_linen():
    """Options sweep, float64: fast NNX layer == nnx.RNN(GatedCell) == linen GatedRNN."""
    rng = np.random.default_rng(0)
    for trial in range(4):
        time_major, reverse, keep_order = (bool(v) for v in rng.integers(2, size=3))
        use_lengths = bool(trial % 2)
        T, n, m = int(rng.integers(1, 7)), int(rng.integers(1, 5)), int(rng.integers(1, 5))
        x = jnp.asarray(rng.normal(size=(B, T, n)))
        xs = jnp.swapaxes(x, 0, 1) if time_major else x
        lengths = jnp.asarray(rng.integers(1, T + 1, size=(B,))) if use_lengths else None
        z0 = jnp.asarray(rng.normal(size=(B, m)))
        kw = dict(return_carry=True, time_major=time_major, reverse=reverse, keep_order=keep_order)
        arrays = dict(initial_carry=z0)
        if lengths is not None:
            arrays["seq_lengths"] = lengths
        fast = _make(GatedRNN, n, m, trial, use_bias=True, param_dtype=F64)
        slow = nnx.RNN(_make(GatedCell, n, m, 99, use_bias=True, param_dtype=F64))
        nnx.update(slow, nnx.state(fast, nnx.Param))
        cf, yf = _run(fast, xs, **kw, **arrays)
        cs, ys = _run(slow, xs, **kw, **arrays)
        linen = gnn.GatedRNN(m, use_bias=True, param_dtype=F64, **kw)
        cl, yl = jax.jit(linen.apply)({"params": {"cell": _linen_tree(fast.cell)}}, xs, **arrays)
        assert _rel(cf, cs) < 1e-12 and _rel(cf, cl) < 1e-14
        assert _rel(yf, yl) < 1e-14
        if lengths is None:
            assert _rel(yf, ys) < 1e-12
        else:
            valid = np.arange(T)[None, :] < np.asarray(lengths)[:, None]  # (B, T)
            valid = valid.T if time_major else valid
            assert _rel(np.asarray(yf)[valid], np.asarray(ys)[valid]) < 1e-12


def test_bidirectional():
    xs = jax.random.normal(jax.random.key(0), (B, T, N), F64)

    def rnn(fast, seed):
        if fast:
            return _make(GatedRNN, N, M, seed, use_bias=True, param_dtype=F64)
        return nnx.RNN(_make(GatedCell, N, M, seed, use_bias=True, param_dtype=F64))

    slow = nnx.Bidirectional(rnn(False, 0), rnn(False, 1))
    fast = nnx.Bidirectional(rnn(True, 2), rnn(True, 3))
    nnx.update(fast, nnx.state(slow, nnx.Param))
    lengths = jnp.array([T, 2, 4])
    out_s = _run(slow, xs, seq_lengths=lengths)
    out_f = _run(fast, xs, seq_lengths=lengths)
    assert out_f.shape == (B, T, 2 * M)
    for b, L in enumerate(lengths.tolist()):
        assert _rel(out_f[b, :L], out_s[b, :L]) < 1e-13


def test_gradients_equal_nnx_rnn():
    xs = jax.random.normal(jax.random.key(1), (B, T, N), F64)
    lengths = jnp.array([T, 3, 5])
    mask = (jnp.arange(T)[None, :] < lengths[:, None])[..., None]
    fast = _make(GatedRNN, N, M, 2, use_bias=True, param_dtype=F64)
    slow = nnx.RNN(_make(GatedCell, N, M, 3, use_bias=True, param_dtype=F64))
    nnx.update(slow, nnx.state(fast, nnx.Param))

    @nnx.jit
    def grads(model):
        def loss(model):
            carry, ys = model(xs, seq_lengths=lengths, return_carry=True)
            return jnp.sum(jnp.where(mask, jnp.tanh(ys), 0.0)) + jnp.sum(carry**2)

        return nnx.grad(loss)(model)

    lf, ls = jax.tree.leaves(grads(fast)), jax.tree.leaves(grads(slow))
    assert len(lf) == len(ls) == 5
    for a, b in zip(lf, ls, strict=True):
        assert _rel(a, b) < 1e-11


def test_backward_autodiff_gives_forward_mode():
    xs = jax.random.normal(jax.random.key(3), (2, 5, N), F64)
    fast = _make(GatedRNN, N, M, 4, use_bias=True, param_dtype=F64)
    fwd = _make(GatedRNN, N, M, 4, use_bias=True, param_dtype=F64, backward="autodiff")
    jr = jax.jit(jax.jacrev(lambda x: fast(x)))(xs)
    assert _rel(jax.jit(jax.jacfwd(lambda x: fwd(x)))(xs), jr) < 1e-12
    with pytest.raises(ValueError, match=r"`backward` \(='fast'\)"):
        GatedRNN(N, M, backward="fast", rngs=nnx.Rngs(0))


def test_load_gated_params_and_errors():
    rng = np.random.default_rng(0)
    gp = GatedParams(*(jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (4, 3), (4, 4), 4, 4]))
    layer = _make(GatedRNN, 3, 4, 0, use_bias=True, param_dtype=F64)
    layer.cell.load_gated_params(gp)
    xs = jax.random.normal(jax.random.key(1), (2, 6, 3), F64)
    y, ref = nnx.jit(lambda layer, xs, gp: (layer(xs), gated_scan(gp, xs)))(layer, xs, gp)
    assert _rel(y, ref) < 1e-14
    with pytest.raises(ValueError, match=r"`params.b_c`"):
        _make(GatedCell, 3, 4, 0).load_gated_params(gp)
    with pytest.raises(ValueError, match=r"`in_features` \(=0\)"):
        GatedCell(0, 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"`hidden_features` \(=-1\)"):
        GatedRNN(3, -1, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=r"`inputs` \(=array of shape \(2, 6, 5\).*in_features = 3"
    ):
        layer(jnp.ones((2, 6, 5)))
    with pytest.raises(ValueError, match=r"`carry` \(=array of shape \(2, 5\).*features = 4"):
        layer.cell(jnp.ones((2, 5)), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"`seq_lengths` \(=array of shape \(3,\)"):
        layer(xs, seq_lengths=jnp.array([1, 2, 3]))


def test_float32_matches_linen():
    fast = _make(GatedRNN, N, M, 4, param_dtype=jnp.float32)
    xs = jax.random.normal(jax.random.key(2), (B, T, N), jnp.float32)
    y = _run(fast, xs)
    assert y.dtype == jnp.float32
    linen = nn.RNN(gnn.GatedCell(M))
    ref = jax.jit(linen.apply)({"params": {"cell": _linen_tree(fast.cell)}}, xs)
    np.testing.assert_allclose(y, ref, rtol=2e-5, atol=2e-6)


def test_cell_in_nnx_rnn_trains_under_nnx_jit():
    """``nnx.RNN(GatedCell)`` (its RNG stream included) trains with ``nnx.Optimizer``."""
    import optax

    xs = jax.random.normal(jax.random.key(3), (B, T, N), jnp.float32)
    target = jnp.cumsum(xs[..., :1], axis=1) / T
    model = nnx.RNN(GatedCell(N, M, use_bias=True, rngs=nnx.Rngs(0)))
    readout = jnp.ones((M, 1), jnp.float32) / M
    optimizer = nnx.Optimizer(model, optax.adam(5e-2), wrt=nnx.Param)
    before = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))

    @nnx.jit
    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(xs) @ readout - target) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(model, optimizer)) for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0], losses
    after = nnx.state(model, nnx.Param)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        assert not np.allclose(a, b)


# ---------------------------------------------------------------------------------------------
# GatedRNN takes its cell; carry_init lives in initialize_carry; one GatedParams API


def test_gated_rnn_of_a_cell_and_first_spelling_share_state_with_nnx_rnn():
    xs = jax.random.normal(jax.random.key(4), (B, T, N), F64)
    cell = _make(GatedCell, N, M, 5, use_bias=True, param_dtype=F64)
    slow, fast = nnx.RNN(cell), GatedRNN(cell)
    assert fast.cell is cell
    first = _make(GatedRNN, N, M, 6, use_bias=True, param_dtype=F64)
    # nnx.RNN's state loads into both spellings, and back: the same outputs
    nnx.update(first, nnx.state(slow, nnx.Param))
    ref = _run(slow, xs)
    assert _rel(_run(fast, xs), ref) < 1e-13 and _rel(_run(first, xs), ref) < 1e-13
    back = nnx.RNN(_make(GatedCell, N, M, 7, use_bias=True, param_dtype=F64))
    nnx.update(back, nnx.state(first, nnx.Param))
    assert _rel(_run(back, xs), ref) < 1e-13
    with pytest.raises(TypeError, match=r"cell options \['use_bias'\] beside a cell"):
        GatedRNN(cell, use_bias=True)
    with pytest.raises(TypeError, match=r"`cell` \(=Linear\(...\)\) must be a gated_jax.nnx"):
        GatedRNN(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    with pytest.raises(TypeError, match=r"`hidden_features` \(=None\)"):
        GatedRNN(3, rngs=nnx.Rngs(0))


def test_carry_init_is_not_module_state():
    """As Flax's NNX cells recommend: ``carry_init`` goes to ``initialize_carry`` / the call."""
    with pytest.raises(TypeError, match=r"`carry_init` \(=.*initialize_carry"):
        GatedCell(3, 4, carry_init=nnx.initializers.ones_init(), rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match=r"`carry_init`"):
        GatedRNN(3, 4, carry_init=nnx.initializers.ones_init(), rngs=nnx.Rngs(0))
    layer = _make(GatedRNN, N, M, 1, param_dtype=F64)
    assert not hasattr(layer.cell, "carry_init")
    xs = jax.random.normal(jax.random.key(1), (B, T, N), F64)
    normal = nnx.initializers.normal(1.0)
    z0 = layer.cell.initialize_carry((B, N), nnx.Rngs(carry=3), carry_init=normal)
    assert z0.shape == (B, M) and float(jnp.std(z0)) > 0.1
    got = layer(xs, rngs=nnx.Rngs(carry=3), carry_init=normal)
    assert _rel(got, layer(xs, initial_carry=z0)) < 1e-15
    ones = layer(xs[:, :1] * 0.0, carry_init=nnx.initializers.ones_init())
    assert not np.allclose(ones, 0.0)  # the carry started at one, not zero
    with pytest.raises(TypeError, match=r"`carry_init` \(=3\) must be an initializer"):
        layer.cell.initialize_carry((B, N), carry_init=3)


def test_gated_params_read_and_written_as_in_linen():
    """``to_gated_params`` / ``from_gated_params``: same names, same trees, linen and NNX."""
    layer = _make(GatedRNN, 3, 4, 2, use_bias=True, param_dtype=F64)
    p = to_gated_params(layer)
    for source in (layer.cell, nnx.state(layer.cell, nnx.Param), nnx.RNN(layer.cell)):
        q = to_gated_params(source)
        for a, b in zip(q, p, strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(p.w_c, layer.cell.ic.kernel[...].T)  # W_c = ic.kernel.T
    np.testing.assert_array_equal(p.b_x, layer.cell.ix.bias[...])
    # the linen and NNX trees of the same GatedParams are the same nested dict
    tree, linen_tree = from_gated_params(p), gnn.from_gated_params(p)
    assert jax.tree.structure(tree) == jax.tree.structure(linen_tree)
    linen_p = gnn.to_gated_params({"params": {"cell": nnx.to_pure_dict(nnx.state(layer.cell))}})
    for a, b in zip(linen_p, p, strict=True):
        np.testing.assert_array_equal(a, b)
    # writing: nnx.update with the tree, or load_gated_params (checked); old methods alias them
    rng = np.random.default_rng(1)
    new = GatedParams(*(jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (4, 3), (4, 4), 4, 4]))
    other = _make(GatedRNN, 3, 4, 3, use_bias=True, param_dtype=F64)
    nnx.update(other.cell, from_gated_params(new))
    assert load_gated_params(layer, new) is layer
    for a, b, c in zip(to_gated_params(other), to_gated_params(layer), new, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
    assert all(np.array_equal(a, b) for a, b in zip(layer.cell.gated_params(), new, strict=True))
    small = GatedParams(new.w_x[:3], new.w_c[:3], new.w_z[:3, :3], new.b_c[:3], new.b_x[:3])
    with pytest.raises(ValueError, match=r"`params.w_c` \(=array of shape \(3, 3\).*\(4, 3\)"):
        load_gated_params(layer, small)
    with pytest.raises(TypeError, match=r"`params` \(=dict with keys"):
        load_gated_params(layer, new._asdict())
    with pytest.raises(TypeError, match=r"`source` \(=Linear\(...\)\)"):
        to_gated_params(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))


def test_gate_bias_init_is_separate():
    cell = GatedCell(
        3,
        4,
        use_bias=True,
        gate_bias_init=nnx.initializers.constant(2.0),
        bias_init=nnx.initializers.constant(-1.0),
        rngs=nnx.Rngs(0),
    )
    np.testing.assert_array_equal(cell.ic.bias[...], 2.0)
    np.testing.assert_array_equal(cell.ix.bias[...], -1.0)
    same = GatedCell(
        3, 4, use_bias=True, bias_init=nnx.initializers.constant(-1.0), rngs=nnx.Rngs(0)
    )
    np.testing.assert_array_equal(same.ic.bias[...], -1.0)  # default: follows bias_init


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_parameters_initialise_and_run(dtype):
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(B, T, N)), dtype)
    layer = GatedRNN(N, M, use_bias=True, param_dtype=dtype, dtype=dtype, rngs=nnx.Rngs(0))
    ref32 = GatedRNN(N, M, use_bias=True, rngs=nnx.Rngs(0))
    for a, b in zip(
        jax.tree.leaves(nnx.state(layer, nnx.Param)),
        jax.tree.leaves(nnx.state(ref32, nnx.Param)),
        strict=True,
    ):
        assert a.dtype == jnp.dtype(dtype)
        np.testing.assert_array_equal(a, b.astype(dtype))  # the float32 draw, rounded
    p = to_gated_params(layer)
    xs64 = np.asarray(xs, np.float64)
    z, ref = np.zeros((B, M)), []
    for t in range(T):  # the cell in float64 NumPy, independent of the package
        x = xs64[:, t]
        c = 1.0 / (
            1.0
            + np.exp(
                -(
                    x @ np.asarray(p.w_c, np.float64).T
                    + z @ np.asarray(p.w_z, np.float64).T
                    + np.asarray(p.b_c, np.float64)
                )
            )
        )
        z = c * z + (1.0 - c) * (
            x @ np.asarray(p.w_x, np.float64).T + np.asarray(p.b_x, np.float64)
        )
        ref.append(z)
    runs = [layer(xs)]
    if dtype == jnp.bfloat16:  # nnx.RNN in half precision once (one more compilation)
        runs.append(nnx.RNN(layer.cell)(xs))
    for y in runs:
        assert y.dtype == jnp.dtype(dtype)
        np.testing.assert_allclose(np.asarray(y, np.float64), np.stack(ref, axis=1), atol=3e-2)


@pytest.mark.parametrize("name", ["time_major", "return_carry", "reverse", "keep_order"])
def test_flags_are_strict_bools(name):
    with pytest.raises(ValueError, match=rf"`{name}` \(='no'\) must be a bool"):
        GatedRNN(3, 4, rngs=nnx.Rngs(0), **{name: "no"})
    layer = _make(GatedRNN, 3, 4, 0)
    with pytest.raises(ValueError, match=rf"`{name}` \(=1\) must be a bool"):
        layer(jnp.ones((2, 5, 3)), **{name: 1})
    with pytest.raises(ValueError, match=r"`use_bias` \(='yes'\) must be a bool"):
        GatedCell(3, 4, use_bias="yes", rngs=nnx.Rngs(0))


def test_method_solves_the_same_recurrence():
    """nnx GatedRNN(method=...) equals the sequential layer (float64) and validates it."""
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 16, 3)))
        seq = GatedRNN(3, 4, rngs=nnx.Rngs(0), param_dtype=jnp.float64)
        for method in ("deer", "quasi_deer", "auto"):
            par = GatedRNN(seq.cell, method=method)
            assert max_rel_error(par(x), seq(x)) < 1e-10
        with pytest.raises(ValueError, match=r"`method` \(=3\)"):
            GatedRNN(seq.cell, method=3)


# ---------------------------------------------------------------------------------------------
# recurrent_gate=False: the minGRU cell, no 'hc' kernel


def _min_gru_loop(p: GatedParams, xs, z0, lengths, reverse):
    """NumPy loop of z = c z + (1 - c) u, c = sigmoid(W_c x + b_c): valid outputs, carry."""
    P = {k: None if v is None else np.asarray(v, np.float64) for k, v in p._asdict().items()}
    outs, carries = [], []
    for b, L in enumerate(lengths):
        seq = np.asarray(xs[b, :L])[::-1] if reverse else np.asarray(xs[b, :L])
        z, ys = np.asarray(z0[b], np.float64), []
        for x in seq:
            c = 1.0 / (1.0 + np.exp(-(P["w_c"] @ x + P["b_c"])))
            z = c * z + (1.0 - c) * (P["w_x"] @ x + P["b_x"])
            ys.append(z)
        outs.append(ys)
        carries.append(z)
    return outs, np.stack(carries)


def test_min_gru_layer_state_outputs_gradients_and_methods():
    """GatedRNN(GatedCell(..., recurrent_gate=False)): no 'hc' in the state; outputs equal a
    NumPy loop, nnx.RNN and the linen layer of the same tree; parameter gradients equal
    gated_scan(GatedParams(w_z=None)) and the linen layer's; DEER equals sequential (float64)."""
    rng = np.random.default_rng(21)
    xs = jnp.asarray(rng.normal(size=(B, T, N)))
    z0 = jnp.asarray(rng.normal(size=(B, M)))
    lengths = [T, 4, 0]
    lens = jnp.asarray(lengths)
    mask = (np.arange(T)[None, :] < lens[:, None])[..., None]
    layer = _make(GatedRNN, N, M, 5, use_bias=True, recurrent_gate=False, param_dtype=F64)
    state = nnx.to_pure_dict(nnx.state(layer, nnx.Param))
    assert sorted(state["cell"]) == ["ic", "ix"] and layer.cell.hc is None
    p = to_gated_params(layer)
    assert p.w_z is None
    for source in (layer.cell, nnx.state(layer.cell, nnx.Param), nnx.RNN(layer.cell)):
        assert all(
            (a is None and b is None) or np.array_equal(a, b)
            for a, b in zip(to_gated_params(source), p, strict=True)
        )

    def loss(ys, carry):
        return jnp.sum(jnp.where(mask, jnp.tanh(ys), 0.0)) + jnp.sum(carry**2)

    def run(model):
        carry, ys = model(xs, initial_carry=z0, seq_lengths=lens, return_carry=True, reverse=True)
        return loss(ys, carry), (carry, ys)

    @nnx.jit
    def grads(model):
        return nnx.value_and_grad(run, has_aux=True)(model)

    (val, (carry, ys)), g = grads(layer)
    outs, ref_carry = _min_gru_loop(p, xs, z0, lengths, reverse=True)
    for b, L in enumerate(lengths):
        assert L == 0 or _rel(ys[b, :L], np.stack(outs[b])) < 1e-12
    assert _rel(carry, ref_carry) < 1e-12
    g_p = to_gated_params(g)
    assert g_p.w_z is None

    def core_loss(p):  # gated_scan over the layer's processing order (valid parts flipped)
        flipped = np.array(xs)
        for b, L in enumerate(lengths):
            flipped[b, :L] = flipped[b, :L][::-1]
        zs = gated_scan(p, jnp.asarray(flipped), z0, seq_lengths=lens)
        return loss(zs, zs[:, -1])

    val_core, g_core = jax.value_and_grad(core_loss)(p)
    assert max_rel_error(val, val_core) < 1e-10 and max_rel_error(g_p, g_core) < 1e-10
    linen = gnn.GatedRNN(M, use_bias=True, recurrent_gate=False, param_dtype=F64, reverse=True)
    v = {"params": {"cell": from_gated_params(p)}}
    g_linen = jax.grad(
        lambda v: loss(
            *linen.apply(v, xs, initial_carry=z0, seq_lengths=lens, return_carry=True)[::-1]
        )
    )(v)
    assert max_rel_error(g_p, gnn.to_gated_params(g_linen)) < 1e-10
    slow = nnx.RNN(layer.cell, reverse=True)(xs, initial_carry=z0, seq_lengths=lens)
    for b, L in enumerate(lengths):
        assert L == 0 or _rel(slow[b, :L], ys[b, :L]) < 1e-12
    for method in ("deer",):  # (quasi_deer and auto: the linen test; one scan either way)
        (pv, (pc, _)), pg = grads(GatedRNN(layer.cell, method=method))
        assert max_rel_error(pv, val) < 1e-10 and max_rel_error(pc, carry) < 1e-10
        assert max_rel_error(to_gated_params(pg), g_p) < 1e-10


def test_min_gru_load_round_trip_first_spelling_and_errors():
    rng = np.random.default_rng(8)
    new = GatedParams(*(jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (4, 3)]))
    tree = from_gated_params(new)
    assert sorted(tree) == ["ic", "ix"]
    first = GatedRNN(3, 4, recurrent_gate=False, param_dtype=F64, rngs=nnx.Rngs(0))
    abstract = nnx.eval_shape(
        lambda: GatedRNN(GatedCell(3, 4, recurrent_gate=False, param_dtype=F64, rngs=nnx.Rngs(1)))
    )
    assert load_gated_params(abstract, new) is abstract
    nnx.update(first.cell, tree)
    for layer in (first, abstract):
        back = to_gated_params(layer)
        assert back.w_z is None and back.b_c is None
        np.testing.assert_array_equal(back.w_x, new.w_x)
        np.testing.assert_array_equal(back.w_c, new.w_c)
    again = from_gated_params(to_gated_params(first))
    assert jax.tree.structure(again) == jax.tree.structure(tree)
    xs = jnp.asarray(rng.normal(size=(2, 5, 3)))
    assert _rel(first(xs), gated_scan(new, xs)) < 1e-13
    assert _rel(abstract(xs), gated_scan(new, xs)) < 1e-13
    full = GatedParams(new.w_x, new.w_c, jnp.eye(4))
    with pytest.raises(ValueError, match=r"`params.w_z` \(=array of shape \(4, 4\).* None"):
        load_gated_params(first, full)
    with pytest.raises(ValueError, match=r"`params.w_z` \(=None\) must be an array of shape"):
        load_gated_params(_make(GatedRNN, 3, 4, 0, param_dtype=F64), new)
    for bad in ("no", 1, None):
        with pytest.raises(ValueError, match=r"`recurrent_gate` \(=.*\) must be a bool"):
            GatedCell(3, 4, recurrent_gate=bad, rngs=nnx.Rngs(0))
        with pytest.raises(ValueError, match=r"`recurrent_gate` \(=.*\) must be a bool"):
            GatedRNN(3, 4, recurrent_gate=bad, rngs=nnx.Rngs(0))


def test_min_gru_half_precision_parameters():
    xs = jnp.asarray(np.random.default_rng(4).normal(size=(2, 5, 3)), jnp.bfloat16)
    layer = GatedRNN(
        3,
        4,
        recurrent_gate=False,
        use_bias=True,
        param_dtype=jnp.bfloat16,
        dtype=jnp.bfloat16,
        rngs=nnx.Rngs(0),
    )
    state = nnx.to_pure_dict(nnx.state(layer, nnx.Param))
    assert sorted(state["cell"]) == ["ic", "ix"]
    assert {a.dtype for a in jax.tree.leaves(state)} == {jnp.dtype(jnp.bfloat16)}
    p = to_gated_params(layer)
    outs, _ = _min_gru_loop(p, np.asarray(xs, np.float64), np.zeros((2, 4)), [5, 5], False)
    y = layer(xs)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, np.float64), np.asarray(outs), atol=3e-2)
