"""receptive_field against the support of jax.grad; explain_conv's numbers and warnings."""

from __future__ import annotations

import random

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import gated_jax
from gated_jax.lab import shapes as V
from gated_jax.shapes import (
    ConvLayer,
    ReceptiveField,
    conv_output_shape,
    conv_transpose_output_shape,
    explain_conv,
    padding_pairs,
    receptive_field,
)

# ----------------------------------------------------------------------------------------------
# receptive_field


def test_receptive_field_matches_grad_support_on_random_1d_stacks():
    rng = random.Random(0)
    checked = 0
    for _ in range(14):
        stack = V.random_stack(rng, max_layers=4)
        length = rng.randint(10, 30)
        index = rng.randint(0, 4)
        support, out_len = V.grad_support(stack, length, index)
        if out_len == 0:
            continue
        i = min(index, out_len - 1)
        (size,), (jump,), (start,) = receptive_field(stack)
        lo, hi = start + i * jump, start + i * jump + size - 1
        # jax.grad's support lies in the span, and hits both ends where they are input rows.
        assert support.size == 0 or (support.min() >= lo and support.max() <= hi)
        if 0 <= lo < length:
            assert support.min() == lo
        if 0 <= hi < length:
            assert support.max() == hi
        # Exactly: the brute-force span, and the positions reached through real inputs only.
        taps = V.tap_positions(stack, i)
        assert (min(taps), max(taps)) == (lo, hi)
        assert set(support.tolist()) == V.tap_positions(stack, i, length)
        checked += 1
    assert checked >= 10


def test_receptive_field_2d_and_layer_forms():
    layers = [ConvLayer((3, 5), (2, 1), (1, 2), ((1, 1), (0, 4))), ((2, 3), (2, 2))]
    rf = receptive_field(layers)
    assert isinstance(rf, ReceptiveField)
    h, w = 19, 23

    def net(x):
        y = x[None, None]
        for k, s, d, p in [
            ((3, 5), (2, 1), (1, 2), ((1, 1), (0, 4))),
            ((2, 3), (2, 2), (1, 1), ((0, 0), (0, 0))),
        ]:
            y = lax.conv_general_dilated(y, jnp.ones((1, 1, *k)), s, p, rhs_dilation=d)
        return y[0, 0]

    x = jnp.ones((h, w))
    i, j = 2, 3
    g = np.asarray(jax.grad(lambda x: net(x)[i, j])(x))
    rows, cols = np.nonzero(g)
    lo = [rf.start[a] + (i, j)[a] * rf.jump[a] for a in range(2)]
    assert (rows.min(), cols.min()) == tuple(max(0, v) for v in lo)
    assert (rows.max(), cols.max()) == tuple(lo[a] + rf.size[a] - 1 for a in range(2))
    # size: 1 + (3-1)*1*1 + (2-1)*1*2 = 5 and 1 + (5-1)*2*1 + (3-1)*1*1 = 11
    assert rf == ReceptiveField((5, 11), (4, 2), (-1, 0))
    # plain tuples, dicts and ints are all layers
    assert receptive_field([(3, 2), {"kernel": 3, "stride": 2}, 1]) == receptive_field(
        [ConvLayer(3, 2), ConvLayer(3, 2), ConvLayer(1)]
    )
    assert receptive_field([]) == ReceptiveField((1,), (1,), (0,))
    # A 3-wide window every 2 rows: tuples however the kernel is spelt.
    for layer in (ConvLayer(3, 2), (3, 2), (3, 2, 1, 0), {"kernel": 3, "stride": 2}):
        assert receptive_field([layer]) == ReceptiveField((3,), (2,), (0,))
    assert receptive_field([ConvLayer((3,), (2,))]) == ReceptiveField((3,), (2,), (0,))


def test_receptive_field_holds_tuples_for_every_spelling():
    spellings = [[3], [(3,)], [ConvLayer(3)], [ConvLayer((3,))], [{"kernel": (3,)}], [(3, 1, 1, 1)]]
    for layers in spellings:
        rf = receptive_field(layers)
        assert all(isinstance(f, tuple) and len(f) == 1 for f in rf), (layers, rf)
        assert rf.size == (3,)
    rf = receptive_field([ConvLayer(3), ConvLayer((2, 5))])  # an int layer spans every dim
    assert rf == ReceptiveField((4, 7), (1, 1), (0, 0))


@pytest.mark.parametrize(
    "layers, name",
    [
        ([ConvLayer(0)], "kernel"),
        ([ConvLayer(3, 0)], "stride"),
        ([ConvLayer(3, 1, -1)], "dilation"),
        ([ConvLayer(3, 1, 1, (1, 2, 3))], "padding"),
        ([("a",)], "kernel"),
        ([(1, 2, 3, 4, 5)], "layers"),
        ("abc", "layers"),
    ],
)
def test_receptive_field_rejects_bad_layers(layers, name):
    with pytest.raises(ValueError, match=rf"^`[^`]*{name}[^`]*` \(="):
        receptive_field(layers)


# ----------------------------------------------------------------------------------------------
# explain_conv


def test_explain_seed_1_1a():
    e = explain_conv((10, 11), 3, stride=2)
    text = str(e)
    assert text == e.text and e.output_shape == (4, 5)
    assert "output (spatial): 4 x 5" in text
    assert "floor((10 + 0 + 0 - 3) / 2) + 1 = floor(3.5) + 1 = 4" in text
    assert "(10 - 3)/2 + 1 = 4.5 -> 4" in text
    assert any("row(s) (9) covered by no window" in w for w in e.warnings)
    assert not any("dim 1" in w for w in e.warnings)  # (11 - 3)/2 + 1 = 5 exactly


def test_explanation_is_a_frozen_dataclass_whose_str_is_the_text():
    import dataclasses

    e = explain_conv((10, 11), 3, stride=2)
    assert {f.name for f in dataclasses.fields(e)} >= {"output_shape", "pads", "warnings", "text"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.output_shape = (1, 1)
    assert str(e).upper() == e.text.upper() and e.output_shape == (4, 5)  # fields stay
    assert e.config.out_spatial == e.spatial and e.config.padding == e.pads
    assert "ConvExplanation(output_shape=(4, 5)" in repr(e)


def test_explain_seed_1_1b_with_channels_and_filters():
    e = explain_conv((32, 28), 5, stride=2, padding=2, dilation=2, channels=3, filters=16)
    text = str(e)
    c1 = 16
    h1 = (32 + 2 * 2 - (5 + 4 * 1)) // 2 + 1
    w1 = (28 + 2 * 2 - (5 + 4 * 1)) // 2 + 1
    assert e.output_shape == (c1, h1, w1)
    assert conv_output_shape(
        (1, 3, 32, 28), (16, 3, 5, 5), (2, 2), ((2, 2), (2, 2)), rhs_dilation=(2, 2)
    ) == (1, c1, h1, w1)
    assert "K_eff = K + (K-1)(D-1) = 5 + (5 - 1)(2 - 1) = 9" in text
    assert "16 x 3 x 5 x 5" in text


def test_explain_warnings_zero_size_and_asymmetric_same():
    z = explain_conv(4, 7)
    assert z.output_shape == (0,) and any("zero-size" in w for w in z.warnings)
    s = explain_conv((10,), 4, padding="SAME")
    assert s.pads == ((1, 2),) and any("asymmetric SAME" in w and "end" in w for w in s.warnings)
    s = explain_conv((10,), 4, padding="same_lower")
    assert s.pads == ((2, 1),) and any("start" in w for w in s.warnings)
    assert not explain_conv((10,), 3, padding="SAME").warnings


def test_explain_uncovered_rows_equal_zero_gradient_rows():
    """The rows explain_conv lists as never read are exactly the rows with zero gradient."""
    rng = random.Random(3)
    for _ in range(8):
        n, k = rng.randint(5, 16), rng.randint(1, 4)
        s, d = rng.randint(1, 4), rng.randint(1, 3)
        lo, hi = rng.randint(-2, 2), rng.randint(-2, 2)
        e = explain_conv(n, k, stride=s, dilation=d, padding=[(lo, hi)])
        if e.output_shape[0] == 0:
            continue
        g = jax.jit(
            jax.grad(
                lambda x, s=s, d=d, lo=lo, hi=hi, k=k: lax.conv_general_dilated(
                    x[None, None], jnp.ones((1, 1, k)), (s,), ((lo, hi),), rhs_dilation=(d,)
                ).sum()
            )
        )(jnp.ones(n))
        zero_rows = np.flatnonzero(np.asarray(g) == 0).tolist()
        listed = [w for w in e.warnings if "row(s)" in w]
        count = sum(int(w.split(": ")[1].split(" ")[0]) for w in listed)
        assert count == len(zero_rows), (n, k, s, d, lo, hi, e.warnings, zero_rows)


def test_explain_agrees_with_eval_shape_on_random_configs():
    rng = random.Random(5)
    for _ in range(200):
        nd = rng.randint(1, 3)
        ins = tuple(rng.randint(0, 15) for _ in range(nd))
        k = tuple(rng.randint(1, 5) for _ in range(nd))
        s, d = rng.randint(1, 3), rng.randint(1, 3)
        ld = rng.choice([1, 1, 2])
        pad = rng.choice(["SAME", "VALID", "SAME_LOWER", 1, 0, [(rng.randint(0, 2), 1)] * nd])
        if isinstance(pad, str) and ld != 1:
            pad = 0
        e = explain_conv(ins, k, stride=s, dilation=d, input_dilation=ld, padding=pad)
        lax_pad = (
            pad
            if isinstance(pad, str)
            else [
                (p, p) if isinstance(p, int) else p
                for p in ([pad] * nd if isinstance(pad, int) else pad)
            ]
        )
        expected = jax.eval_shape(
            lambda x, w, lax_pad=lax_pad, s=s, d=d, ld=ld, nd=nd: lax.conv_general_dilated(
                x, w, (s,) * nd, lax_pad, lhs_dilation=(ld,) * nd, rhs_dilation=(d,) * nd
            ),
            jax.ShapeDtypeStruct((1, 1, *ins), jnp.float32),
            jax.ShapeDtypeStruct((1, 1, *k), jnp.float32),
        ).shape
        assert e.output_shape == tuple(expected[2:])


def test_explain_reads_two_ints_as_padding_pairs_and_flax_do():
    # 2-D: one int per dim, symmetric (Flax's reading), the same as padding_pairs
    e = explain_conv((9, 8), 3, padding=(1, 2))
    assert e.pads == padding_pairs((1, 2), (9, 8), (3, 3), (1, 1)) == ((1, 1), (2, 2))
    assert e.output_shape == (9, 10)
    y = jax.eval_shape(
        lambda x: nn.Conv(1, (3, 3), padding=(1, 2)).init_with_output(jax.random.key(0), x)[0],
        jax.ShapeDtypeStruct((1, 9, 8, 1), jnp.float32),
    )
    assert y.shape[1:3] == e.output_shape
    # Every rank reads it the same way: one entry per spatial dim, so two ints in 1-D or 3-D
    # are an error (as in Flax), and a (lo, hi) pair is spelt as one entry
    for shape in ((9,), (9, 8, 7)):
        with pytest.raises(ValueError, match=r"^`padding` \(=\(1, 2\)\) must be "):
            explain_conv(shape, 3, padding=(1, 2))
    assert explain_conv((9,), 3, padding=[(1, 2)]).pads == ((1, 2),)
    assert explain_conv((9, 8, 7), 3, padding=[(1, 2)] * 3).pads == ((1, 2),) * 3
    assert explain_conv((9, 8, 7), 3, padding=[1, (0, 2), 3]).pads == ((1, 1), (0, 2), (3, 3))
    for shape in ((9,), (9, 8), (9, 8, 7)):
        assert explain_conv(shape, 3, padding=2).pads == ((2, 2),) * len(shape)


def test_explain_transposed_agrees_with_conv_transpose():
    for pad in ("SAME", "VALID", [(1, 0)]):
        e = explain_conv(7, 3, stride=2, padding=pad, transposed=True, channels=2, filters=5)
        expected = jax.eval_shape(
            lambda x, w, pad=pad: lax.conv_transpose(x, w, (2,), pad),
            jax.ShapeDtypeStruct((1, 7, 2), jnp.float32),
            jax.ShapeDtypeStruct((3, 2, 5), jnp.float32),
        ).shape
        assert e.output_shape == (5, expected[1])
        assert "transposed" in str(e)
    assert conv_transpose_output_shape((1, 7, 2), (3, 2, 5), (2,), "SAME") == (1, 14, 5)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(stride=0), "stride"),
        (dict(dilation=(1, 0)), "dilation"),
        (dict(padding="FULL"), "padding"),
        (dict(padding=(-9, 0)), "padding"),
        (dict(channels=3, feature_group_count=2), "channels"),
        (dict(filters=0), "filters"),
        (dict(padding="SAME", input_dilation=2), "padding"),
        (dict(padding="SAME_LOWER", transposed=True), "padding"),
    ],
)
def test_explain_rejects_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=rf"^`{name}` \(="):
        explain_conv((5, 6), 3, **kwargs)


def test_top_level_reexports():
    for name in gated_jax.shapes.__all__:
        assert getattr(gated_jax, name) is getattr(gated_jax.shapes, name)


def test_report_section_answers_seed_1_1(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from gated_jax.lab import Context
    from gated_jax.lab import shapes as section

    md = section.section(Context(out_dir=tmp_path, quick=True))
    assert "**Answer: 4 x 5**" in md
    assert "(10 - 3)/2 + 1 = 4.5 -> 4" in md
    assert "`(1, 16, 14, 12)`" in md  # 1.1(b)'s example, from jax.eval_shape
    assert (tmp_path / "shapes_seed_1_1a_windows.png").stat().st_size > 1000
    for thread in ("jax#4592", "flax#1872", "flax#4593"):  # the inverse direction and ports
        assert thread in md
    assert "max abs difference 0.0e+00" in md and "[4, 7, 10, 11, 13, 16]" in md
