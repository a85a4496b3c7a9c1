"""Rows of ``gated-jax verify`` for :mod:`gated_jax.conv`: every closed form against autodiff.

Each row runs the closed form on randomized configs (1-3 spatial dims, random dimension-number
strings, strides, string / explicit / negative padding, input and kernel dilation, feature or
batch groups) in float64 and reports the worst relative error against ``jax.jacrev`` /
``jax.vjp`` / ``jax.grad`` of ``lax.conv_general_dilated`` (or, for ``conv1d``, against the
seed's index formula evaluated by a plain Python loop).
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gated_jax.shapes import _dilate as _dil
from gated_jax.verification import Check, max_rel_error

ORDER = 20

_SPATIAL = "HWD"


@dataclasses.dataclass(frozen=True)
class ConvCase:
    """A random valid ``lax.conv_general_dilated`` config (shapes in the user's layouts)."""

    lhs_shape: tuple[int, ...]
    rhs_shape: tuple[int, ...]
    window_strides: tuple[int, ...]
    padding: str | tuple[tuple[int, int], ...]
    lhs_dilation: tuple[int, ...]
    rhs_dilation: tuple[int, ...]
    dimension_numbers: tuple[str, str, str]
    feature_group_count: int
    batch_group_count: int

    @property
    def config(self) -> dict:
        """Keyword arguments after ``window_strides`` and ``padding``."""
        return dict(
            lhs_dilation=self.lhs_dilation,
            rhs_dilation=self.rhs_dilation,
            dimension_numbers=self.dimension_numbers,
            feature_group_count=self.feature_group_count,
            batch_group_count=self.batch_group_count,
        )

    def lax_conv(self, lhs, rhs):
        return lax.conv_general_dilated(lhs, rhs, self.window_strides, self.padding, **self.config)

    def arrays(self, rng: np.random.Generator, dtype=jnp.float64):
        lhs = jnp.asarray(rng.standard_normal(self.lhs_shape), dtype)
        rhs = jnp.asarray(rng.standard_normal(self.rhs_shape), dtype)
        return lhs, rhs


def random_case(
    rng: np.random.Generator, *, max_spatial: int = 3, max_size: int | None = None
) -> ConvCase:
    """Draw a valid config with a non-empty output, covering every feature of the op.

    Spatial ranks 1-3, random dimension-number strings, strides 1-3, kernel dilation 1-2,
    input dilation 1-2 (explicit padding only, as lax requires), padding ``'VALID'``,
    ``'SAME'``, ``'SAME_LOWER'`` or explicit pairs in ``[-2, 3]`` (negative crops), and either
    ``feature_group_count`` or ``batch_group_count`` in 1-3.
    """
    while True:
        nsp = int(rng.integers(1, max_spatial + 1))
        size_cap = max_size or (8 if nsp == 1 else 6 if nsp == 2 else 4)
        chars = _SPATIAL[:nsp]

        def spec(pair: str, chars: str = chars) -> str:
            return "".join(rng.permutation(list(pair + chars)))

        dn = (spec("NC"), spec("OI"), spec("NC"))
        groups = int(rng.integers(1, 4))
        fgc, bgc = (groups, 1) if rng.random() < 0.5 else (1, groups)
        i_size = int(rng.integers(1, 3))
        o_size = groups * int(rng.integers(1, 3))
        n_size = bgc * int(rng.integers(1, 3))
        c_size = fgc * i_size
        ks = [int(rng.integers(1, 4)) for _ in chars]
        ns = [int(rng.integers(1, size_cap + 1)) for _ in chars]
        strides = tuple(int(rng.integers(1, 4)) for _ in chars)
        rdil = tuple(int(rng.integers(1, 3)) for _ in chars)
        kind = rng.integers(0, 4)
        if kind < 3:
            padding = ("VALID", "SAME", "SAME_LOWER")[kind]
            ldil = (1,) * nsp
        else:
            padding = tuple((int(rng.integers(-2, 4)), int(rng.integers(-2, 4))) for _ in chars)
            ldil = tuple(int(rng.integers(1, 3)) for _ in chars)
            ok = all(
                _dil(n, a) + lo + hi >= _dil(k, d) and _dil(n, a) + lo >= 0
                for n, a, (lo, hi), k, d in zip(ns, ldil, padding, ks, rdil, strict=True)
            )
            if not ok:
                continue
        lhs_dims = {"N": n_size, "C": c_size, **dict(zip(chars, ns, strict=True))}
        rhs_dims = {"O": o_size, "I": i_size, **dict(zip(chars, ks, strict=True))}
        case = ConvCase(
            lhs_shape=tuple(lhs_dims[ch] for ch in dn[0]),
            rhs_shape=tuple(rhs_dims[ch] for ch in dn[1]),
            window_strides=strides,
            padding=padding,
            lhs_dilation=ldil,
            rhs_dilation=rdil,
            dimension_numbers=dn,
            feature_group_count=fgc,
            batch_group_count=bgc,
        )
        try:
            out = jax.eval_shape(
                case.lax_conv,
                jax.ShapeDtypeStruct(case.lhs_shape, jnp.float32),
                jax.ShapeDtypeStruct(case.rhs_shape, jnp.float32),
            )
        except (TypeError, ValueError):
            continue
        if 0 in out.shape:
            continue
        return case


def seed_formula_conv1d(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """Seed 1.1(c)(i) as written, by a Python loop over 1-based indices, no padding.

    The seed writes, for ``s = 2`` and ``K = 3`` (``M = 1``),
    ``fw(x)[i, j] = sum_{m=-M}^{M} sum_c x[2i + m][c] W[j]^T[m + M + 1][c]``, ``i = 1, 2``:
    window ``i`` is centred at ``2i = s(i - 1) + M + 1``. This evaluates that centred form for
    any odd ``K = 2M + 1`` and stride ``s``, for every window that fits in ``x``.
    """
    t_len, _ = x.shape
    f_len, _, k_len = w.shape
    if k_len % 2 != 1:
        raise ValueError(f"the seed's formula needs an odd kernel size, got K={k_len}")
    m_half = (k_len - 1) // 2
    rows = []
    i = 1
    while stride * (i - 1) + 2 * m_half + 1 <= t_len:  # last tap of window i inside x[1..T]
        centre = stride * (i - 1) + m_half + 1  # 1-based
        row = []
        for j in range(1, f_len + 1):
            acc = 0.0
            for m in range(-m_half, m_half + 1):
                for c in range(1, x.shape[1] + 1):
                    acc += x[centre + m - 1, c - 1] * w[j - 1, c - 1, m + m_half]
            row.append(acc)
        rows.append(row)
        i += 1
    return np.asarray(rows)


def case_results(case: ConvCase, lhs, rhs, g) -> dict[str, tuple]:
    """Closed form and autodiff reference of every formula for one config, as ``name: (got,
    want)``, computed in ONE jitted program (one compile per config)."""
    from gated_jax import conv

    args = (case.window_strides, case.padding)

    def loss(f, lhs, rhs):
        return jnp.sum(jnp.sin(f(lhs, rhs)) * g)

    def ours(lhs, rhs):
        return conv.conv_general_dilated(lhs, rhs, *args, **case.config)

    def run(lhs, rhs, g):
        _, vjp = jax.vjp(case.lax_conv, lhs, rhs)
        ref_dl, ref_dw = vjp(g)
        jw = conv.conv_weight_jacobian(lhs, case.rhs_shape, *args, **case.config)
        ji = conv.conv_input_jacobian(rhs, case.lhs_shape, *args, **case.config)
        dw = conv.conv_weight_grad(lhs, g, case.rhs_shape, *args, **case.config)
        dl = conv.conv_input_grad(rhs, g, case.lhs_shape, *args, **case.config)
        hi = lax.Precision.HIGHEST
        return {
            "weight_jacobian": (jw, jax.jacrev(case.lax_conv, argnums=1)(lhs, rhs)),
            "input_jacobian": (ji, jax.jacrev(case.lax_conv, argnums=0)(lhs, rhs)),
            "weight_grad": (dw, ref_dw),
            "input_grad": (dl, ref_dl),
            # two closed forms against each other, no autodiff: grad = J^T g
            "jacobian_transpose": (
                (dw, dl),
                (
                    jnp.tensordot(g, jw, axes=g.ndim, precision=hi),
                    jnp.tensordot(g, ji, axes=g.ndim, precision=hi),
                ),
            ),
            "custom_vjp": (
                jax.grad(loss, argnums=(1, 2))(ours, lhs, rhs),
                jax.grad(loss, argnums=(1, 2))(case.lax_conv, lhs, rhs),
            ),
        }

    return jax.jit(run)(lhs, rhs, g)


def checks(seed: int, *, n_cases: int = 8, conv1d_cases: int | None = None) -> list[Check]:
    """One row per closed form of :mod:`gated_jax.conv`, on randomized float64 configs.

    ``n_cases`` random configs (1-3 spatial dims, see :func:`random_case`) each check every
    closed form in one jitted program; ``conv1d`` is checked against the seed's formula on
    ``conv1d_cases`` (default: all 36) combinations of length, filters, kernel size, stride.
    """
    from gated_jax import conv

    rng = np.random.default_rng(seed)
    names = (
        "weight_jacobian",
        "input_jacobian",
        "weight_grad",
        "input_grad",
        "jacobian_transpose",
        "custom_vjp",
    )
    worst = dict.fromkeys((*names, "conv1d"), 0.0)
    for _ in range(n_cases):
        case = random_case(rng, max_size=5)
        lhs, rhs = case.arrays(rng)
        out_shape = jax.eval_shape(case.lax_conv, lhs, rhs).shape
        g = jnp.asarray(rng.standard_normal(out_shape))
        for name, (got, want) in case_results(case, lhs, rhs, g).items():
            worst[name] = max(worst[name], max_rel_error(got, want))

    c1_cases = 0
    combos = list(itertools.product((5, 9), (2,), (1, 3), (1, 3, 5), (1, 2, 3)))
    for t_len, c_len, f_len, k_len, stride in combos[:conv1d_cases]:
        if k_len > t_len:
            continue
        x = rng.standard_normal((t_len, c_len))
        w = rng.standard_normal((f_len, c_len, k_len))
        want = seed_formula_conv1d(x, w, stride)
        got = conv.conv1d(jnp.asarray(x), jnp.asarray(w), stride=stride)
        worst["conv1d"] = max(worst["conv1d"], max_rel_error(got, want))
        c1_cases += 1

    ref_vjp = "`jax.vjp(lax.conv_general_dilated)`"
    return [
        Check(
            "conv",
            "weight Jacobian `dy/dW[..] = delta_oo' * patch (x E)`",
            "`jax.jacrev`",
            worst["weight_jacobian"],
            n_cases,
        ),
        Check(
            "conv",
            "input Jacobian `dy/dx[..] = sum_k W[k] E[p,k,t]` (0 outside windows)",
            "`jax.jacrev`",
            worst["input_jacobian"],
            n_cases,
        ),
        Check(
            "conv",
            "weight grad: x correlated with stride-dilated dl/dy (one conv)",
            ref_vjp,
            worst["weight_grad"],
            n_cases,
        ),
        Check(
            "conv",
            "input grad: stride-dilated dl/dy convolved with flipped W (one conv)",
            ref_vjp,
            worst["input_grad"],
            n_cases,
        ),
        Check(
            "conv",
            "one-conv gradients = dense Jacobians^T @ dl/dy (closed form vs closed form)",
            "`conv_*_jacobian` above",
            worst["jacobian_transpose"],
            n_cases,
        ),
        Check(
            "conv",
            "custom-VJP `conv_general_dilated` gradient",
            "`jax.grad` of lax",
            worst["custom_vjp"],
            n_cases,
        ),
        Check(
            "conv",
            "`conv1d` = seed 1.1(c)(i) `sum_m sum_c x[s i + m][c] W[m+M+1][c]`",
            "seed formula, Python loop",
            worst["conv1d"],
            c1_cases,
        ),
    ]
