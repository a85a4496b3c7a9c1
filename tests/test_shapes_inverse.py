"""The inverse direction: padding for a target size, and the ConvTranspose that undoes a Conv.

Round trips through ``jax.eval_shape`` (which traces, never compiles) on thousands of seeded
configs; the ConvTranspose's values against ``jax.vjp`` of the forward conv in float64.
"""

from __future__ import annotations

import random
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax import lax

import gated_jax as gj
from gated_jax import shapes as S


def _sds(shape):
    return jax.ShapeDtypeStruct(tuple(shape), jnp.float32)


def conv_spatial(ins, ks, ss, ds, lds, pads):
    """Output spatial shape of lax.conv_general_dilated by jax.eval_shape (NC... layout)."""
    n = len(ins)
    out = jax.eval_shape(
        lambda x, w: lax.conv_general_dilated(x, w, ss, pads, lhs_dilation=lds, rhs_dilation=ds),
        _sds((1, 1, *ins)),
        _sds((1, 1, *ks)),
    )
    return tuple(out.shape[2 : 2 + n])


class Target(NamedTuple):
    """A forward config and a target output size, per spatial dim."""

    ins: tuple[int, ...]
    ks: tuple[int, ...]
    ss: tuple[int, ...]
    ds: tuple[int, ...]
    lds: tuple[int, ...]
    outs: tuple[int, ...]


def random_target(rng: random.Random) -> Target:
    n = rng.randint(1, 3)
    ins = tuple(rng.randint(0, 20) for _ in range(n))
    ks = tuple(rng.randint(1, 5) for _ in range(n))
    ss = tuple(rng.randint(1, 4) for _ in range(n))
    ds = tuple(rng.randint(1, 3) for _ in range(n))
    lds = tuple(rng.choice([1, 1, 2]) for _ in range(n))
    valid = [
        S.conv_output_size(h, k, stride=s, dilation=d, input_dilation=ld)
        for h, k, s, d, ld in zip(ins, ks, ss, ds, lds, strict=True)
    ]
    outs = tuple(max(0, v + rng.randint(-1, 6)) for v in valid)
    return Target(ins, ks, ss, ds, lds, outs)


# Each hypothesis example checks a batch of configs drawn from its seed: the same 2,000 configs
# in all, without hypothesis's per-example overhead (a few ms, more than an eval_shape).
BATCH = 20


@settings(max_examples=2000 // BATCH, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**63))
def test_padding_for_output_round_trips_through_eval_shape(seed):
    rng = random.Random(seed)
    for _ in range(BATCH):
        _padding_round_trip(random_target(rng))


def _padding_round_trip(c: Target) -> None:
    kw = dict(stride=c.ss, dilation=c.ds, input_dilation=c.lds)
    valid = [  # the 'VALID' size, by the rule test_shapes proves equal to eval_shape
        S.conv_output_size(h, k, stride=s, dilation=d, input_dilation=ld)
        for h, k, s, d, ld in zip(*c[:5], strict=True)
    ]
    if any(o < v for o, v in zip(c.outs, valid, strict=True)):
        with pytest.raises(ValueError, match=r"^`output_size` \(=.*\) must be reachable"):
            S.padding_for_output(c.ins, c.outs, c.ks, **kw)
        return
    pads = S.padding_for_output(c.ins, c.outs, c.ks, **kw)
    assert conv_spatial(c.ins, c.ks, c.ss, c.ds, c.lds, pads) == c.outs, c
    for (lo, hi), o, h, k, s, d, ld in zip(pads, c.outs, *c[:5], strict=True):
        assert lo == (lo + hi) // 2 and lo >= 0  # 'SAME''s split
        if lo + hi > 0:  # the smallest total: one less gives another size
            smaller = S.conv_output_size(
                h, k, stride=s, dilation=d, input_dilation=ld, padding=(lo + hi - 1, 0)
            )
            assert smaller != o


def test_all_paddings_are_exactly_the_pairs_that_work():
    rng = random.Random(1)
    for _ in range(150):
        h, k, s, d = rng.randint(0, 14), rng.randint(1, 4), rng.randint(1, 4), rng.randint(1, 2)
        o = S.conv_output_size(h, k, stride=s, dilation=d) + rng.randint(0, 4)
        (pairs,) = S.padding_for_output(h, o, k, stride=s, dilation=d, all_paddings=True)
        bound = (o + 1) * s + k * d + 1  # any larger total gives more than o outputs
        brute = {
            (lo, hi)
            for lo in range(bound)
            for hi in range(bound)
            if S.conv_output_size(h, k, stride=s, dilation=d, padding=(lo, hi)) == o
        }
        assert set(pairs) == brute and len(pairs) == len(brute), (h, o, k, s, d)
        (canonical,) = S.padding_for_output(h, o, k, stride=s, dilation=d)
        assert canonical in brute and sum(canonical) == min(map(sum, brute))
        lo, hi = pairs[rng.randrange(len(pairs))]
        assert conv_spatial((h,), (k,), (s,), (d,), (1,), [(lo, hi)]) == (o,)


def test_padding_for_output_is_same_where_same_reaches_the_target():
    for h in range(1, 30):
        for k, s in [(3, 1), (4, 1), (3, 2), (5, 3), (2, 4)]:
            same = S.padding_pairs("SAME", (h,), (k,), (s,))
            assert S.padding_for_output(h, -(-h // s), k, stride=s) == same


def test_unreachable_target_names_the_reachable_sizes():
    with pytest.raises(ValueError, match=r"^`output_size` \(=4\) must be .* are 8 \('VALID'\)"):
        S.padding_for_output(10, 4, 3)
    with pytest.raises(ValueError, match=r"^`all_paddings` \(='yes'\) must be a bool"):
        S.padding_for_output(10, 10, 3, all_paddings="yes")
    with pytest.raises(ValueError, match=r"^`output_size` \(=\(4, 4, 4\)\) must be"):
        S.padding_for_output((10, 10), (4, 4, 4), 3)


class TransposeTarget(NamedTuple):
    ins: tuple[int, ...]
    ks: tuple[int, ...]
    ss: tuple[int, ...]
    ds: tuple[int, ...]
    outs: tuple[int, ...]


@settings(max_examples=2000 // BATCH, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**63))
def test_transpose_padding_for_output_round_trips_through_eval_shape(seed):
    rng = random.Random(seed)
    for _ in range(BATCH):
        _transpose_round_trip(rng)


def _transpose_round_trip(rng: random.Random) -> None:
    n = rng.randint(1, 3)
    c = TransposeTarget(
        *(
            tuple(rng.randint(lo, hi) for _ in range(n))
            for lo, hi in ((1, 12), (1, 5), (1, 4), (1, 3), (1, 40))
        )
    )
    pads = S.transpose_padding_for_output(c.ins, c.outs, c.ks, stride=c.ss, dilation=c.ds)
    out = jax.eval_shape(
        lambda x, w: lax.conv_transpose(x, w, c.ss, pads, rhs_dilation=c.ds),
        _sds((1, *c.ins, 1)),
        _sds((*c.ks, 1, 1)),
    ).shape
    assert tuple(out[1:-1]) == c.outs, c


# ----------------------------------------------------------------------------------------------
# the ConvTranspose that undoes a Conv: equal to jax.vjp of the forward conv, in float64


class Undo(NamedTuple):
    ins: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: object


UNDO = [
    Undo((10,), (3,), (2,), (1,), "SAME"),
    Undo((11,), (3,), (2,), (1,), "SAME"),
    Undo((11,), (4,), (3,), (1,), "VALID"),
    Undo((13,), (2,), (4,), (1,), "VALID"),  # stride > kernel: rows no window reads
    Undo((9,), (3,), (2,), (2,), [(2, 1)]),
    Undo((9,), (3,), (1,), (3,), "SAME_LOWER"),
    Undo((12,), (5,), (3,), (1,), 2),
    Undo((7, 9), (3, 2), (2, 3), (1, 2), "SAME"),
    Undo((8, 5), (2, 3), (3, 1), (2, 1), [(1, 0), 2]),
    Undo((6, 7, 5), (2, 3, 2), (2, 2, 3), (1, 1, 2), "VALID"),
]


@pytest.mark.parametrize("case", UNDO, ids=lambda c: f"{c.ins}k{c.kernel}s{c.stride}d{c.dilation}")
def test_inverse_conv_transpose_equals_the_vjp(case):
    n = len(case.ins)
    rng = np.random.default_rng(len(case.ins) + sum(case.ins))
    x = jnp.asarray(rng.standard_normal((2, *case.ins, 3)))
    w = jnp.asarray(rng.standard_normal((*case.kernel, 3, 4)))
    sp = "HWD"[:n]
    dn = ("N" + sp + "C", sp + "IO", "N" + sp + "C")
    args = gj.inverse_conv_transpose(
        case.ins, case.kernel, stride=case.stride, padding=case.padding, dilation=case.dilation
    )
    fwd_pads = S.padding_pairs(case.padding, case.ins, case.kernel, case.stride, case.dilation)
    assert args.forward_padding == fwd_pads

    def forward(x):
        return lax.conv_general_dilated(
            x, w, case.stride, fwd_pads, rhs_dilation=case.dilation, dimension_numbers=dn
        )

    y, vjp = jax.vjp(forward, x)
    g = jnp.asarray(rng.standard_normal(y.shape))
    want = vjp(g)[0]
    got = lax.conv_transpose(g, w, dimension_numbers=dn, **args.lax_kwargs())
    assert got.shape == x.shape and args.output_size == case.ins
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_flax_conv_transpose_with_the_arguments_undoes_flax_conv():
    conv = nn.Conv(4, (3, 3), strides=2, padding="SAME", use_bias=False)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 11, 10, 3)))
    params = conv.init(jax.random.key(0), x)
    y, vjp = jax.vjp(lambda x: conv.apply(params, x), x)
    args = gj.inverse_conv_transpose((11, 10), 3, stride=2, padding="SAME")
    tconv = nn.ConvTranspose(3, (3, 3), use_bias=False, **args.flax_kwargs())
    got = tconv.apply({"params": {"kernel": params["params"]["kernel"]}}, y)
    np.testing.assert_allclose(got, vjp(y)[0], rtol=1e-12, atol=1e-12)
    assert got.shape == x.shape


def test_inverse_conv_transpose_refuses_an_empty_forward_output():
    with pytest.raises(ValueError, match=r"^`input_size` \(=2\) must be large enough"):
        gj.inverse_conv_transpose(2, 5)


def test_all_paddings_refuses_a_huge_listing_quickly():
    """10**9 at stride 1 has ~10**9 pairs: refused at once in the one format, no MemoryError."""
    import time

    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"^`all_paddings` \(=True\) must be False for this"):
        S.padding_for_output(10, 10**9, 3, all_paddings=True)
    assert time.perf_counter() - start < 0.5
    assert S.padding_for_output(10, 10**9, 3) == ((499999996, 499999996),)
    assert len(S.padding_for_output(10, 400, 3, all_paddings=True)[0]) == 393
