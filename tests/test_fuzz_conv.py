"""Bad and edge-case input to gated_jax.conv, by category.

Each case is a category of mistake: it must raise a ``ValueError`` / ``TypeError`` from
gated_jax whose one-line message starts `` `name` (=value) must be``, or give the correct
result (checked against ``jax.vjp`` / ``lax.conv_general_dilated``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fuzz import assert_refused
from jax import lax

import gated_jax as gj

X = jnp.asarray(np.random.default_rng(0).standard_normal((2, 4, 9)))  # (N, C, T), float64
W = jnp.asarray(np.random.default_rng(1).standard_normal((6, 2, 3)))  # (O, I, K): 2 groups
G = jnp.ones((2, 6, 4))  # cotangent of the stride-2 VALID output with 2 groups
KW = dict(feature_group_count=2)


class Refused(NamedTuple):
    category: str
    call: Callable[[], Any]
    name: str
    shown: Any


def wgrad(**kw):
    args = dict(lhs=X, cotangent=G, rhs_shape=W.shape, window_strides=(2,), padding="VALID", **KW)
    args.update(kw)
    return lambda: gj.conv_weight_grad(**args)


def igrad(**kw):
    args = dict(rhs=W, cotangent=G, lhs_shape=X.shape, window_strides=(2,), padding="VALID", **KW)
    args.update(kw)
    return lambda: gj.conv_input_grad(**args)


def fwd(*args, **kw):
    return lambda: gj.conv_general_dilated(*args, **kw)


X1, W1 = jnp.ones((5, 2)), jnp.ones((1, 2, 3))  # conv1d's (T, C) and (F, C, K)

REFUSED = [
    Refused(
        "cotangent of the wrong shape",
        wgrad(cotangent=jnp.ones((2, 6, 5))),
        "cotangent",
        jnp.ones((2, 6, 5)),
    ),
    Refused(
        "input-grad cotangent of the wrong rank",
        igrad(cotangent=jnp.ones((6, 4))),
        "cotangent",
        jnp.ones((6, 4)),
    ),
    Refused("kernel shape of the wrong rank", wgrad(rhs_shape=(6, 2)), "rhs_shape", (6, 2)),
    Refused("kernel shape as None", wgrad(rhs_shape=None), "rhs_shape", None),
    Refused("input shape as a string", igrad(lhs_shape="2x4x9"), "lhs_shape", "2x4x9"),
    Refused(
        "channel mismatch",
        fwd(X, jnp.ones((6, 3, 3)), (1,), "VALID", feature_group_count=2),
        "rhs_shape",
        (6, 3, 3),
    ),
    Refused(
        "groups not dividing channels",
        fwd(X, W, (1,), "VALID", feature_group_count=3),
        "feature_group_count",
        3,
    ),
    Refused(
        "zero feature groups in a Jacobian",
        lambda: gj.conv_weight_jacobian(X, W.shape, (1,), "VALID", feature_group_count=0),
        "feature_group_count",
        0,
    ),
    Refused(
        "batch groups not dividing the batch",
        fwd(X, jnp.ones((6, 4, 3)), (1,), "VALID", batch_group_count=3),
        "batch_group_count",
        3,
    ),
    Refused(
        "zero kernel dilation in a Jacobian",
        lambda: gj.conv_input_jacobian(W, X.shape, (1,), "VALID", rhs_dilation=(0,), **KW),
        "rhs_dilation",
        (0,),
    ),
    Refused("float strides", fwd(X, W, (2.0,), "VALID", **KW), "window_strides", (2.0,)),
    Refused("bool strides", fwd(X, W, (True,), "VALID", **KW), "window_strides", (True,)),
    Refused("unknown padding string", fwd(X, W, (1,), "FULL", **KW), "padding", "FULL"),
    Refused("bytes padding", fwd(X, W, (1,), b"SAME", **KW), "padding", b"SAME"),
    Refused("NaN in padding", fwd(X, W, (1,), [(math.nan, 0)], **KW), "padding", ((math.nan, 0),)),
    Refused(
        "bad dimension numbers",
        fwd(X, W, (1,), "VALID", dimension_numbers=("NCW", "OIX", "NCW"), **KW),
        "dimension_numbers",
        ("NCW", "OIX", "NCW"),
    ),
    Refused(
        "traced strides under jit",
        lambda: jax.jit(lambda s: gj.conv_general_dilated(X, W, s, "VALID", **KW))(jnp.array([1])),
        "window_strides",
        None,
    ),
    Refused("conv1d: 1-D input", lambda: gj.conv1d(jnp.ones(5), W1), "x", jnp.ones(5)),
    Refused("conv1d: 2-D kernel", lambda: gj.conv1d(X1, jnp.ones((2, 3))), "w", jnp.ones((2, 3))),
    Refused(
        "conv1d: channel mismatch",
        lambda: gj.conv1d(X1, jnp.ones((1, 3, 3))),
        "w",
        jnp.ones((1, 3, 3)),
    ),
    Refused("conv1d: bool stride", lambda: gj.conv1d(X1, W1, stride=True), "stride", True),
    Refused("conv1d: zero dilation", lambda: gj.conv1d(X1, W1, dilation=0), "dilation", 0),
    Refused("conv1d: string stride", lambda: gj.conv1d(X1, W1, stride="2"), "stride", "2"),
    Refused(
        "conv1d: float padding", lambda: gj.conv1d(X1, W1, padding=(1.7, 0)), "padding", (1.7, 0)
    ),
    Refused("conv1d: bytes padding", lambda: gj.conv1d(X1, W1, padding=b"ab"), "padding", b"ab"),
    Refused("conv1d: None padding", lambda: gj.conv1d(X1, W1, padding=None), "padding", None),
    Refused(
        "conv1d: traced stride",
        lambda: jax.jit(lambda s: gj.conv1d(X1, W1, stride=s))(2),
        "stride",
        None,
    ),
    Refused(
        "conv1d: padding cropping below zero",
        lambda: gj.conv1d(X1, W1, padding=(-3, -3)),
        "padding",
        (-3, -3),
    ),
]


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.category)
def test_refused_with_a_message_naming_the_argument(case):
    if case.shown is None and "traced" in case.category:
        with pytest.raises(ValueError, match=rf"^`{case.name}` \(=.*\) must be "):
            case.call()
        return
    assert_refused(case.call, case.name, case.shown)


def test_categories_are_distinct_and_many():
    assert len({c.category for c in REFUSED}) == len(REFUSED) >= 25


# ----------------------------------------------------------------------------------------------
# correct results: integer and mixed dtypes, lists, NumPy, NaN / Inf, empty inputs


def _vjp(x, w, g, **kw):
    f = lambda x, w: lax.conv_general_dilated(x, w, (2,), "VALID", **kw)  # noqa: E731
    return jax.vjp(f, x, w)[1](g)


def test_integer_cotangent_gives_the_float_gradient():
    g_int = jnp.ones(G.shape, jnp.int32)
    dx_ref, dw_ref = _vjp(X, W, G, **KW)
    dw = gj.conv_weight_grad(X, g_int, W.shape, (2,), "VALID", **KW)
    dx = gj.conv_input_grad(W, g_int, X.shape, (2,), "VALID", **KW)
    assert dw.dtype == dx.dtype == jnp.float64
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12)
    assert float(jnp.abs(dw).max()) > 0.1  # never the int-truncated zeros


def test_integer_operands_everywhere_give_float_results():
    xi, wi, gi = (jnp.asarray(np.round(3 * a)).astype(jnp.int32) for a in (X, W, G))
    dx_ref, dw_ref = _vjp(xi.astype(float), wi.astype(float), gi.astype(float), **KW)
    dw = gj.conv_weight_grad(xi, gi, W.shape, (2,), "VALID", **KW)
    dx = gj.conv_input_grad(wi, gi, X.shape, (2,), "VALID", **KW)
    assert jnp.issubdtype(dw.dtype, jnp.floating) and jnp.issubdtype(dx.dtype, jnp.floating)
    np.testing.assert_array_equal(dw, dw_ref)
    np.testing.assert_array_equal(dx, dx_ref)


@pytest.mark.parametrize("low", [jnp.float16, jnp.bfloat16], ids=["float16", "bfloat16"])
def test_mixed_float_dtypes_promote_as_jax_does(low):
    x32, g_low = X.astype(jnp.float32), G.astype(low)
    dw = gj.conv_weight_grad(x32, g_low, W.shape, (2,), "VALID", **KW)
    assert dw.dtype == jnp.promote_types(jnp.float32, low) == jnp.float32
    _, dw_ref = _vjp(X, W, G, **KW)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-5)
    y = gj.conv_general_dilated(X.astype(low), W.astype(low), (2,), "VALID", **KW)
    assert y.dtype == low


def test_python_lists_and_numpy_arrays_are_arrays():
    x, w = np.asarray(X), np.asarray(W)
    want = lax.conv_general_dilated(X, W, (2,), "VALID", **KW)
    np.testing.assert_array_equal(gj.conv_general_dilated(x, w, (2,), "VALID", **KW), want)
    np.testing.assert_array_equal(
        gj.conv_general_dilated(x.tolist(), w.tolist(), [2], "VALID", **KW), want
    )
    np.testing.assert_array_equal(gj.conv1d(np.ones((5, 2)).tolist(), np.ones((1, 2, 3))), 6.0)


def test_nan_and_inf_values_propagate_as_in_lax():
    x = X.at[0, 1, 3].set(jnp.nan).at[1, 2, 0].set(jnp.inf)
    want = lax.conv_general_dilated(x, W, (2,), "VALID", **KW)
    np.testing.assert_array_equal(gj.conv_general_dilated(x, W, (2,), "VALID", **KW), want)
    _, dw_ref = _vjp(x, W, G, **KW)
    dw = gj.conv_weight_grad(x, G, W.shape, (2,), "VALID", **KW)
    np.testing.assert_array_equal(np.isnan(dw), np.isnan(dw_ref))
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12)


@pytest.mark.parametrize(
    "lhs, rhs",
    [((0, 4, 9), (6, 2, 3)), ((2, 4, 0), (6, 2, 3)), ((2, 0, 9), (0, 0, 3))],
    ids=["empty batch", "zero length", "zero channels"],
)
def test_zero_size_inputs_give_zero_gradients_of_the_right_shape(lhs, rhs):
    kw = KW if rhs[1] else {}
    x, w = jnp.ones(lhs), jnp.ones(rhs)
    y = gj.conv_general_dilated(x, w, (2,), "SAME", **kw)
    assert y.shape == lax.conv_general_dilated(x, w, (2,), "SAME", **kw).shape
    g = jnp.ones(y.shape)
    assert gj.conv_weight_grad(x, g, rhs, (2,), "SAME", **kw).shape == rhs
    assert gj.conv_input_grad(w, g, lhs, (2,), "SAME", **kw).shape == lhs
    dx, dw = jax.grad(lambda x, w: gj.conv_general_dilated(x, w, (2,), "SAME", **kw).sum(), (0, 1))(
        x, w
    )
    assert dx.shape == lhs and dw.shape == rhs and not jnp.any(dx) and not jnp.any(dw)


def test_bad_config_under_vmap_is_refused_before_tracing_reaches_xla():
    with pytest.raises(ValueError, match=r"^`window_strides` \(=\(0,\)\) must be "):
        jax.vmap(lambda x: gj.conv_general_dilated(x, W, (0,), "VALID", **KW))(X[None])
