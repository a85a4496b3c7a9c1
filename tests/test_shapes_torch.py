"""PyTorch ports (torch is not installed): equal values, not only shapes.

``Conv{n}d`` is checked against an independent NumPy loop of PyTorch's definition (padding
modes by ``np.pad``); ``ConvTranspose{n}d`` is by definition the input gradient of ``Conv{n}d``,
so ``jax.vjp`` of the forward convolution is its reference. Both sizes are checked against the
formulas of PyTorch's documentation on many more configs through ``jax.eval_shape``.
"""

from __future__ import annotations

import itertools
import random
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import gated_jax as gj

NP_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


class TorchCase(NamedTuple):
    """A ``Conv{n}d`` / ``ConvTranspose{n}d`` config with per-dim tuples."""

    sizes: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: object  # per-dim ints, or 'same' / 'valid'
    dilation: tuple[int, ...]
    groups: int
    mode: str
    output_padding: tuple[int, ...] = ()


def random_case(rng: random.Random, transposed: bool = False) -> TorchCase:
    n = rng.randint(1, 3)
    kernel = tuple(rng.randint(1, 4) for _ in range(n))
    dilation = tuple(rng.randint(1, 2) for _ in range(n))
    stride = tuple(rng.randint(1, 3) for _ in range(n))
    mode = "zeros" if transposed else rng.choice(list(NP_MODES))
    sizes = tuple(rng.randint((k - 1) * d + 1, 9) for k, d in zip(kernel, dilation, strict=True))
    if transposed:
        ops = tuple(rng.randint(0, s - 1) for s in stride)
        sizes = tuple(rng.randint(1, 6) for _ in range(n))
        # padding up to d(k-1) (PyTorch's range for a gradient), keeping the output non-empty
        padding = tuple(
            rng.randint(0, min((k - 1) * d, ((h - 1) * s + (k - 1) * d + op) // 2))
            for h, k, s, d, op in zip(sizes, kernel, stride, dilation, ops, strict=True)
        )
        return TorchCase(sizes, kernel, stride, padding, dilation, rng.choice([1, 2]), mode, ops)
    choice = rng.random()
    if choice < 0.15:
        padding, stride = "same", (1,) * n
    elif choice < 0.25:
        padding = "valid"
    else:  # reflect needs pad < size, as in PyTorch
        padding = tuple(rng.randint(0, min(2, h - 1)) for h in sizes)
    return TorchCase(sizes, kernel, stride, padding, dilation, rng.choice([1, 2]), mode)


def port(case: TorchCase):
    if case.output_padding:
        return gj.torch_conv_transpose(
            len(case.sizes),
            case.kernel,
            stride=case.stride,
            padding=case.padding,
            output_padding=case.output_padding,
            groups=case.groups,
            dilation=case.dilation,
        )
    return gj.torch_conv(
        len(case.sizes),
        case.kernel,
        stride=case.stride,
        padding=case.padding,
        dilation=case.dilation,
        groups=case.groups,
        padding_mode=case.mode,
    )


def torch_pairs(case: TorchCase):
    if case.padding == "valid":
        return [(0, 0)] * len(case.sizes)
    if case.padding == "same":  # PyTorch: total d(k-1), the extra at the end
        totals = [d * (k - 1) for k, d in zip(case.kernel, case.dilation, strict=True)]
        return [(t // 2, t - t // 2) for t in totals]
    return [(p, p) for p in case.padding]


def numpy_conv(x, w, b, case: TorchCase):
    """PyTorch's Conv{n}d written out: pad (np.pad mode), then the grouped cross-correlation."""
    xp = np.pad(x, [(0, 0), (0, 0), *torch_pairs(case)], mode=NP_MODES[case.mode])
    n_, c = x.shape[:2]
    o, cg = w.shape[:2]
    og = o // case.groups
    outs = [
        (hp - d * (k - 1) - 1) // s + 1
        for hp, k, s, d in zip(xp.shape[2:], case.kernel, case.stride, case.dilation, strict=True)
    ]
    y = np.zeros((n_, o, *outs))
    for idx in itertools.product(*map(range, outs)):
        taps = [
            i * s + np.arange(k) * d
            for i, k, s, d in zip(idx, case.kernel, case.stride, case.dilation, strict=True)
        ]
        patch = xp[(slice(None), slice(None), *np.ix_(*taps))]  # (N, C, *k)
        for oc in range(o):
            grp = patch[:, (oc // og) * cg : (oc // og + 1) * cg]
            y[(slice(None), oc, *idx)] = (grp * w[oc]).reshape(n_, -1).sum(1) + b[oc]
    return y


VALUE_CASES = [random_case(random.Random(seed)) for seed in range(40)]


@pytest.mark.parametrize("case", VALUE_CASES, ids=lambda c: f"{c.mode}-{c.padding}-k{c.kernel}")
def test_conv_equals_the_definition(case):
    rng = np.random.default_rng(sum(case.sizes) + len(case.kernel))
    c, o = 2 * case.groups, 2 * case.groups
    x = rng.standard_normal((2, c, *case.sizes))
    w = rng.standard_normal((o, c // case.groups, *case.kernel))
    b = rng.standard_normal(o)
    got = jax.jit(port(case))(x, w, b)  # one program; NumPy inputs need no conversion program
    np.testing.assert_allclose(got, numpy_conv(x, w, b, case), rtol=1e-12, atol=1e-12)


def torch_transpose_shape(case: TorchCase):
    return tuple(
        (h - 1) * s - 2 * p + d * (k - 1) + op + 1
        for h, s, p, d, k, op in zip(
            case.sizes,
            case.stride,
            case.padding,
            case.dilation,
            case.kernel,
            case.output_padding,
            strict=True,
        )
    )


TRANSPOSE_CASES = [random_case(random.Random(1000 + seed), transposed=True) for seed in range(30)]


@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=lambda c: f"s{c.stride}p{c.padding}")
def test_conv_transpose_is_the_input_gradient_of_conv(case):
    rng = np.random.default_rng(sum(case.sizes))
    cin, cout = 2 * case.groups, 3 * case.groups
    x = jnp.asarray(rng.standard_normal((2, cin, *case.sizes)))
    w = jnp.asarray(rng.standard_normal((cin, cout // case.groups, *case.kernel)))
    out_sizes = torch_transpose_shape(case)

    def forward(z):  # PyTorch's Conv{n}d with this weight read as (O, I / groups, *k)
        return lax.conv_general_dilated(
            z,
            w,
            case.stride,
            [(p, p) for p in case.padding],
            rhs_dilation=case.dilation,
            feature_group_count=case.groups,
        )

    zeros = jnp.zeros((2, cout, *out_sizes))
    assert jax.eval_shape(forward, zeros).shape == x.shape
    want = jax.jit(lambda g: jax.vjp(forward, zeros)[1](g)[0])(x)
    t = port(case)
    # one compiled program each (eager calls compile every op); output_size at call time
    # solves for output_padding
    got, again = jax.jit(lambda x, w: (t(x, w), t(x, w, output_size=out_sizes)))(x, w)
    assert got.shape == want.shape == (2, cout, *out_sizes)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(again, got)


def test_documented_sizes_on_many_configs():
    """PyTorch's two size formulas against jax.eval_shape of the ports (no compilation)."""
    rng = random.Random(7)
    for trial in range(1200):
        transposed = trial % 2 == 1
        case = random_case(rng, transposed=transposed)
        c = 2 * case.groups
        x = jax.ShapeDtypeStruct((1, c, *case.sizes), jnp.float64)
        if transposed:
            w = jax.ShapeDtypeStruct((c, 1, *case.kernel), jnp.float64)
            want = torch_transpose_shape(case)
        else:
            w = jax.ShapeDtypeStruct((c, c // case.groups, *case.kernel), jnp.float64)
            want = tuple(
                (h + lo + hi - d * (k - 1) - 1) // s + 1
                for h, (lo, hi), d, k, s in zip(
                    case.sizes,
                    torch_pairs(case),
                    case.dilation,
                    case.kernel,
                    case.stride,
                    strict=True,
                )
            )
        got = jax.eval_shape(port(case), x, w).shape[2:]
        assert got == want, case
        if case.padding == "same":
            assert got == case.sizes


def test_output_size_outside_pytorchs_range_is_refused():
    t = gj.torch_conv_transpose(1, 3, stride=2, padding=1)
    assert t.output_padding_for((5,), (9,)) == (0,) and t.output_padding_for((5,), (10,)) == (1,)
    with pytest.raises(ValueError, match=r"^`output_size` \(=\(11,\)\) must be in \[9, 10\]"):
        t.output_padding_for((5,), (11,))
    with pytest.raises(ValueError, match=r"^`output_padding` \(=2\) must be smaller than"):
        gj.torch_conv_transpose(1, 3, stride=2, output_padding=2)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(padding="same", stride=2), "padding"),
        (dict(padding="full"), "padding"),
        (dict(padding_mode="mirror"), "padding_mode"),
        (dict(groups=0), "groups"),
        (dict(padding=-1), "padding"),
        (dict(stride=(1, 2)), "stride"),
    ],
)
def test_bad_torch_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=rf"^`{name}` \(="):
        gj.torch_conv(1, 3, **kwargs)


def test_conv_transpose_padding_that_empties_the_output_is_refused():
    t = gj.torch_conv_transpose(1, 3, padding=2)
    with pytest.raises(ValueError, match=r"^`padding` \(=\(2,\)\) must be small enough"):
        t.output_shape((1,))  # the rule gives -1: refused, as the call and PyTorch refuse
    with pytest.raises(ValueError, match=r"^`padding` \(=\(2,\)\) must be small enough"):
        t(jnp.ones((1, 1, 1)), jnp.ones((1, 1, 3)))
