"""gated_jax.conv: closed-form convolution derivatives against JAX autodiff (float64).

Compilation is the cost here: every randomized config is checked inside ONE jitted program
(closed form and autodiff reference together); the jaxpr-inspection sweep needs no compilation
and covers many more configs.
"""

import collections
import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import gated_jax
import gated_jax as gj
from gated_jax import conv
from gated_jax.lab import conv as vconv

NWC = ("NWC", "OIW", "NWC")


def _case(seed, **kw):
    return vconv.random_case(np.random.default_rng(seed), **kw)


def _args(case):
    return (case.window_strides, case.padding)


def _close(a, b, rtol=1e-12):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=rtol * 10)


# ----------------------------------------------------------------------------------------------
# the seed's example, 1.1(c)(i)-(iv), with indices written out by hand (1-based as in the seed)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_example():
    rng = np.random.default_rng(11)
    return rng.standard_normal((5, 2)), rng.standard_normal((1, 2, 3))


def _x1(x, t, c):  # the seed's 1-based x[t][c]
    return x[t - 1, c - 1]


def test_seed_i_output_shape_and_formula(seed_example):
    x, w = seed_example
    y = conv.conv1d(jnp.asarray(x), jnp.asarray(w), stride=2)
    assert y.shape == (2, 1)
    # fw(x)[i, j] = sum_{m=-1}^{1} sum_{c=1}^{2} x[2i+m][c] W[1]^T[m+2][c], i in {1, 2}, j = 1
    want = np.array(
        [
            [sum(_x1(x, 2 * i + m, c) * w[0, c - 1, m + 2 - 1] for m in (-1, 0, 1) for c in (1, 2))]
            for i in (1, 2)
        ]
    )
    _close(y, want, 1e-14)


def test_seed_ii_weight_jacobian(seed_example):
    x, w = seed_example
    jw = conv.conv_weight_jacobian(
        jnp.asarray(x)[None], w.shape, (2,), "VALID", dimension_numbers=NWC
    )
    assert jw.shape == (1, 2, 1) + (1, 2, 3)
    jw = np.asarray(jw)
    # d fw / dW [i, j, k, l, m] = x[m + 2(i-1)][l] (1-based), times delta_jk (one filter here)
    for i in (1, 2):
        for l in (1, 2):
            for m in (1, 2, 3):
                assert jw[0, i - 1, 0, 0, l - 1, m - 1] == _x1(x, m + 2 * (i - 1), l)
    ref = jax.jacrev(lambda w_: conv.conv1d(jnp.asarray(x), w_, stride=2))(jnp.asarray(w))
    _close(jw[0], ref, 0)


def test_seed_iii_input_jacobian_is_zero_outside_windows(seed_example):
    x, w = seed_example
    ji = conv.conv_input_jacobian(jnp.asarray(w), (1, 5, 2), (2,), "VALID", dimension_numbers=NWC)
    assert ji.shape == (1, 2, 1) + (1, 5, 2)
    ji = np.asarray(ji)
    seed_literal_out_of_range = 0
    for i in (1, 2):
        for k in range(1, 6):
            for l in (1, 2):
                tap = k - 2 * (i - 1)  # the seed's W[1]^T[k - 2(i-1)][l], 1-based tap
                if 1 <= tap <= 3:
                    assert ji[0, i - 1, 0, 0, k - 1, l - 1] == w[0, l - 1, tap - 1]
                else:
                    seed_literal_out_of_range += 1
                    assert ji[0, i - 1, 0, 0, k - 1, l - 1] == 0.0
    # 2 windows x 2 positions outside each x 2 channels: the seed's index is meaningless there
    assert seed_literal_out_of_range == 8
    ref = jax.jacrev(lambda x_: conv.conv1d(x_, jnp.asarray(w), stride=2))(jnp.asarray(x))
    _close(ji[0, :, :, 0], ref, 0)


def test_seed_iv_weight_grad_is_the_two_terms(seed_example):
    x, w = seed_example
    g = np.array([[0.7], [-1.3]])  # dl/dfw(x), shape (2, 1)
    dw = conv.conv_weight_grad(
        jnp.asarray(x)[None], jnp.asarray(g)[None], w.shape, (2,), "VALID", dimension_numbers=NWC
    )
    dw = np.asarray(dw)
    # dl/dW[k, l, m] = g[1][1] x[m][l] + g[2][1] x[m+2][l] (1-based; the seed's g[1][2] is g[2][1])
    for l in (1, 2):
        for m in (1, 2, 3):
            want = g[0, 0] * _x1(x, m, l) + g[1, 0] * _x1(x, m + 2, l)
            assert dw[0, l - 1, m - 1] == pytest.approx(want, rel=1e-14)
    _, vjp = jax.vjp(lambda w_: conv.conv1d(jnp.asarray(x), w_, stride=2), jnp.asarray(w))
    _close(dw, vjp(jnp.asarray(g))[0])


# ----------------------------------------------------------------------------------------------
# randomized configs: every feature of lax.conv_general_dilated
# ----------------------------------------------------------------------------------------------


def test_random_configs_cover_every_feature():
    cases = [_case(s) for s in range(60)]
    assert {len(c.window_strides) for c in cases} == {1, 2, 3}
    assert any(c.feature_group_count > 1 for c in cases)
    assert any(c.batch_group_count > 1 for c in cases)
    assert any(max(c.lhs_dilation) > 1 for c in cases)
    assert any(max(c.rhs_dilation) > 1 for c in cases)
    assert any(max(c.window_strides) > 1 for c in cases)
    assert {"VALID", "SAME", "SAME_LOWER"} <= {
        c.padding for c in cases if isinstance(c.padding, str)
    }
    assert any(not isinstance(c.padding, str) and min(map(min, c.padding)) < 0 for c in cases)
    assert any(c.dimension_numbers[0][:2] != "NC" for c in cases)


def _count_primitives(fn, *args):
    eqns = jax.make_jaxpr(fn)(*args).jaxpr.eqns
    return collections.Counter(e.primitive.name for e in eqns)


def test_each_gradient_is_exactly_one_convolution():
    allowed = {"conv_general_dilated", "reshape", "transpose", "rev", "convert_element_type"}
    # where XLA:CPU would abort on an input-dilated conv, the zeros are written explicitly
    allowed |= {"broadcast_in_dim", "stack", "concatenate", "slice"}
    for seed in range(80):  # tracing only, no compilation
        case = _case(seed)
        lhs = jax.ShapeDtypeStruct(case.lhs_shape, jnp.float64)
        rhs = jax.ShapeDtypeStruct(case.rhs_shape, jnp.float64)
        g = jax.ShapeDtypeStruct(jax.eval_shape(case.lax_conv, lhs, rhs).shape, jnp.float64)
        wg = functools.partial(
            conv.conv_weight_grad,
            rhs_shape=case.rhs_shape,
            window_strides=case.window_strides,
            padding=case.padding,
            **case.config,
        )
        ig = functools.partial(
            conv.conv_input_grad,
            lhs_shape=case.lhs_shape,
            window_strides=case.window_strides,
            padding=case.padding,
            **case.config,
        )
        for fn, arr in ((wg, lhs), (ig, rhs)):
            prims = _count_primitives(fn, arr, g)
            assert prims["conv_general_dilated"] == 1, (case, prims)
            assert set(prims) <= allowed, (case, prims)


def _compiled_checks(case):
    """One jitted program: closed forms, autodiff references and the adjoint identities."""

    def run(lhs, rhs, g):
        out, vjp = jax.vjp(case.lax_conv, lhs, rhs)
        ref_dl, ref_dw = vjp(g)
        dw = conv.conv_weight_grad(lhs, g, case.rhs_shape, *_args(case), **case.config)
        dl = conv.conv_input_grad(rhs, g, case.lhs_shape, *_args(case), **case.config)
        adjoint = (jnp.vdot(out, g), jnp.vdot(lhs, dl), jnp.vdot(rhs, dw))
        return dict(dw=(dw, ref_dw), dl=(dl, ref_dl), adjoint=adjoint)

    return jax.jit(run)


@settings(max_examples=8)
@given(st.integers(0, 2**31 - 1))
def test_gradients_equal_vjp_and_are_adjoint(seed):
    rng = np.random.default_rng(seed)
    case = vconv.random_case(rng, max_size=6)
    lhs, rhs = case.arrays(rng)
    g = jnp.asarray(rng.standard_normal(jax.eval_shape(case.lax_conv, lhs, rhs).shape))
    res = _compiled_checks(case)(lhs, rhs, g)
    for name in ("dw", "dl"):
        got, want = res[name]
        assert got.shape == want.shape and got.dtype == jnp.float64
        assert vconv.max_rel_error(got, want) < 1e-12, (name, case)
    # <conv(x, W), g> = <x, dl/dx> = <W, dl/dW>: the transposes, independently of autodiff
    a, b, c = (float(v) for v in res["adjoint"])
    assert b == pytest.approx(a, rel=1e-10, abs=1e-10)
    assert c == pytest.approx(a, rel=1e-10, abs=1e-10)


@settings(max_examples=5)
@given(st.integers(0, 2**31 - 1))
def test_dense_jacobians_equal_jacrev_and_reproduce_the_conv(seed):
    rng = np.random.default_rng(seed)
    case = vconv.random_case(rng, max_spatial=2, max_size=5)
    lhs, rhs = case.arrays(rng)

    @jax.jit
    def run(lhs, rhs):
        jw = conv.conv_weight_jacobian(lhs, case.rhs_shape, *_args(case), **case.config)
        ji = conv.conv_input_jacobian(rhs, case.lhs_shape, *_args(case), **case.config)
        refs = (
            jax.jacrev(case.lax_conv, argnums=1)(lhs, rhs),
            jax.jacrev(case.lax_conv, argnums=0)(lhs, rhs),
        )
        # y is linear in each argument: contracting the Jacobian with it gives y back
        y_w = jnp.tensordot(jw, rhs, axes=rhs.ndim)
        y_x = jnp.tensordot(ji, lhs, axes=lhs.ndim)
        return (jw, ji), refs, (y_w, y_x), case.lax_conv(lhs, rhs)

    (jw, ji), (rw, ri), (y_w, y_x), y = run(lhs, rhs)
    assert jw.shape == y.shape + case.rhs_shape and ji.shape == y.shape + case.lhs_shape
    np.testing.assert_array_equal(np.asarray(jw), np.asarray(rw))
    np.testing.assert_array_equal(np.asarray(ji), np.asarray(ri))
    _close(y_w, y)
    _close(y_x, y)


def test_jacobians_are_built_without_autodiff():
    case = _case(3, max_spatial=2, max_size=4)
    lhs, rhs = case.arrays(np.random.default_rng(0))
    for fn, arg, shape in (
        (conv.conv_weight_jacobian, lhs, case.rhs_shape),
        (conv.conv_input_jacobian, rhs, case.lhs_shape),
    ):
        prims = _count_primitives(
            lambda a, fn=fn, shape=shape: fn(a, shape, *_args(case), **case.config), arg
        )
        assert not {"conv_general_dilated", "custom_vjp_call", "transpose_p"} & set(prims)


# ----------------------------------------------------------------------------------------------
# the custom-VJP drop-in under transformations
# ----------------------------------------------------------------------------------------------


CFG = dict(
    window_strides=(2, 1),
    padding=((1, 0), (2, -1)),
    lhs_dilation=(1, 2),
    rhs_dilation=(2, 1),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=2,
)


def _ours(x, w):
    return gated_jax.conv_general_dilated(x, w, **CFG)


def _theirs(x, w):
    return lax.conv_general_dilated(x, w, **CFG)


@pytest.fixture(scope="module")
def xw():
    rng = np.random.default_rng(5)
    return jnp.asarray(rng.standard_normal((3, 7, 5, 4))), jnp.asarray(
        rng.standard_normal((3, 2, 2, 6))
    )


def _loss(f, x, w):
    return jnp.sum(jnp.tanh(f(x, w)) ** 2)


def test_custom_vjp_forward_jit_and_grad_match_lax(xw):
    x, w = xw
    _close(jax.jit(_ours)(x, w), _theirs(x, w), 0)
    got = jax.jit(jax.grad(functools.partial(_loss, _ours), argnums=(0, 1)))(x, w)
    want = jax.grad(functools.partial(_loss, _theirs), argnums=(0, 1))(x, w)
    chex_close = [vconv.max_rel_error(a, b) for a, b in zip(got, want, strict=True)]
    assert max(chex_close) < 1e-13


def test_custom_vjp_uses_the_closed_form(xw):
    x, w = xw
    jaxpr = jax.make_jaxpr(jax.grad(functools.partial(_loss, _ours), argnums=1))(x, w)
    assert any(e.primitive.name.startswith("custom_vjp") for e in jaxpr.jaxpr.eqns)


def test_custom_vjp_vmap_and_second_order_match_lax(xw):
    x, w = xw
    ws = jnp.stack([w, 2.0 * w, -w])
    per = jax.vmap(jax.grad(functools.partial(_loss, _ours), argnums=1), in_axes=(None, 0))
    ref = jax.vmap(jax.grad(functools.partial(_loss, _theirs), argnums=1), in_axes=(None, 0))
    assert vconv.max_rel_error(per(x, ws), ref(x, ws)) < 1e-13

    def second(f):
        # grad of a function of a gradient: differentiates through the closed-form backward
        inner = jax.grad(functools.partial(_loss, f), argnums=0)
        return jax.grad(lambda x, w: jnp.sum(jnp.sin(inner(x, w))), argnums=(0, 1))

    got = jax.jit(second(_ours))(x, w)
    want = jax.jit(second(_theirs))(x, w)
    assert vconv.max_rel_error(got, want) < 1e-12


def test_second_order_runs_through_the_closed_form_again(xw, monkeypatch):
    x, w = xw
    calls = []
    real = conv._weight_grad

    def spy(c, lhs, g, precision, pet, op):
        calls.append(op)
        return real(c, lhs, g, precision, pet, op)

    monkeypatch.setattr(conv, "_weight_grad", spy)
    inner = jax.grad(functools.partial(_loss, _ours), argnums=0)
    jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(jnp.sin(inner(x, w))), argnums=1))(x, w)
    # the backward of the forward conv, then the backward of a backward conv
    assert calls.count(conv._closed_form_op) >= 2


def test_gradient_functions_vmap_over_examples():
    case = _case(7, max_spatial=2, max_size=5)
    rng = np.random.default_rng(1)
    lhs = jnp.asarray(rng.standard_normal((3,) + case.lhs_shape))
    rhs = jnp.asarray(rng.standard_normal((3,) + case.rhs_shape))
    out_shape = jax.eval_shape(case.lax_conv, lhs[0], rhs[0]).shape
    g = jnp.asarray(rng.standard_normal((3,) + out_shape))
    wg = jax.vmap(
        lambda l, g: conv.conv_weight_grad(l, g, case.rhs_shape, *_args(case), **case.config)
    )
    ig = jax.vmap(
        lambda r, g: conv.conv_input_grad(r, g, case.lhs_shape, *_args(case), **case.config)
    )
    got_w, got_i = wg(lhs, g), ig(rhs, g)
    # examples picked in NumPy: an eager jnp index per example compiles a program each
    lhs, rhs, g, got_w, got_i = (np.asarray(a) for a in (lhs, rhs, g, got_w, got_i))
    for b in range(3):
        ref_i, ref_w = jax.vjp(case.lax_conv, lhs[b], rhs[b])[1](g[b])
        assert vconv.max_rel_error(got_w[b], ref_w) < 1e-12
        assert vconv.max_rel_error(got_i[b], ref_i) < 1e-12


def test_float32_keeps_dtype_and_matches_lax():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((2, 3, 9, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((4, 3, 3, 3)), jnp.float32)
    f = lambda fn: jax.jit(jax.grad(lambda x, w: jnp.sum(fn(x, w, (2, 2), "SAME") ** 2), (0, 1)))
    got = f(gated_jax.conv_general_dilated)(x, w)
    want = f(lax.conv_general_dilated)(x, w)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-4)
    jw = conv.conv_weight_jacobian(x[:1, :, :4, :4], w.shape, (2, 2), "SAME")
    assert jw.dtype == jnp.float32


def test_zero_size_output_gives_zero_gradients():
    x = jnp.ones((2, 3, 2))
    w = jnp.ones((4, 3, 5))  # kernel longer than the input: JAX silently gives 0 outputs
    out = lax.conv_general_dilated(x, w, (1,), "VALID")
    assert out.shape == (2, 4, 0)
    g = jnp.zeros(out.shape)
    _, vjp = jax.vjp(lambda x, w: lax.conv_general_dilated(x, w, (1,), "VALID"), x, w)
    ref_dx, ref_dw = vjp(g)
    dw = conv.conv_weight_grad(x, g, w.shape, (1,), "VALID")
    dx = conv.conv_input_grad(w, g, x.shape, (1,), "VALID")
    np.testing.assert_array_equal(dw, ref_dw)
    np.testing.assert_array_equal(dx, ref_dx)
    assert dw.shape == w.shape and dx.shape == x.shape


# ----------------------------------------------------------------------------------------------
# conv1d (the seed's layout)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("padding", [0, 2, (1, 3), (-1, 2), "SAME", "VALID", "same_lower"])
def test_conv1d_matches_lax_with_batch_dims(padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 3, 11, 4)))
    w = jnp.asarray(rng.standard_normal((5, 4, 3)))
    y = conv.conv1d(x, w, stride=2, padding=padding, dilation=2)
    pad = (
        padding
        if isinstance(padding, str)
        else [(padding, padding)]
        if isinstance(padding, int)
        else [padding]
    )
    ref = lax.conv_general_dilated(
        x.reshape(6, 11, 4), w, (2,), pad, rhs_dilation=(2,), dimension_numbers=NWC
    ).reshape(2, 3, -1, 5)
    assert y.shape == ref.shape
    _close(y, ref, 1e-14)


def test_conv1d_gradient_matches_autodiff_of_lax():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((4, 10, 3)))
    w = jnp.asarray(rng.standard_normal((2, 3, 3)))
    got = jax.grad(lambda x, w: jnp.sum(conv.conv1d(x, w, stride=3, padding=1) ** 3), (0, 1))(x, w)
    want = jax.grad(
        lambda x, w: jnp.sum(
            lax.conv_general_dilated(x, w, (3,), [(1, 1)], dimension_numbers=NWC) ** 3
        ),
        (0, 1),
    )(x, w)
    assert vconv.max_rel_error(got, want) < 1e-13


# ----------------------------------------------------------------------------------------------
# bad input: a ValueError naming the argument
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: conv.conv1d(jnp.ones(5), jnp.ones((1, 1, 3))), "x"),
        (lambda: conv.conv1d(jnp.ones((5, 2)), jnp.ones((2, 3))), "w"),
        (lambda: conv.conv1d(jnp.ones((5, 2)), jnp.ones((1, 3, 3))), "w"),
        (lambda: conv.conv1d(jnp.ones((5, 2)), jnp.ones((1, 2, 3)), stride=0), "stride"),
        (lambda: conv.conv1d(jnp.ones((5, 2)), jnp.ones((1, 2, 3)), dilation=1.5), "dilation"),
        (lambda: conv.conv1d(jnp.ones((5, 2)), jnp.ones((1, 2, 3)), padding="bogus"), "padding"),
        (lambda: conv.conv1d(jnp.ones((5, 2)), jnp.ones((1, 2, 3)), padding=(1, 2, 3)), "padding"),
        (
            lambda: gated_jax.conv_general_dilated(
                jnp.ones((1, 3, 8)), jnp.ones((2, 2, 3)), (1,), "SAME"
            ),
            "rhs_shape",
        ),
        (
            lambda: gated_jax.conv_general_dilated(
                jnp.ones((1, 3, 8)), jnp.ones((2, 3, 3, 3)), (1,), "SAME"
            ),
            "rhs_shape",
        ),
        (
            lambda: gated_jax.conv_general_dilated(
                jnp.ones((1, 3, 8)), jnp.ones((2, 3, 3)), (0,), "SAME"
            ),
            "window_strides",
        ),
        (
            lambda: gated_jax.conv_general_dilated(
                jnp.ones((1, 3, 8)), jnp.ones((2, 3, 3)), (1,), "SAME", (2,)
            ),
            "padding",
        ),
        (
            lambda: gated_jax.conv_general_dilated(
                jnp.ones((1, 4, 8)), jnp.ones((3, 2, 3)), (1,), "SAME", feature_group_count=2
            ),
            "feature_group_count",
        ),
        (
            lambda: conv.conv_weight_grad(
                jnp.ones((1, 3, 8)), jnp.ones((1, 2, 5)), (2, 3, 3), (1,), "VALID"
            ),
            "cotangent",
        ),
        (
            lambda: conv.conv_input_grad(
                jnp.ones((2, 3, 3)), jnp.ones((1, 2, 6, 1)), (1, 3, 8), (1,), "VALID"
            ),
            "cotangent",
        ),
        (
            lambda: conv.conv_input_grad(
                jnp.ones((2, 3, 3)), jnp.ones((1, 2, 6)), (1, 3, 8), (1,), [(1, 2, 3)]
            ),
            "padding",
        ),
        (
            lambda: conv.conv_weight_jacobian(jnp.ones((1, 3, 8)), (2, 4, 3), (1,), "VALID"),
            "rhs_shape",
        ),
        (
            lambda: conv.conv_input_jacobian(
                jnp.ones((2, 3, 3)), (1, 3, 8), (1,), "VALID", rhs_dilation=(0,)
            ),
            "rhs_dilation",
        ),
        (
            lambda: conv.conv_input_jacobian(
                jnp.ones((2, 3, 3)),
                (1, 3, 8),
                (1,),
                "VALID",
                dimension_numbers=("NCW", "OIX", "NCW"),
            ),
            "dimension_numbers",
        ),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_verification_rows_pass():
    rows = vconv.checks(0, n_cases=2, conv1d_cases=4)
    assert len(rows) == 7
    assert all(r.ok and r.cases > 0 for r in rows), rows


def test_forward_mode_is_refused_clearly_and_lax_still_works(xw):
    # a jax.custom_vjp function has no JVP rule: JAX says so; the docstring points to lax
    x, w = xw
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jacfwd(_ours, argnums=1)(x[:1], w)
    assert "forward-mode" in gated_jax.conv_general_dilated.__doc__


def test_precision_and_preferred_element_type_pass_through():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((2, 3, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((4, 3, 3)), jnp.float32)
    kw = dict(precision="highest", preferred_element_type=jnp.float64)
    y = gated_jax.conv_general_dilated(x, w, (2,), "SAME", **kw)
    assert y.dtype == jnp.float64
    _close(y, lax.conv_general_dilated(x, w, (2,), "SAME", **kw), 0)

    def loss(f):
        return lambda x, w: jnp.sum(f(x, w, (2,), "SAME", **kw) ** 2)

    got = jax.grad(loss(gated_jax.conv_general_dilated), (0, 1))(x, w)
    want = jax.grad(loss(lax.conv_general_dilated), (0, 1))(x, w)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype == jnp.float32
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# the report section and the benchmark suite (quick sizes)
# ----------------------------------------------------------------------------------------------


def test_report_section_answers_the_seed(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from gated_jax.lab import Context
    from gated_jax.lab import conv as rconv

    md = rconv.section(Context(out_dir=tmp_path, quick=True))
    for part in ("**(i)**", "**(ii)**", "**(iii)**", "**(iv)**", "Similarities and differences"):
        assert part in md
    assert "has shape `(2, 1)`" in md
    assert "**no**" not in md and "8 of the 20 entries" in md
    assert (tmp_path / "conv_jacobians.png").stat().st_size > 1000


def test_bench_suite_quick_table():
    from gated_jax.lab import conv as bconv

    table = bconv.bench(quick=True)
    assert table.title == bconv.BENCH_TITLE
    assert [r[:3] for r in table.rows] == [
        ["NHWC", 1, "backward"],
        ["NHWC", 1, "fwd+bwd"],
        ["NHWC", 2, "backward"],
        ["NHWC", 2, "fwd+bwd"],
    ]
    assert all(r[3] > 0 and r[4] > 0 for r in table.rows)
    # the closed form compiles to the very program autodiff compiles to (ratio 1 by construction)
    assert [r[-1] for r in table.rows] == ["yes"] * 4
    assert any("the true ratio is 1.00 and the spread is timing noise" in n for n in table.notes)
    a, b = (jax.jit(f).lower(jnp.ones(3)).compile() for f in (jnp.sin, jnp.cos))
    again = jax.jit(jnp.sin).lower(jnp.ones(3)).compile()  # a second, separate compilation
    assert bconv._program(a) != bconv._program(b) and bconv._program(a) == bconv._program(again)


def test_conv1d_rejects_float_padding_and_handles_empty_inputs():
    x = jnp.ones((5, 2))
    w = jnp.ones((1, 2, 3))
    with pytest.raises(ValueError, match="padding"):
        gj.conv1d(x, w, padding=(1.7, 0))
    y = gj.conv1d(jnp.ones((3, 0, 2)), w)  # T = 0: a zero-size output per batch element
    assert y.shape == (3, 0, 1)
    y = gj.conv1d(jnp.ones((0, 5, 2)), w)  # empty batch
    assert y.shape == (0, 3, 1)


_XLA_ABORT_CASE = """
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from jax import lax
from gated_jax import conv
from gated_jax.testing import numpy_conv_transpose
rng = np.random.default_rng(0)
x, w = rng.standard_normal((1, 2, 4, 5)), rng.standard_normal((2, 2, 2, 3))
strides, padding = (2, 3), ((1, 1), (0, 0))
g = rng.standard_normal(jax.eval_shape(
    lambda x, w: lax.conv_general_dilated(x, w, strides, padding), x, w).shape)
want = numpy_conv_transpose(g, w, strides, (1, 1), 1, (1, 0), (4, 5))
got = jax.jit(lambda w, g: conv.conv_input_grad(w, g, x.shape, strides, padding))(w, g)
np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
vjp = jax.jit(jax.vjp(lambda x: conv.conv_general_dilated(x, w, strides, padding), x)[1])
np.testing.assert_allclose(vjp(g)[0], want, rtol=1e-12, atol=1e-12)
print("OK")
"""


def test_a_strided_config_that_aborts_xla_runs():
    """XLA:CPU's simplifier aborts the process on this input-dilated conv (jax.grad of the
    strided conv reaches it, jax 0.10); the closed forms write the zeros explicitly there and
    equal the definition. In a subprocess, so a regression is a failed test, not a dead run."""
    proc = subprocess.run(
        [sys.executable, "-c", _XLA_ABORT_CASE], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("OK")
