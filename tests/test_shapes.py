"""Convolution shape arithmetic against JAX itself: eval_shape, lowering, and running the op."""

from __future__ import annotations

import math
import random
from typing import NamedTuple

import jax
import jax.numpy as jnp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax import lax

import gated_jax as gj
from gated_jax import shapes as S
from gated_jax.lab import shapes as V


def sds(shape):
    return jax.ShapeDtypeStruct(tuple(shape), jnp.float32)


def jax_conv_shape(lhs, rhs, *args, **kw):
    """``jax.eval_shape`` of ``lax.conv_general_dilated``: a shape tuple, or the exception."""
    try:
        out = jax.eval_shape(
            lambda x, w: lax.conv_general_dilated(x, w, *args, **kw), sds(lhs), sds(rhs)
        )
    except Exception as e:  # JAX raises ValueError, TypeError, RuntimeError, ...
        return e
    return tuple(out.shape)


def jax_lowers(lhs, rhs, *args, **kw) -> bool:
    """Whether XLA accepts the op (lowering runs the StableHLO verifier; no compilation)."""
    try:
        jax.jit(lambda x, w: lax.conv_general_dilated(x, w, *args, **kw)).lower(sds(lhs), sds(rhs))
    except Exception:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# generated configs


@st.composite
def conv_configs(draw, max_size=12):
    """A convolution config that is valid up to padding (explicit pairs may crop too much)."""
    n = draw(st.integers(0, 3))
    letters = list("HWD"[:n])
    groups = draw(st.integers(1, 3))
    fgc, bgc = draw(st.sampled_from([(groups, 1), (1, groups)]))
    in_f = draw(st.integers(0, 3))
    feat = in_f * fgc
    out_f = fgc * bgc * draw(st.integers(0, 3))
    batch = bgc * draw(st.integers(0, 3))
    sizes = [draw(st.integers(0, max_size)) for _ in range(n)]
    kernel = [draw(st.integers(1, 5)) for _ in range(n)]
    strides = tuple(draw(st.integers(1, 3)) for _ in range(n))
    lhs_dil = draw(st.none() | st.tuples(*[st.integers(1, 3)] * n))
    rhs_dil = draw(st.none() | st.tuples(*[st.integers(1, 3)] * n))
    string_ok = lhs_dil is None or all(d == 1 for d in lhs_dil)
    pad_pairs = st.lists(
        st.tuples(st.integers(-4, 5), st.integers(-4, 5)), min_size=n, max_size=n
    ).map(tuple)
    pad_strings = st.sampled_from(["SAME", "same", "Same_Lower", "SAME_LOWER", "VALID", "valid"])
    padding = draw(pad_strings | pad_pairs) if string_ok else draw(pad_pairs)

    kind = draw(st.sampled_from(["none", "strings", "cdn"]))
    specs = None
    if kind != "none":
        specs = (
            "".join(draw(st.permutations(["N", "C", *letters]))),
            "".join(draw(st.permutations(["O", "I", *letters]))),
            "".join(draw(st.permutations(["N", "C", *letters]))),
        )
    lhs, rhs, dn = V.lay_out(specs, sizes, kernel, batch, feat, out_f, in_f, as_cdn=kind == "cdn")
    kw = dict(
        lhs_dilation=lhs_dil,
        rhs_dilation=rhs_dil,
        dimension_numbers=dn,
        feature_group_count=fgc,
        batch_group_count=bgc,
    )
    return lhs, rhs, strides, padding, kw


def check_against_eval_shape(cfg):
    lhs, rhs, strides, padding, kw = cfg
    expected = jax_conv_shape(lhs, rhs, strides, padding, **kw)
    if isinstance(expected, Exception):
        with pytest.raises(ValueError):
            S.conv_output_shape(lhs, rhs, strides, padding, **kw)
    else:
        got = S.conv_output_shape(lhs, rhs, strides, padding, **kw)
        assert got == expected, cfg
        assert all(type(d) is int for d in got)


# Each hypothesis example checks a batch of configs drawn from its seed: the same thousands of
# configs without hypothesis's per-example overhead (a few ms, more than an eval_shape).
BATCH = 20


@settings(max_examples=2000 // BATCH, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**63))
def test_conv_output_shape_equals_eval_shape_2000_configs(seed):
    """Cheap generation (one hypothesis draw, the rest from a seeded RNG): thousands of configs."""
    rng = random.Random(seed)
    for _ in range(BATCH):
        check_against_eval_shape(V.random_conv_config(rng))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(conv_configs())
def test_conv_output_shape_equals_eval_shape(cfg):
    lhs, rhs, strides, padding, kw = cfg
    expected = jax_conv_shape(lhs, rhs, strides, padding, **kw)
    if isinstance(expected, Exception):
        with pytest.raises(ValueError):
            S.conv_output_shape(lhs, rhs, strides, padding, **kw)
    else:
        got = S.conv_output_shape(lhs, rhs, strides, padding, **kw)
        assert got == expected
        assert all(type(d) is int for d in got)


def test_conv_output_shape_equals_running_the_op():
    """Twelve seeded configs run for real (each shape compiles once, so no hypothesis here)."""
    rng = random.Random(7)
    ran = 0
    while ran < 12:
        lhs, rhs, strides, padding, kw = V.random_conv_config(rng, max_size=7)
        try:
            expected = S.conv_output_shape(lhs, rhs, strides, padding, **kw)
        except ValueError:
            continue  # a too-negative padding; covered by the eval_shape properties
        x = jnp.ones(lhs, jnp.float32)
        w = jnp.ones(rhs, jnp.float32)
        y = lax.conv_general_dilated(x, w, strides, padding, **kw)
        assert y.shape == expected, (lhs, rhs, strides, padding, kw)
        ran += 1


def test_seed_1_1a_is_4x5_and_runs():
    # 10x11 input, 3x3 kernel, stride 2, no padding.
    assert S.conv_output_shape((1, 1, 10, 11), (1, 1, 3, 3), (2, 2), "VALID") == (1, 1, 4, 5)
    assert S.conv_output_shape((1, 1, 10, 11), (1, 1, 3, 3), (2, 2), ((0, 0), (0, 0))) == (
        1,
        1,
        4,
        5,
    )
    assert (S.conv_output_size(10, 3, stride=2), S.conv_output_size(11, 3, stride=2)) == (4, 5)
    y = lax.conv_general_dilated(jnp.ones((1, 1, 10, 11)), jnp.ones((1, 1, 3, 3)), (2, 2), "VALID")
    assert y.shape == (1, 1, 4, 5)
    # The seed's own arithmetic, (H - (K - 2)) / S, is not the rule: it disagrees elsewhere.
    wrong = [(h, k, s) for h in range(1, 30) for k in range(1, 6) for s in range(1, 4)]
    disagree = [
        (h, k, s)
        for h, k, s in wrong
        if h >= k and math.floor((h - (k - 2)) / s) != S.conv_output_size(h, k, stride=s)
    ]
    assert (12, 3, 3) in disagree and len(disagree) > 50


def test_seed_1_1b_general_formula():
    """C x H x W input, F filters of C x K x K, padding P, stride S, dilation D -> F x H1 x W1."""
    rng = random.Random(0)
    for trial in range(1500):
        c, f = rng.randint(1, 4), rng.randint(1, 4)
        h, w = rng.randint(0, 20), rng.randint(0, 20)
        k, p, s, d = rng.randint(1, 5), rng.randint(0, 3), rng.randint(1, 4), rng.randint(1, 3)
        keff = k + (k - 1) * (d - 1)
        h1 = max(0, math.floor((h + 2 * p - keff) / s) + 1)
        w1 = max(0, math.floor((w + 2 * p - keff) / s) + 1)
        lhs, rhs = (1, c, h, w), (f, c, k, k)
        args = ((s, s), ((p, p), (p, p)))
        got = S.conv_output_shape(lhs, rhs, *args, rhs_dilation=(d, d))
        assert got == (1, f, h1, w1)
        if trial % 10 == 0:
            assert got == jax_conv_shape(lhs, rhs, *args, rhs_dilation=(d, d))
        assert S.conv_output_size(h, k, stride=s, padding=p, dilation=d) == h1


@settings(max_examples=300)
@given(
    st.integers(0, 40),
    st.integers(1, 6),
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(1, 3),
    st.sampled_from(["SAME", "SAME_LOWER", "VALID", 0, 2, (1, 0), (-1, 3), (0, -2)]),
)
def test_conv_output_size_equals_eval_shape(n, k, s, d, ld, padding):
    if isinstance(padding, str) and ld != 1:
        with pytest.raises(ValueError, match="input_dilation"):
            S.conv_output_size(n, k, stride=s, padding=padding, dilation=d, input_dilation=ld)
        return
    if isinstance(padding, str):
        pads = padding
    else:
        pads = [padding if isinstance(padding, tuple) else (padding, padding)]
    expected = jax_conv_shape((1, 1, n), (1, 1, k), (s,), pads, (ld,), (d,))
    call = lambda: S.conv_output_size(  # noqa: E731
        n, k, stride=s, padding=padding, dilation=d, input_dilation=ld
    )
    if isinstance(expected, Exception):
        with pytest.raises(ValueError, match="padding"):
            call()
    else:
        assert call() == expected[2]


def test_shape_of_traced_arrays_under_jit_and_vmap():
    w = jnp.ones((4, 3, 3, 3))

    def f(x):
        out = lax.conv_general_dilated(x, w, (2, 1), "SAME", dimension_numbers=None)
        assert out.shape == S.conv_output_shape(x.shape, w.shape, (2, 1), "SAME")
        return out

    jax.jit(f)(jnp.ones((2, 3, 9, 8)))
    jax.vmap(f)(jnp.ones((5, 1, 3, 9, 8)))


# ----------------------------------------------------------------------------------------------
# rejected configs: one mutation of a valid config, with the argument the message must name

BASE = dict(
    lhs=(2, 4, 10, 11),
    rhs=(6, 2, 3, 3),
    strides=(2, 1),
    padding=((1, 1), (0, 2)),
    kw=dict(feature_group_count=2),
)


def mutated(**changes):
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    kw = changes.pop("kw", {})
    cfg.update(changes)
    cfg["kw"].update(kw)
    return cfg["lhs"], cfg["rhs"], cfg["strides"], cfg["padding"], cfg["kw"]


class Rejected(NamedTuple):
    """One mutation of BASE, the argument our message must name, and whether eval_shape lets
    the config through (so that only XLA, later, would refuse it)."""

    change: dict
    name: str
    eval_shape_accepts: bool


REJECTED_RAW = [
    (dict(strides=(0, 1)), "window_strides", True),
    (dict(strides=(2, -1)), "window_strides", True),
    (dict(rhs=(6, 2, 0, 3)), "rhs_shape", True),
    (dict(kw=dict(lhs_dilation=(2, 2, 2))), "lhs_dilation", True),
    (dict(kw=dict(lhs_dilation=(2,))), "lhs_dilation", True),
    (dict(kw=dict(rhs_dilation=(1, 2, 3))), "rhs_dilation", True),
    (
        dict(
            kw=dict(
                feature_group_count=1,
                dimension_numbers=lax.ConvDimensionNumbers(
                    (0, 0, 2, 3), (0, 1, 2, 3), (0, 1, 2, 3)
                ),
            )
        ),
        "dimension_numbers",
        True,
    ),
    (dict(kw=dict(feature_group_count=2.0)), "feature_group_count", True),
    (dict(strides=(2,)), "window_strides", False),
    (dict(strides=(2.0, 1)), "window_strides", True),
    (dict(rhs=(6, 3, 3, 3)), "rhs_shape", False),
    (dict(rhs=(5, 2, 3, 3)), "feature_group_count", False),
    (dict(kw=dict(feature_group_count=3)), "feature_group_count", False),
    (dict(kw=dict(feature_group_count=0)), "feature_group_count", False),
    (
        dict(rhs=(6, 4, 3, 3), kw=dict(feature_group_count=1, batch_group_count=3)),
        "batch_group_count",
        False,
    ),
    (
        dict(rhs=(3, 4, 3, 3), kw=dict(feature_group_count=1, batch_group_count=2)),
        "batch_group_count",
        False,
    ),
    (dict(kw=dict(batch_group_count=2)), "batch_group_count", False),
    (
        dict(rhs=(6, 4, 3, 3), kw=dict(feature_group_count=1, batch_group_count=-1)),
        "batch_group_count",
        False,
    ),
    (dict(padding=((1, 1),)), "padding", False),
    (dict(padding=((1, 1, 1), (0, 0))), "padding", False),
    (dict(padding=((1.0, 1), (0, 0))), "padding", False),
    (dict(padding="FULL"), "padding", False),
    (dict(padding="CIRCULAR"), "padding", False),  # a Flax mode, not a lax one
    (dict(padding=3), "padding", False),
    (dict(padding=((-6, -6), (0, 0))), "padding", False),
    (dict(padding="SAME", kw=dict(lhs_dilation=(2, 1))), "padding", False),
    (dict(kw=dict(lhs_dilation=(0, 1))), "lhs_dilation", False),
    (dict(kw=dict(rhs_dilation=(1, -2))), "rhs_dilation", False),
    (dict(rhs=(6, 2, 3)), "rhs_shape", False),
    (dict(kw=dict(dimension_numbers=("NCHW", "OIHW"))), "dimension_numbers", False),
    (dict(kw=dict(dimension_numbers=("NCHW", "OIHW", "NCWH "))), "dimension_numbers", False),
    (dict(kw=dict(dimension_numbers=("NCHH", "OIHW", "NCHW"))), "dimension_numbers", False),
    (dict(kw=dict(dimension_numbers=("nchw", "oihw", "nchw"))), "dimension_numbers", False),
    (dict(kw=dict(dimension_numbers=("NCHW", "OIHX", "NCHW"))), "dimension_numbers", False),
    (dict(kw=dict(dimension_numbers="NCHW")), "dimension_numbers", False),
]
REJECTED = [Rejected(*r) for r in REJECTED_RAW]


def _rejected_id(r: Rejected) -> str:
    change = dict(r.change)
    change.update(change.pop("kw", {}))
    return ",".join(f"{k}={v!r}" for k, v in change.items())


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # JAX's rule, stride 0
@pytest.mark.parametrize("case", REJECTED, ids=_rejected_id)
def test_rejected_configs_raise_value_error_naming_the_argument(case):
    lhs, rhs, strides, padding, kw = mutated(**case.change)
    with pytest.raises(ValueError, match=rf"^`{case.name}` \(=") as info:
        S.conv_output_shape(lhs, rhs, strides, padding, **kw)
    assert "\n" not in str(info.value)
    expected = jax_conv_shape(lhs, rhs, strides, padding, **kw)
    if case.eval_shape_accepts:
        # eval_shape lets it through (jax 0.10; jax 0.11 already refuses float strides there),
        # but XLA cannot lower it (or JAX's trace refuses it): JAX rejects it at some stage.
        assert isinstance(expected, Exception) or not jax_lowers(lhs, rhs, strides, padding, **kw)
    else:
        assert isinstance(expected, Exception)


def test_messages_carry_the_value():
    with pytest.raises(ValueError, match=r"^`window_strides` \(=\(0, 1\)\) must be "):
        S.conv_output_shape((1, 1, 5, 5), (1, 1, 3, 3), (0, 1), "VALID")
    with pytest.raises(ValueError, match=r"^`feature_group_count` \(=3\) must be "):
        S.conv_output_shape((1, 4, 5, 5), (3, 1, 3, 3), (1, 1), "VALID", feature_group_count=3)
    with pytest.raises(ValueError, match=r"lhs_shape.*negative"):
        S.conv_output_shape((1, -1, 5), (1, 1, 3), (1,), "VALID")
    with pytest.raises(ValueError, match=r"lhs_shape"):
        S.conv_output_shape("abc", (1, 1, 3), (1,), "VALID")
    with pytest.raises(ValueError, match=r"lhs_shape"):
        S.conv_output_shape((1,), (1,), (), "VALID")


def test_zero_size_and_negative_padding_edge_cases():
    cases = [
        ((0, 0, 0), (0, 0, 3), (1,), "SAME"),
        ((1, 1, 0), (1, 1, 3), (2,), "SAME"),
        ((1, 1, 2), (1, 1, 5), (1,), "VALID"),  # kernel larger than input: silently 0
        ((1, 1, 10), (1, 1, 3), (1,), ((-6, -4),)),  # crop to nothing: allowed
        ((1, 1, 2), (1, 1, 1), (1,), ((-1, 0),)),
        ((3, 2), (5, 2), (), ()),  # no spatial dims: a matmul
    ]
    for lhs, rhs, strides, padding in cases:
        assert S.conv_output_shape(lhs, rhs, strides, padding) == jax_conv_shape(
            lhs, rhs, strides, padding
        )
    assert S.conv_output_shape((1, 1, 2), (1, 1, 5), (1,), "VALID") == (1, 1, 0)
    assert S.conv_output_shape(
        (1, 1, 2), (1, 1, 1), (1,), ((-1, 0),), lhs_dilation=(3,)
    ) == jax_conv_shape((1, 1, 2), (1, 1, 1), (1,), ((-1, 0),), lhs_dilation=(3,))


def test_jax_helpers_are_incomplete_and_ours_are_not():
    """Why this module exists: JAX's shape helpers drop dilation and return np.int64."""
    t = lax.conv_general_shape_tuple((1, 1, 10), (1, 1, 3), (1,), "VALID", ("NCH", "OIH", "NCH"))
    assert not all(type(d) is int for d in t)
    ours = S.conv_output_shape((1, 1, 10), (1, 1, 3), (1,), "VALID")
    assert ours == tuple(int(d) for d in t) and all(type(d) is int for d in ours)
    lax_says = lax.conv_transpose_shape_tuple(
        (1, 10, 1), (3, 1, 1), (2,), "VALID", ("NHC", "HIO", "NHC")
    )
    real = jax.eval_shape(
        lambda x, w: lax.conv_transpose(x, w, (2,), "VALID", rhs_dilation=(2,)),
        sds((1, 10, 1)),
        sds((3, 1, 1)),
    ).shape
    assert int(lax_says[1]) == 21 and real[1] == 23
    assert S.conv_transpose_output_shape((1, 10, 1), (3, 1, 1), (2,), "VALID", (2,)) == real


# ----------------------------------------------------------------------------------------------
# padding_pairs


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.integers(0, 30), st.integers(1, 6), st.integers(1, 4), st.integers(1, 3)),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from(["SAME", "same", "SAME_LOWER", "VALID"]),
)
def test_padding_pairs_strings_equal_lax(dims, mode):
    ins, ks, ss, ds = (tuple(c) for c in zip(*dims, strict=True))
    keff = [(k - 1) * d + 1 for k, d in zip(ks, ds, strict=True)]
    expected = tuple(tuple(p) for p in lax.padtype_to_pads(ins, keff, ss, mode))
    assert S.padding_pairs(mode, ins, ks, ss, ds) == expected


def test_padding_pairs_flax_modes_ints_and_pairs():
    assert S.padding_pairs("CIRCULAR", (7, 7), (3, 4), (1, 1)) == ((1, 1), (1, 2))
    assert S.padding_pairs("reflect", (7,), (3,), (1,), (2,)) == ((2, 2),)
    assert S.padding_pairs("CAUSAL", (7,), (3,), (1,), (2,)) == ((4, 0),)
    assert S.padding_pairs(2, (7, 7), (3, 3), (1, 1)) == ((2, 2), (2, 2))
    assert S.padding_pairs([1, (0, 2)], (7, 7), (3, 3), (1, 1)) == ((1, 1), (0, 2))
    with pytest.raises(ValueError, match="padding"):
        S.padding_pairs("CAUSAL", (7, 7), (3, 3), (1, 1))
    with pytest.raises(ValueError, match="padding"):
        S.padding_pairs("FULL", (7,), (3,), (1,))
    with pytest.raises(ValueError, match="padding"):
        S.padding_pairs([1, 2, 3], (7, 7), (3, 3), (1, 1))
    with pytest.raises(ValueError, match="strides"):
        S.padding_pairs("SAME", (7,), (3,), (0,))


# ----------------------------------------------------------------------------------------------
# conv_transpose


@st.composite
def transpose_configs(draw):
    n = draw(st.integers(0, 3))
    cin, cout = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sizes = [draw(st.integers(0, 9)) for _ in range(n)]
    kernel = [draw(st.integers(1, 5)) for _ in range(n)]
    strides = tuple(draw(st.integers(1, 3)) for _ in range(n))
    rhs_dil = draw(st.none() | st.tuples(*[st.integers(1, 3)] * n))
    consistent = draw(st.booleans())
    tk = draw(st.booleans())
    pads = st.lists(st.tuples(st.integers(-2, 4), st.integers(-2, 4)), min_size=n, max_size=n)
    padding = draw(st.sampled_from(["SAME", "VALID", "same", "SAME_LOWER"]) | pads.map(tuple))
    use_dn = draw(st.booleans())
    if use_dn:
        letters = list("XYZ"[:n])
        lhs_spec = "".join(draw(st.permutations(["N", "C", *letters])))
        rhs_spec = "".join(draw(st.permutations(["O", "I", *letters])))
        out_spec = "".join(draw(st.permutations(["N", "C", *letters])))
        order = [c for c in rhs_spec if c not in "OI"]
        size_of = dict(zip(order, sizes, strict=True)) | {"N": 2, "C": cin}
        io = {"I": cout, "O": cin} if tk else {"I": cin, "O": cout}
        k_of = dict(zip(order, kernel, strict=True)) | io
        lhs = tuple(size_of[c] for c in lhs_spec)
        rhs = tuple(k_of[c] for c in rhs_spec)
        dn = (lhs_spec, rhs_spec, out_spec)
    else:
        lhs = (2, *sizes, cin)
        rhs = (*kernel, cout, cin) if tk else (*kernel, cin, cout)
        dn = None
    return lhs, rhs, strides, padding, rhs_dil, dn, tk, consistent


@settings(max_examples=1000 // BATCH, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**63))
def test_conv_transpose_output_shape_equals_eval_shape_1000_configs(seed):
    rng = random.Random(seed)
    for _ in range(BATCH):
        lhs, rhs, strides, padding, kw = V.random_transpose_config(rng)
        expected = V.jax_conv_transpose_outcome(lhs, rhs, strides, padding, **kw)
        if isinstance(expected, tuple):
            got = S.conv_transpose_output_shape(lhs, rhs, strides, padding, **kw)
            assert got == expected, (lhs, rhs, strides, padding, kw)
        else:
            with pytest.raises(ValueError):
                S.conv_transpose_output_shape(lhs, rhs, strides, padding, **kw)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(transpose_configs())
def test_conv_transpose_output_shape_equals_eval_shape(cfg):
    lhs, rhs, strides, padding, rhs_dil, dn, tk, consistent = cfg
    kw = dict(
        rhs_dilation=rhs_dil,
        dimension_numbers=dn,
        transpose_kernel=tk,
        use_consistent_padding=consistent,
    )
    try:
        expected = jax.eval_shape(
            lambda x, w: lax.conv_transpose(x, w, strides, padding, **kw), sds(lhs), sds(rhs)
        ).shape
    except Exception:
        with pytest.raises(ValueError):
            S.conv_transpose_output_shape(lhs, rhs, strides, padding, **kw)
        return
    assert S.conv_transpose_output_shape(lhs, rhs, strides, padding, **kw) == tuple(expected)


def test_conv_transpose_pytorch_convention():
    """PyTorch ConvTranspose1d(k, stride s, padding p): (H - 1) s - 2p + (k - 1) d + 1."""
    for h, k, s, p, d in [(5, 3, 2, 1, 1), (7, 4, 3, 0, 2), (1, 5, 1, 2, 1), (6, 2, 2, 0, 3)]:
        got = S.conv_transpose_output_shape(
            (1, h, 1),
            (k, 1, 1),
            (s,),
            ((p, p),),
            rhs_dilation=(d,),
            transpose_kernel=True,
            use_consistent_padding=True,
        )
        assert got[1] == (h - 1) * s - 2 * p + (k - 1) * d + 1


def test_conv_transpose_rejections_name_the_argument():
    with pytest.raises(ValueError, match="strides"):
        S.conv_transpose_output_shape((1, 5, 1), (3, 1, 1), (0,), "SAME")
    with pytest.raises(ValueError, match="strides"):
        S.conv_transpose_output_shape((1, 5, 1), (3, 1, 1), (1, 1), "SAME")
    with pytest.raises(ValueError, match="padding"):
        S.conv_transpose_output_shape((1, 5, 1), (3, 1, 1), (2,), "same")
    with pytest.raises(ValueError, match="padding"):
        S.conv_transpose_output_shape(
            (1, 5, 1), (3, 1, 1), (2,), [[1, 1]], use_consistent_padding=True
        )
    with pytest.raises(ValueError, match="rhs_shape"):
        S.conv_transpose_output_shape((1, 5, 1), (0, 1, 1), (2,), "SAME")
    with pytest.raises(ValueError, match="dimension_numbers"):
        S.conv_transpose_output_shape((1, 5, 1, 1, 1, 1), (3, 1, 1, 1, 1, 1), (1,) * 4, "SAME")


def test_bools_are_not_integers():
    with pytest.raises(ValueError, match="stride"):
        gj.conv_output_size(10, 3, stride=True)


def test_linen_list_padding_pairs_are_accepted_like_flax():
    import flax.linen as nn

    mod = nn.Conv(3, (3, 3), padding=[[1, 2], [0, 0]])
    x = jnp.ones((2, 10, 10, 2))
    expected = jax.eval_shape(lambda x: mod.init_with_output(jax.random.key(0), x)[0], x).shape
    assert gj.flax_conv_output_shape(mod, x.shape) == tuple(expected) == (2, 11, 8, 3)


def test_receptive_field_misspelt_layer_field_is_a_value_error():
    with pytest.raises(ValueError, match=r"layers\[0\]"):
        gj.receptive_field([{"kernal": 3}])


def test_verify_rows_of_the_shapes_pass():
    """The ``gated-jax verify`` rows of the shape rules and the framework ports (float64)."""
    with jax.enable_x64(True):
        rows = V.checks(seed=1)
    formulas = [row.formula for row in rows]
    assert len(set(formulas)) == len(formulas), "each row checks its own formula"
    assert {row.capability for row in rows} == {"shapes"}
    ports = [r for r in rows if any(f in r.formula for f in ("PyTorch", "Keras", "ONNX"))]
    assert len(ports) == 3 and all(r.cases == 4 for r in ports), ports  # 4 calls per framework
    for row in rows:
        assert row.ok and row.cases >= 1, row
