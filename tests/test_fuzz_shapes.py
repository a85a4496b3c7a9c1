"""Bad and edge-case input to gated_jax.shapes and `gated-jax shape`, by category.

Every case is one category of mistake a user can type. Each asserts one of two outcomes: a
``ValueError`` / ``TypeError`` raised by gated_jax itself (not by JAX, NumPy or Python further
down) whose one-line message starts with the user's argument and its value,
`` `name` (=value) must be ...``; or a correct result, checked against ``jax.eval_shape`` or
the rule written out by hand. The CLI cases exit 2 with one line on stderr.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fuzz import assert_refused
from jax import lax

from gated_jax import shapes as S
from gated_jax.cli import main
from gated_jax.lab import shapes as V


class Refused(NamedTuple):
    """A call gated_jax must refuse, naming argument ``name`` shown as ``shown``."""

    category: str
    call: Callable[[], Any]
    name: str
    shown: Any


def _sds(shape):
    return jax.ShapeDtypeStruct(tuple(shape), jnp.float32)


def eval_conv(lhs, rhs, strides, padding, **kw):
    out = jax.eval_shape(
        lambda x, w: lax.conv_general_dilated(x, w, strides, padding, **kw), _sds(lhs), _sds(rhs)
    )
    return tuple(out.shape)


LHS, RHS = (2, 4, 9, 8), (6, 2, 3, 3)  # feature_group_count=2 is valid for these


def cos(**kw):
    """conv_output_shape of the valid base config with ``kw`` changed."""
    args = dict(
        lhs_shape=LHS, rhs_shape=RHS, window_strides=(1, 1), padding="SAME", feature_group_count=2
    )
    args.update(kw)
    return lambda: S.conv_output_shape(**args)


def conv_module(**kw):
    return nn.Conv(features=4, kernel_size=(3, 3), **kw)


REFUSED = [
    # conv_output_size: non-integers where ints go
    Refused("bytes as padding", lambda: S.conv_output_size(10, 3, padding=b"ab"), "padding", b"ab"),
    Refused("bool as stride", lambda: S.conv_output_size(10, 3, stride=True), "stride", True),
    Refused("float kernel", lambda: S.conv_output_size(10, 3.0), "kernel_size", 3.0),
    Refused("NaN stride", lambda: S.conv_output_size(10, 3, stride=math.nan), "stride", math.nan),
    Refused(
        "inf dilation", lambda: S.conv_output_size(10, 3, dilation=math.inf), "dilation", math.inf
    ),
    Refused("None size", lambda: S.conv_output_size(None, 3), "size", None),
    Refused("string size", lambda: S.conv_output_size("10", 3), "size", "10"),
    Refused("negative size", lambda: S.conv_output_size(-1, 3), "size", -1),
    Refused("zero kernel", lambda: S.conv_output_size(10, 0), "kernel_size", 0),
    Refused(
        "zero input dilation",
        lambda: S.conv_output_size(10, 3, input_dilation=0),
        "input_dilation",
        0,
    ),
    Refused("bool padding", lambda: S.conv_output_size(10, 3, padding=True), "padding", True),
    Refused(
        "NaN padding", lambda: S.conv_output_size(10, 3, padding=math.nan), "padding", math.nan
    ),
    Refused(
        "three-entry padding",
        lambda: S.conv_output_size(10, 3, padding=(1, 2, 3)),
        "padding",
        (1, 2, 3),
    ),
    Refused(
        "unknown padding string",
        lambda: S.conv_output_size(10, 3, padding="FULL"),
        "padding",
        "FULL",
    ),
    Refused(
        "string padding with input dilation",
        lambda: S.conv_output_size(10, 3, padding="SAME", input_dilation=2),
        "padding",
        "SAME",
    ),
    Refused(
        "padding cropping below zero",
        lambda: S.conv_output_size(4, 1, padding=(-3, -3)),
        "padding",
        (-3, -3),
    ),
    Refused(
        "traced stride under jit",
        lambda: jax.jit(lambda s: S.conv_output_size(10, 3, stride=s))(2),
        "stride",
        jax.ShapeDtypeStruct((), jnp.int64),
    ),
    # padding_pairs
    Refused(
        "bytes in padding_pairs",
        lambda: S.padding_pairs(b"SAME", (7,), (3,), (1,)),
        "padding",
        b"SAME",
    ),
    Refused(
        "CAUSAL in 2-D",
        lambda: S.padding_pairs("CAUSAL", (7, 7), (3, 3), (1, 1)),
        "padding",
        "CAUSAL",
    ),
    Refused(
        "padding entries per dim miscounted",
        lambda: S.padding_pairs([1, 2, 3], (7, 7), (3, 3), (1, 1)),
        "padding",
        (1, 2, 3),
    ),
    Refused("None padding", lambda: S.padding_pairs(None, (7,), (3,), (1,)), "padding", None),
    Refused(
        "float in a pair",
        lambda: S.padding_pairs([(1.5, 0)], (7,), (3,), (1,)),
        "padding",
        ((1.5, 0),),
    ),
    Refused(
        "string in_spatial", lambda: S.padding_pairs("SAME", "77", (3,), (1,)), "in_spatial", "77"
    ),
    # conv_output_shape: ranks, channels, groups, sizes
    Refused("ranks differ", cos(rhs_shape=(6, 2, 3)), "rhs_shape", (6, 2, 3)),
    Refused("scalar lhs", cos(lhs_shape=(2,)), "lhs_shape", (2,)),
    Refused(
        "bytes as a shape", cos(lhs_shape=b"\x02\x04\x09\x08"), "lhs_shape", b"\x02\x04\x09\x08"
    ),
    Refused("negative dim", cos(lhs_shape=(2, 4, -9, 8)), "lhs_shape", (2, 4, -9, 8)),
    Refused("channel mismatch", cos(rhs_shape=(6, 4, 3, 3)), "rhs_shape", (6, 4, 3, 3)),
    Refused("groups not dividing features", cos(feature_group_count=3), "feature_group_count", 3),
    Refused("zero feature groups", cos(feature_group_count=0), "feature_group_count", 0),
    Refused("float feature groups", cos(feature_group_count=2.0), "feature_group_count", 2.0),
    Refused("both group counts > 1", cos(batch_group_count=2), "batch_group_count", 2),
    Refused(
        "batch groups not dividing batch",
        cos(rhs_shape=(6, 4, 3, 3), feature_group_count=1, batch_group_count=3),
        "batch_group_count",
        3,
    ),
    Refused("zero-size kernel window", cos(rhs_shape=(6, 2, 0, 3)), "rhs_shape", (6, 2, 0, 3)),
    Refused("zero stride", cos(window_strides=(0, 1)), "window_strides", (0, 1)),
    Refused("float strides", cos(window_strides=(1.0, 1)), "window_strides", (1.0, 1)),
    Refused("strides miscounted", cos(window_strides=(1,)), "window_strides", (1,)),
    Refused(
        "NumPy float strides",
        cos(window_strides=np.array([1.0, 1.0])),
        "window_strides",
        (1.0, 1.0),
    ),
    Refused("int padding where lax wants pairs", cos(padding=1), "padding", 1),
    Refused("Flax-only padding mode", cos(padding="CIRCULAR"), "padding", "CIRCULAR"),
    Refused(
        "dimension numbers of wrong length",
        cos(dimension_numbers=("NCHW", "OIHW")),
        "dimension_numbers",
        ("NCHW", "OIHW"),
    ),
    Refused(
        "dimension numbers with a repeated letter",
        cos(dimension_numbers=("NCHH", "OIHW", "NCHW")),
        "dimension_numbers",
        ("NCHH", "OIHW", "NCHW"),
    ),
    Refused(
        "lhs dilation miscounted",
        cos(lhs_dilation=(2, 2, 2), padding=((0, 0), (0, 0))),
        "lhs_dilation",
        (2, 2, 2),
    ),
    Refused("NaN rhs dilation", cos(rhs_dilation=(math.nan, 1)), "rhs_dilation", (math.nan, 1)),
    # conv_transpose_output_shape
    Refused(
        "transpose: zero stride",
        lambda: S.conv_transpose_output_shape((1, 5, 1), (3, 1, 1), (0,), "SAME"),
        "strides",
        (0,),
    ),
    Refused(
        "transpose: list pairs with consistent padding",
        lambda: S.conv_transpose_output_shape(
            (1, 5, 1), (3, 1, 1), (2,), [[1, 1]], use_consistent_padding=True
        ),
        "padding",
        ([1, 1],),
    ),
    Refused(
        "transpose: lower-case string with stride 2",
        lambda: S.conv_transpose_output_shape((1, 5, 1), (3, 1, 1), (2,), "same"),
        "padding",
        "same",
    ),
    # flax_conv_output_shape: the module's own attribute names
    Refused(
        "Flax zero feature groups",
        lambda: S.flax_conv_output_shape(conv_module(feature_group_count=0), (1, 8, 8, 2)),
        "feature_group_count",
        0,
    ),
    Refused(
        "Flax zero stride",
        lambda: S.flax_conv_output_shape(conv_module(strides=0), (1, 8, 8, 2)),
        "strides",
        0,
    ),
    Refused(
        "Flax zero kernel dilation",
        lambda: S.flax_conv_output_shape(conv_module(kernel_dilation=(1, 0)), (1, 8, 8, 2)),
        "kernel_dilation",
        (1, 0),
    ),
    Refused(
        "Flax input of too few dims",
        lambda: S.flax_conv_output_shape(conv_module(), (8, 2)),
        "input_shape",
        (8, 2),
    ),
    Refused(
        "Flax lower-case Flax mode",
        lambda: S.flax_conv_output_shape(conv_module(padding="circular"), (1, 8, 8, 2)),
        "padding",
        "circular",
    ),
    Refused(
        "not a conv module",
        lambda: S.flax_conv_output_shape(nn.Dense(3), (1, 8)),
        "module",
        "Dense",
    ),
    # explain_conv
    Refused(
        "explain: bytes padding", lambda: S.explain_conv((10,), 3, padding=b"ab"), "padding", b"ab"
    ),
    Refused(
        "explain: two ints as 1-D padding",
        lambda: S.explain_conv((10,), 3, padding=(1, 2)),
        "padding",
        (1, 2),
    ),
    Refused(
        "explain: truthy string flag",
        lambda: S.explain_conv((10,), 3, transposed="no"),
        "transposed",
        "no",
    ),
    Refused(
        "explain: NaN kernel", lambda: S.explain_conv((10,), math.nan), "kernel_size", math.nan
    ),
    Refused(
        "explain: channels not divisible",
        lambda: S.explain_conv((10,), 3, channels=3, feature_group_count=2),
        "channels",
        3,
    ),
    Refused("explain: empty input shape", lambda: S.explain_conv((), 3), "input_shape", ()),
    Refused(
        "explain: kernel per dim miscounted",
        lambda: S.explain_conv((10, 11), (3, 3, 3)),
        "kernel_size",
        (3, 3, 3),
    ),
    # receptive_field
    Refused("receptive field: None layers", lambda: S.receptive_field(None), "layers", None),
    Refused(
        "receptive field: bytes padding",
        lambda: S.receptive_field([(3, 1, 1, b"ab")]),
        "layers[0].padding",
        b"ab",
    ),
    Refused(
        "receptive field: negative stride",
        lambda: S.receptive_field([(3, -1)]),
        "layers[0].stride",
        -1,
    ),
    Refused(
        "receptive field: mixed ranks in a layer",
        lambda: S.receptive_field([((3, 3), (1, 1, 1))]),
        "layers[0]",
        S.ConvLayer((3, 3), (1, 1, 1)),
    ),
    Refused(
        "receptive field: unknown field",
        lambda: S.receptive_field([{"kernal": 3}]),
        "layers[0]",
        {"kernal": 3},
    ),
    Refused(
        "resolve: unknown padding rule",
        lambda: S.ConvConfig.resolve((1, 1, 5), (1, 1, 3), (1,), "SAME", padding_rule="torch"),
        "padding_rule",
        "torch",
    ),
]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.category)
def test_refused_with_a_message_naming_the_argument(case):
    if case.category == "traced stride under jit":
        # a tracer's description depends on the trace: name and "array of shape ()" suffice
        with pytest.raises(ValueError, match=r"^`stride` \(=.*\) must be a positive int"):
            case.call()
        return
    assert_refused(case.call, case.name, case.shown)


def test_categories_are_distinct_and_many():
    assert len({c.category for c in REFUSED}) == len(REFUSED) >= 40


# ----------------------------------------------------------------------------------------------
# edge cases with a correct result


def test_huge_numbers_give_the_exact_result_not_an_overflow():
    assert S.conv_output_size(10, 3, stride=10**30) == 1
    assert S.conv_output_size(10**30, 3) == 10**30 - 2
    e = S.explain_conv((10,), 3, stride=10**30)
    assert e.output_shape == (1,) and any("row(s) (3, 4, 5, 6, 7, 8, 9)" in w for w in e.warnings)
    assert S.explain_conv((10,), 3, dilation=10**30).output_shape == (0,)
    assert S.explain_conv((10,), 3, padding=[(-(10**30), 10**30)]).output_shape == (8,)


def test_numpy_ints_arrays_and_lists_are_accepted_like_python_ints():
    assert S.conv_output_size(np.int64(10), np.int32(3), stride=np.int16(2)) == 4
    assert S.conv_output_size(10, 3, padding=np.array([1, 2])) == 11
    lhs, rhs = np.array([1, 2, 9, 8]), [3, 2, 3, 3]
    want = eval_conv((1, 2, 9, 8), (3, 2, 3, 3), (2, 1), [(1, 0), (0, 2)])
    assert S.conv_output_shape(lhs, rhs, np.array([2, 1]), [[1, 0], [0, 2]]) == want
    got = S.conv_output_shape(lhs, rhs, (2, 1), [[1, 0], [0, 2]])
    assert all(type(d) is int for d in got)


@pytest.mark.parametrize(
    "lhs, rhs, padding",
    [
        ((0, 2, 5, 5), (3, 2, 3, 3), "SAME"),
        ((1, 0, 5, 5), (3, 0, 3, 3), "VALID"),
        ((1, 2, 0, 5), (3, 2, 3, 3), "SAME"),
        ((1, 2, 5, 5), (0, 2, 3, 3), ((1, 1), (0, 0))),
    ],
    ids=["empty batch", "zero channels", "zero-size spatial dim", "zero filters"],
)
def test_zero_size_inputs_give_eval_shapes_result(lhs, rhs, padding):
    assert S.conv_output_shape(lhs, rhs, (1, 1), padding) == eval_conv(lhs, rhs, (1, 1), padding)


def test_padding_means_the_same_in_every_rank():
    for n in (1, 2, 3):
        ins, k = (9,) * n, 3
        assert S.explain_conv(ins, k, padding=2).pads == ((2, 2),) * n
        per_dim = [(1, 2)] + [3] * (n - 1)
        want = ((1, 2),) + ((3, 3),) * (n - 1)
        assert S.explain_conv(ins, k, padding=per_dim).pads == want
        assert S.padding_pairs(per_dim, ins, (k,) * n, (1,) * n) == want


# ----------------------------------------------------------------------------------------------
# the receptive-field verify row: reads of an inner layer's padding are not input positions


def test_tap_positions_skip_inner_padding_on_the_reported_stack():
    stack = [(2, 2, 2, (0, 0)), (1, 2, 1, (1, 1))]  # seed 52 of `gated-jax verify`
    support, out_len = V.grad_support(stack, 13, 0)
    assert out_len > 0 and support.size == 0  # output 0 reads the second layer's padding
    assert V.tap_positions(stack, 0, 13) == set()
    assert 0 in V.tap_positions(stack, 0)  # the span formula's position, padding included


def test_tap_positions_equal_grad_support_on_random_stacks():
    rng = random.Random(2026)
    for _ in range(16):
        stack = V.random_stack(rng, max_layers=3)
        length, index = rng.randint(8, 24), rng.randint(0, 3)
        support, out_len = V.grad_support(stack, length, index)
        if out_len:
            i = min(index, out_len - 1)
            assert set(support.tolist()) == V.tap_positions(stack, i, length), (stack, length)


# The receptive-field row's 12 stacks for `gated-jax verify --seed 2`, on which the row failed
# (outputs that read an inner layer's padding); (stack, input length, output index).
SEED_2_STACKS = [
    ([(1, 2, 2, (1, 2)), (4, 1, 1, (1, 1))], 20, 3),
    ([(1, 3, 2, (1, 2)), (1, 3, 1, (1, 2)), (3, 1, 2, (0, 1))], 16, 3),
    ([(4, 2, 1, (2, 1)), (3, 2, 2, (2, 0)), (4, 2, 1, (0, 1))], 17, 1),
    ([(3, 2, 2, (2, 2)), (2, 3, 1, (0, 0))], 13, 2),
    ([(4, 3, 2, (0, 1)), (4, 1, 1, (1, 0)), (2, 1, 1, (2, 0))], 19, 0),
    ([(1, 2, 2, (2, 0)), (4, 1, 1, (1, 1)), (3, 2, 2, (2, 1))], 9, 0),
    ([(1, 2, 1, (2, 1)), (1, 1, 2, (1, 0)), (4, 2, 2, (2, 0))], 11, 3),
    ([(3, 3, 1, (1, 1)), (3, 1, 2, (1, 2)), (2, 2, 2, (2, 0))], 18, 1),
    ([(4, 2, 2, (0, 1)), (4, 2, 1, (2, 0)), (2, 3, 2, (1, 1))], 10, 0),
    ([(3, 1, 1, (0, 1))], 23, 2),
    ([(1, 2, 2, (1, 0)), (3, 2, 1, (0, 2))], 14, 3),
    ([(4, 3, 2, (0, 2)), (4, 1, 2, (2, 0))], 17, 1),
]


def test_receptive_field_row_passes_on_the_stacks_of_seed_2():
    inner = 0
    for stack, length, index in SEED_2_STACKS:
        # the row's check: the span and the support of jax.grad of the output agree
        assert V.receptive_field_case(stack, length, index) is True, (stack, length, index)
        out_len = length
        for k, s, d, pads in stack:
            out_len = S.conv_output_size(out_len, k, stride=s, dilation=d, padding=pads)
        i = min(index, out_len - 1)
        inner += V.tap_positions(stack, i) != V.tap_positions(stack, i, length)
    assert inner >= 8  # most of them read an inner layer's padding: the case that failed


# ----------------------------------------------------------------------------------------------
# the CLI: exit 2, one line on stderr, never a traceback


@pytest.mark.parametrize(
    "argv",
    [
        ["10x11", "--kernel", ""],
        ["10x11", "--kernel", "3", "--stride", "1e400"],
        ["10x11", "--kernel", "3", "--padding", ","],
        ["10x11", "--kernel", "3", "--padding", "1,2,3x0"],
        ["10x11", "--kernel", "3", "--groups", "0"],
        ["10x11", "--kernel", "3", "--channels", "-3"],
        ["10x11", "--kernel", "3", "--dilation", "0x1"],
        ["10x11", "--kernel", "3", "--input-dilation", "x"],
        ["10x11", "--kernel", "3", "--padding", "SAME_LOWER", "--transposed"],
        ["1" * 5000, "--kernel", "3"],
        ["", "--kernel", "3"],
        ["10x11", "--kernel", "3", "--filters", "3", "--groups", "2", "--channels", "4"],
        ["10", "--kernel", "3", "--padding", "1x2"],
    ],
    ids=lambda a: " ".join(a)[:40],
)
def test_cli_bad_input_exits_2_with_one_line(capsys, argv):
    code = main(["shape", *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("gated-jax shape: error: `")
    assert "Traceback" not in err


def test_cli_huge_and_empty_sizes_are_answered(capsys):
    assert main(["shape", "10", "--kernel", "3", "--stride", str(10**30)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "1"
    assert main(["shape", "0x5", "--kernel", "3", "--padding", "SAME"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "0 x 5"
