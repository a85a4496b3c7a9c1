r"""Exact convolution shape arithmetic: JAX's rules, complete, explained and strict.

Seed 1.1(a) and 1.1(b). For one spatial dimension of size :math:`H`, a kernel of :math:`K`
taps with dilation :math:`D`, stride :math:`S`, padding :math:`(lo, hi)` and input
(``lhs``) dilation :math:`L`, JAX (``lax.conv_general_dilated``) computes

.. math::

    \mathrm{dil}(x, r) &= 0 \text{ if } x = 0 \text{ else } (x - 1) r + 1, \qquad
    K_\mathrm{eff} = \mathrm{dil}(K, D) = K + (K - 1)(D - 1), \\
    H_\mathrm{out} &= \max\Big(0,\ \Big\lfloor
        \frac{\mathrm{dil}(H, L) + lo + hi - K_\mathrm{eff}}{S} \Big\rfloor + 1\Big).

Padding is applied *after* input dilation and may be negative (it then crops) as long as the
padded size stays :math:`\ge 0`. ``'SAME'`` pads a total of
:math:`\max(0, (\lceil H/S \rceil - 1) S + K_\mathrm{eff} - H)`, ``lo = total // 2`` (the extra
row goes at the end; ``'SAME_LOWER'`` puts it at the start), so the output is
:math:`\lceil H/S \rceil`. The output's batch is :math:`N / \text{batch\_group\_count}` and its
feature count is the kernel's ``O``.

Seed 1.1(a): a :math:`10 \times 11` input, :math:`3 \times 3` kernel, stride 2, no padding:
:math:`\lfloor (10 - 3)/2 \rfloor + 1 = 4` and :math:`\lfloor (11 - 3)/2 \rfloor + 1 = 5`,
so :math:`4 \times 5`. (The seed's arithmetic ``(10 - (3 - 2))/2 = 4.5 ≈ 4`` is not this rule;
it lands on 4 by luck. The true quotient ``(10 - 3)/2 + 1 = 4.5`` is floored because the last
input row is covered by no window.)

Seed 1.1(b): an input of :math:`C \times H \times W` and :math:`F` filters of
:math:`C \times K \times K` give :math:`F \times H_1 \times W_1` with
:math:`H_1 = \lfloor (H + 2P - (K + (K-1)(D-1)))/S \rfloor + 1` (and the same for :math:`W`),
clamped at 0, for symmetric padding :math:`P`. The seed leaves out asymmetric and string
padding, input dilation, grouped convolutions (``C`` need only be divisible by the group count,
the kernel then has ``C / G`` input channels) and the clamp at 0.

JAX's own helpers are incomplete (``lax.conv_general_shape_tuple`` has no dilation or group
arguments and returns ``np.int64``; ``lax.conv_transpose_shape_tuple`` ignores ``rhs_dilation``)
and ``jax.eval_shape`` accepts configs that XLA cannot compile (stride <= 0, zero-size kernel
windows, dilation sequences of the wrong length, malformed ``ConvDimensionNumbers``). The
functions here agree with ``jax.eval_shape`` wherever JAX's op works and raise a ``ValueError``
naming the argument, its value and the broken rule everywhere else.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from jax import lax

__all__ = [
    "ConvExplanation",
    "ConvLayer",
    "ReceptiveField",
    "conv_output_shape",
    "conv_output_size",
    "conv_transpose_output_shape",
    "explain_conv",
    "flax_conv_output_shape",
    "padding_pairs",
    "receptive_field",
]

_LAX_PADDINGS = ("SAME", "SAME_LOWER", "VALID")


# ----------------------------------------------------------------------------------------------
# small validated conversions


def _index(value: Any, name: str) -> int:
    """``operator.index(value)`` with a ``ValueError`` naming ``name`` (floats, bools rejected)."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} (={value!r}) must be an integer, not a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} (={value!r}) must be an integer") from None


def _shape(shape: Any, name: str) -> tuple[int, ...]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, np.ndarray)):
        raise ValueError(f"{name} (={shape!r}) must be a sequence of non-negative integers")
    dims = tuple(_index(d, f"{name}[{i}]") for i, d in enumerate(shape))
    for i, d in enumerate(dims):
        if d < 0:
            raise ValueError(f"{name} (={tuple(shape)!r}) has a negative size {d} in dim {i}")
    return dims


def _int_seq(value: Any, name: str, n: int, *, positive: bool, why: str = "") -> tuple[int, ...]:
    """A length-``n`` tuple of ints from a sequence (``None`` means all ones)."""
    if value is None:
        return (1,) * n
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise ValueError(f"{name} (={value!r}) must be a sequence of {n} integers")
    vals = tuple(_index(v, f"{name}[{i}]") for i, v in enumerate(value))
    if len(vals) != n:
        raise ValueError(
            f"{name} (={tuple(value)!r}) has {len(vals)} entries, but the convolution has "
            f"{n} spatial dimension{'s' if n != 1 else ''}"
        )
    if positive:
        for i, v in enumerate(vals):
            if v <= 0:
                raise ValueError(
                    f"{name} (={vals!r}) must be positive, got {v} in spatial dim {i}{why}"
                )
    return vals


def _dilate(x: int, r: int) -> int:
    """Size of ``x`` elements with ``r - 1`` zeros inserted between neighbours."""
    return 0 if x == 0 else (x - 1) * r + 1


def _out_size(padded: int, keff: int, stride: int) -> int:
    """JAX's ``core.stride_dim``: windows of ``keff`` at ``stride`` that fit in ``padded``."""
    return max(0, (padded - keff) // stride + 1)


def _same_pads(n: int, keff: int, s: int, lower: bool) -> tuple[int, int]:
    out = -(-n // s)
    total = max(0, (out - 1) * s + keff - n)
    small, big = total // 2, total - total // 2
    return (big, small) if lower else (small, big)


def _explicit_pairs(padding: Any, n: int, name: str = "padding") -> tuple[tuple[int, int], ...]:
    """``padding`` as lax takes it: a sequence of ``n`` ``(lo, hi)`` integer pairs."""
    if isinstance(padding, (str, bytes)) or not isinstance(padding, (Sequence, np.ndarray)):
        raise ValueError(
            f"{name} (={padding!r}) must be 'SAME', 'SAME_LOWER', 'VALID' or a sequence of "
            f"{n} (low, high) integer pairs"
        )
    pairs = []
    for i, p in enumerate(padding):
        if isinstance(p, (str, bytes)) or not isinstance(p, (Sequence, np.ndarray)) or len(p) != 2:
            raise ValueError(f"{name}[{i}] (={p!r}) must be a (low, high) pair of integers")
        pairs.append((_index(p[0], f"{name}[{i}][0]"), _index(p[1], f"{name}[{i}][1]")))
    if len(pairs) != n:
        raise ValueError(
            f"{name} (={padding!r}) has {len(pairs)} (low, high) pairs, but the convolution "
            f"has {n} spatial dimension{'s' if n != 1 else ''}"
        )
    return tuple(pairs)


def _pad_string(padding: str, name: str = "padding") -> str:
    mode = padding.upper()
    if mode not in _LAX_PADDINGS:
        raise ValueError(f"{name} (={padding!r}) must be one of 'SAME', 'SAME_LOWER', 'VALID'")
    return mode


def _dimension_numbers(dimension_numbers: Any, ndim: int) -> tuple[tuple[int, ...], ...]:
    """``(lhs_perm, rhs_perm, out_perm)``, each ``(batch/O, feature/I, spatial...)`` indices."""
    if dimension_numbers is None:
        iota = tuple(range(ndim))
        return iota, iota, iota
    name = "dimension_numbers"
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        perms = []
        for part, spec in zip(("lhs_spec", "rhs_spec", "out_spec"), dimension_numbers, strict=True):
            try:
                perm = tuple(_index(v, name) for v in spec)
            except (ValueError, TypeError):
                raise ValueError(
                    f"{name} (={dimension_numbers!r}): {part} must be a tuple of integers"
                ) from None
            if sorted(perm) != list(range(ndim)):
                raise ValueError(
                    f"{name} (={dimension_numbers!r}): {part} (={perm!r}) must be a "
                    f"permutation of range({ndim}) (one entry per array dimension)"
                )
            perms.append(perm)
        return tuple(perms)
    if not isinstance(dimension_numbers, (list, tuple)):
        raise ValueError(
            f"{name} (={dimension_numbers!r}) must be None, a (lhs_spec, rhs_spec, out_spec) "
            "tuple of strings or a lax.ConvDimensionNumbers"
        )
    if len(dimension_numbers) != 3 or not all(isinstance(s, str) for s in dimension_numbers):
        raise ValueError(
            f"{name} (={dimension_numbers!r}) must be three strings (lhs_spec, rhs_spec, "
            "out_spec), e.g. ('NCHW', 'OIHW', 'NCHW')"
        )
    for part, spec in zip(("lhs_spec", "rhs_spec", "out_spec"), dimension_numbers, strict=True):
        if len(spec) != ndim:
            raise ValueError(
                f"{name} (={tuple(dimension_numbers)!r}): {part} {spec!r} has {len(spec)} "
                f"characters, but the arrays have {ndim} dimensions"
            )
    try:
        perms = lax.conv_general_permutations(tuple(dimension_numbers))
    except TypeError as e:
        raise ValueError(f"{name} (={tuple(dimension_numbers)!r}): {e}") from None
    return tuple(tuple(int(i) for i in p) for p in perms)


# ----------------------------------------------------------------------------------------------
# the lax rules


def conv_output_shape(
    lhs_shape: Sequence[int],
    rhs_shape: Sequence[int],
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
) -> tuple[int, ...]:
    r"""Output shape of ``lax.conv_general_dilated`` for arrays of these shapes.

    Same arguments as ``lax.conv_general_dilated`` with shapes in place of arrays. Per spatial
    dimension (in the order of the kernel spec's non-``O``/``I`` characters):

    .. math::

        H_\mathrm{out} = \max\Big(0, \Big\lfloor \frac{\mathrm{dil}(H, L) + lo + hi
            - \mathrm{dil}(K, D)}{S} \Big\rfloor + 1\Big), \qquad
        \mathrm{dil}(x, r) = 0 \text{ if } x = 0 \text{ else } (x-1) r + 1,

    batch ``N // batch_group_count``, features ``O`` (the kernel's output-feature size).

    Args:
      lhs_shape: input shape, ``n + 2`` non-negative ints (``n >= 0`` spatial dims).
      rhs_shape: kernel shape, ``n + 2`` non-negative ints.
      window_strides: ``n`` positive ints.
      padding: ``'SAME'``, ``'SAME_LOWER'``, ``'VALID'`` (any case) or ``n`` ``(lo, hi)`` int
        pairs (negative values crop).
      lhs_dilation, rhs_dilation: ``None`` or ``n`` positive ints.
      dimension_numbers: ``None`` (``'NC...'``, ``'OI...'``, ``'NC...'``), three spec strings
        in any order of their characters, or a ``lax.ConvDimensionNumbers``.
      feature_group_count, batch_group_count: positive ints, at most one of them ``> 1``.

    Returns:
      The output shape as a tuple of Python ints, equal to
      ``jax.eval_shape(lax.conv_general_dilated, ...)`` for every config JAX accepts.

    Raises:
      ValueError: naming the argument, its value and the rule, for every config JAX rejects,
        and also where JAX's shape rule lets through what XLA cannot compile: a stride
        ``<= 0``, a zero-size kernel window, a dilation sequence of the wrong length (JAX
        right-aligns it against ``(N, C, *spatial)``, so a long one dilates the feature dim
        and a short one skips the leading spatial dims; XLA then refuses it), a
        ``ConvDimensionNumbers`` whose specs are not permutations, and non-integer group
        counts. Unlike JAX, an empty dilation sequence for ``n >= 1`` is rejected too.

    >>> conv_output_shape((1, 1, 10, 11), (1, 1, 3, 3), (2, 2), "VALID")  # seed 1.1(a)
    (1, 1, 4, 5)
    """
    lhs = _shape(lhs_shape, "lhs_shape")
    rhs = _shape(rhs_shape, "rhs_shape")
    if len(lhs) != len(rhs):
        raise ValueError(
            f"lhs_shape (={lhs!r}) and rhs_shape (={rhs!r}) must have the same number of "
            f"dimensions, got {len(lhs)} and {len(rhs)}"
        )
    if len(lhs) < 2:
        raise ValueError(
            f"lhs_shape (={lhs!r}) needs at least 2 dimensions (batch and feature), got {len(lhs)}"
        )
    ndim = len(lhs)
    n = ndim - 2
    lhs_perm, rhs_perm, out_perm = _dimension_numbers(dimension_numbers, ndim)
    batch, feat, *lhs_sp = (lhs[i] for i in lhs_perm)
    out_f, in_f, *k_sp = (rhs[i] for i in rhs_perm)

    g = _index(feature_group_count, "feature_group_count")
    if g <= 0:
        raise ValueError(f"feature_group_count (={g}) must be a positive integer")
    if feat % g:
        raise ValueError(
            f"feature_group_count (={g}) must divide the input feature dimension "
            f"(lhs_shape[{lhs_perm[1]}] = {feat}, lhs_shape={lhs!r})"
        )
    if feat // g != in_f:
        raise ValueError(
            f"rhs_shape (={rhs!r}): its input-feature size rhs_shape[{rhs_perm[1]}] = {in_f} must "
            f"equal the input features divided by feature_group_count, {feat} // {g} = "
            f"{feat // g} (lhs_shape={lhs!r})"
        )
    if out_f % g:
        raise ValueError(
            f"feature_group_count (={g}) must divide the kernel's output-feature size "
            f"rhs_shape[{rhs_perm[0]}] = {out_f} (rhs_shape={rhs!r})"
        )
    bg = _index(batch_group_count, "batch_group_count")
    if bg <= 0:
        raise ValueError(f"batch_group_count (={bg}) must be a positive integer")
    if bg > 1 and batch % bg:
        raise ValueError(
            f"batch_group_count (={bg}) must divide the input batch size "
            f"lhs_shape[{lhs_perm[0]}] = {batch} (lhs_shape={lhs!r})"
        )
    if out_f % bg:
        raise ValueError(
            f"batch_group_count (={bg}) must divide the kernel's output-feature size "
            f"rhs_shape[{rhs_perm[0]}] = {out_f} (rhs_shape={rhs!r})"
        )
    if bg > 1 and g > 1:
        raise ValueError(
            f"at most one of feature_group_count (={g}) and batch_group_count (={bg}) may be > 1"
        )

    strides = _int_seq(
        window_strides,
        "window_strides",
        n,
        positive=True,
        why=" (XLA cannot lower a stride <= 0)",
    )
    ld = _int_seq(lhs_dilation, "lhs_dilation", n, positive=True)
    rd = _int_seq(rhs_dilation, "rhs_dilation", n, positive=True)
    for i, k in enumerate(k_sp):
        if k == 0:
            raise ValueError(
                f"rhs_shape (={rhs!r}) has a zero-size kernel window in spatial dim {i} "
                f"(rhs_shape[{rhs_perm[2 + i]}] = 0); XLA cannot lower an empty window"
            )
    keff = [_dilate(k, r) for k, r in zip(k_sp, rd, strict=True)]
    if isinstance(padding, str):
        if any(d != 1 for d in ld):
            raise ValueError(
                f"padding (={padding!r}) must be explicit (low, high) pairs when lhs_dilation "
                f"(={ld!r}) is not all ones (use conv_transpose for string padding)"
            )
        pads = padding_pairs(_pad_string(padding), lhs_sp, k_sp, strides, rd)
    else:
        pads = _explicit_pairs(padding, n)

    out_sp = []
    for i, (x, r, (lo, hi), ke, s) in enumerate(zip(lhs_sp, ld, pads, keff, strides, strict=True)):
        padded = _dilate(x, r) + lo + hi
        if padded < 0:
            raise ValueError(
                f"padding (={pads!r}) crops more than the input has in spatial dim {i}: "
                f"dil({x}, {r}) + {lo} + {hi} = {padded} < 0 (lhs_shape={lhs!r})"
            )
        out_sp.append(_out_size(padded, ke, s))
    out_trans = (batch // bg, out_f, *out_sp)
    out = [0] * ndim
    for i, p in enumerate(out_perm):
        out[p] = int(out_trans[i])
    return tuple(out)


def conv_output_size(
    size: int,
    kernel_size: int,
    *,
    stride: int = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int = 1,
    input_dilation: int = 1,
) -> int:
    r"""The 1-D rule of seed 1.1(b), exactly as JAX applies it.

    .. math::

        H_\mathrm{out} = \max\Big(0, \Big\lfloor
            \frac{\mathrm{dil}(H, L) + lo + hi - (K + (K-1)(D-1))}{S} \Big\rfloor + 1\Big)

    with ``H = size``, ``K = kernel_size``, ``S = stride``, ``D = dilation``,
    ``L = input_dilation`` and ``dil(H, L) = (H - 1) L + 1`` (0 for ``H = 0``). The seed's
    ``floor((H + 2P - (K + (K-1)(D-1)))/S + 1)`` is the case ``lo = hi = P``, ``L = 1``; it
    omits the clamp at 0 (a kernel wider than the padded input gives 0, never a negative size).

    Args:
      size: input length ``H >= 0``.
      kernel_size: taps ``K >= 1``.
      stride: ``S >= 1``.
      padding: an int (both sides), a ``(lo, hi)`` pair, or ``'SAME'``, ``'SAME_LOWER'``,
        ``'VALID'`` (string padding requires ``input_dilation == 1``, as in JAX).
      dilation: kernel dilation ``D >= 1``.
      input_dilation: ``L >= 1``.

    >>> conv_output_size(10, 3, stride=2), conv_output_size(11, 3, stride=2)  # seed 1.1(a)
    (4, 5)
    """
    n = _index(size, "size")
    if n < 0:
        raise ValueError(f"size (={n}) must be non-negative")
    k = _index(kernel_size, "kernel_size")
    if k <= 0:
        raise ValueError(f"kernel_size (={k}) must be positive (XLA cannot lower an empty window)")
    s = _index(stride, "stride")
    if s <= 0:
        raise ValueError(f"stride (={s}) must be positive")
    d = _index(dilation, "dilation")
    if d <= 0:
        raise ValueError(f"dilation (={d}) must be positive")
    ld = _index(input_dilation, "input_dilation")
    if ld <= 0:
        raise ValueError(f"input_dilation (={ld}) must be positive")
    if isinstance(padding, str):
        mode = _pad_string(padding)
        if ld != 1:
            raise ValueError(
                f"padding (={padding!r}) must be explicit when input_dilation (={ld}) != 1"
            )
        ((lo, hi),) = padding_pairs(mode, (n,), (k,), (s,), (d,))
    elif isinstance(padding, (Sequence, np.ndarray)):
        if len(padding) != 2:
            raise ValueError(f"padding (={padding!r}) must be an int or a (lo, hi) pair")
        lo, hi = _index(padding[0], "padding[0]"), _index(padding[1], "padding[1]")
    else:
        lo = hi = _index(padding, "padding")
    padded = _dilate(n, ld) + lo + hi
    if padded < 0:
        raise ValueError(
            f"padding (={padding!r}) crops more than the input has: "
            f"dil({n}, {ld}) + {lo} + {hi} = {padded} < 0"
        )
    return _out_size(padded, _dilate(k, d), s)


def padding_pairs(
    padding: Any,
    in_spatial: Sequence[int],
    kernel_spatial: Sequence[int],
    strides: Sequence[int],
    rhs_dilation: Sequence[int] | None = None,
) -> tuple[tuple[int, int], ...]:
    r"""Explicit ``(lo, hi)`` padding per spatial dim, as JAX and Flax resolve ``padding``.

    With :math:`K_\mathrm{eff} = (K - 1) D + 1`:

    * ``'VALID'``: ``(0, 0)``.
    * ``'SAME'`` / ``'SAME_LOWER'`` (any case, as lax upper-cases): total
      :math:`t = \max(0, (\lceil H/S \rceil - 1) S + K_\mathrm{eff} - H)`; ``'SAME'`` gives
      ``(t // 2, t - t // 2)`` (extra at the end), ``'SAME_LOWER'`` the reverse.
    * Flax's ``'CIRCULAR'`` / ``'REFLECT'``: ``((K_eff - 1) // 2, K_eff // 2)`` (Flax fills them
      by wrapping / reflecting, then runs ``'VALID'``); ``'CAUSAL'`` (1-D only, as in Flax):
      ``(K_eff - 1, 0)``. These are accepted in any case here; Flax itself needs upper case.
    * an int ``p``: ``(p, p)`` everywhere; a sequence of ``n`` ints or ``(lo, hi)`` pairs.

    Args:
      padding: one of the above.
      in_spatial: input spatial sizes ``H`` (``n`` ints).
      kernel_spatial: kernel spatial sizes ``K``.
      strides: ``S`` per dim.
      rhs_dilation: ``D`` per dim (``None``: ones).

    >>> padding_pairs("SAME", (10,), (4,), (1,))
    ((1, 2),)
    """
    ins = _shape(in_spatial, "in_spatial")
    n = len(ins)
    ks = _int_seq(kernel_spatial, "kernel_spatial", n, positive=True)
    ss = _int_seq(strides, "strides", n, positive=True)
    rd = _int_seq(rhs_dilation, "rhs_dilation", n, positive=True)
    keff = [_dilate(k, r) for k, r in zip(ks, rd, strict=True)]
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return ((0, 0),) * n
        if mode in ("SAME", "SAME_LOWER"):
            return tuple(
                _same_pads(x, ke, s, mode == "SAME_LOWER")
                for x, ke, s in zip(ins, keff, ss, strict=True)
            )
        if mode in ("CIRCULAR", "REFLECT"):
            return tuple(((ke - 1) // 2, ke // 2) for ke in keff)
        if mode == "CAUSAL":
            if n != 1:
                raise ValueError(
                    f"padding (={padding!r}) is only defined for 1 spatial dim (as in Flax), "
                    f"got {n}"
                )
            return ((keff[0] - 1, 0),)
        raise ValueError(
            f"padding (={padding!r}) must be one of 'SAME', 'SAME_LOWER', 'VALID', "
            "'CIRCULAR', 'REFLECT', 'CAUSAL', an int or (lo, hi) pairs"
        )
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        p = int(padding)
        return ((p, p),) * n
    if isinstance(padding, (Sequence, np.ndarray)) and len(padding) == n:
        out = []
        for i, p in enumerate(padding):
            if isinstance(p, (int, np.integer)) and not isinstance(p, bool):
                out.append((int(p), int(p)))
            else:
                out.append(_explicit_pairs([p], 1, f"padding[{i}]")[0])
        return tuple(out)
    raise ValueError(
        f"padding (={padding!r}) must be a padding string, an int, or a sequence of {n} ints "
        "or (lo, hi) pairs"
    )


def _transpose_pads(keff: int, s: int, padding: Any) -> tuple[int, int]:
    """``lax.convolution._conv_transpose_padding`` for one dim (the forward conv's padding)."""
    if padding == "SAME":
        total = keff + s - 2
        lo = keff - 1 if s > keff - 1 else math.ceil(total / 2)
    elif padding == "VALID":
        total = keff + s - 2 + max(keff - s, 0)
        lo = keff - 1
    else:
        lo, total = keff - padding[0] - 1, 2 * keff - 2 - padding[0] - padding[1]
    return lo, total - lo


_TRANSPOSE_DEFAULT_DN = {
    2: ("NC", "IO", "NC"),
    3: ("NHC", "HIO", "NHC"),
    4: ("NHWC", "HWIO", "NHWC"),
    5: ("NHWDC", "HWDIO", "NHWDC"),
}


def conv_transpose_output_shape(
    lhs_shape: Sequence[int],
    rhs_shape: Sequence[int],
    strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    transpose_kernel: bool = False,
    use_consistent_padding: bool = False,
) -> tuple[int, ...]:
    r"""Output shape of ``lax.conv_transpose`` (including ``rhs_dilation``).

    ``lax.conv_transpose`` is ``conv_general_dilated`` with ``lhs_dilation = strides`` and
    window stride 1. With :math:`K_\mathrm{eff} = (K-1)D + 1`:

    * ``'SAME'`` (exact case): output :math:`H S`;
    * ``'VALID'``: :math:`H S + \max(K_\mathrm{eff} - S, 0)`;
    * explicit pairs ``(lo, hi)`` with ``use_consistent_padding=False``: padding of the
      stretched input, :math:`(H-1)S + 1 + lo + hi - K_\mathrm{eff} + 1`;
    * explicit pairs with ``use_consistent_padding=True`` (PyTorch's convention; JAX requires
      each pair to be a ``tuple`` here): the forward conv's padding,
      :math:`(H-1)S + K_\mathrm{eff} - lo - hi`.

    Other strings (``'SAME_LOWER'``, lower case) are passed to ``conv_general_dilated`` as in
    JAX, which accepts them only when all strides are 1. ``transpose_kernel=True`` swaps the
    kernel's ``I``/``O`` roles. Default dimension numbers are TensorFlow's (``'NHWC'``,
    ``'HWIO'``), defined for 0 to 3 spatial dims. Unlike ``lax.conv_transpose_shape_tuple``,
    ``rhs_dilation`` is honoured (``k=3, s=2, d=2, 'VALID'`` on 10 gives 23, not 21).

    >>> conv_transpose_output_shape((1, 10, 1), (3, 1, 1), (2,), "VALID", rhs_dilation=(2,))
    (1, 23, 1)
    """
    lhs = _shape(lhs_shape, "lhs_shape")
    rhs = _shape(rhs_shape, "rhs_shape")
    if len(lhs) != len(rhs):
        raise ValueError(
            f"lhs_shape (={lhs!r}) and rhs_shape (={rhs!r}) must have the same number of "
            f"dimensions, got {len(lhs)} and {len(rhs)}"
        )
    ndim = len(lhs)
    if dimension_numbers is None:
        if ndim not in _TRANSPOSE_DEFAULT_DN:
            raise ValueError(
                f"lhs_shape (={lhs!r}) has {ndim} dimensions; lax.conv_transpose has default "
                "dimension_numbers only for 2 to 5 dimensions, pass dimension_numbers"
            )
        dimension_numbers = _TRANSPOSE_DEFAULT_DN[ndim]
    if ndim < 2:
        raise ValueError(f"lhs_shape (={lhs!r}) needs at least 2 dimensions, got {ndim}")
    n = ndim - 2
    perms = _dimension_numbers(dimension_numbers, ndim)
    dn = lax.ConvDimensionNumbers(*perms)
    rhs_perm = perms[1]
    k_sp = [rhs[i] for i in rhs_perm[2:]]
    ss = _int_seq(strides, "strides", n, positive=True)
    rd = _int_seq(rhs_dilation, "rhs_dilation", n, positive=True)
    for i, k in enumerate(k_sp):
        if k == 0:
            raise ValueError(
                f"rhs_shape (={rhs!r}) has a zero-size kernel window in spatial dim {i}; "
                "XLA cannot lower an empty window"
            )
    keff = [_dilate(k, r) for k, r in zip(k_sp, rd, strict=True)]
    if use_consistent_padding or (isinstance(padding, str) and padding in {"SAME", "VALID"}):
        if isinstance(padding, str):
            if padding not in ("SAME", "VALID") and n > 0:
                raise ValueError(
                    f"padding (={padding!r}) must be 'SAME', 'VALID' (exact case) or pairs "
                    "when use_consistent_padding=True"
                )
            per_dim = [padding] * n
        else:
            if isinstance(padding, (Sequence, np.ndarray)):
                for i, p in enumerate(padding):
                    if not isinstance(p, tuple):
                        raise ValueError(
                            f"padding[{i}] (={p!r}) must be a tuple (low, high): with "
                            "use_consistent_padding=True lax.conv_transpose accepts only tuples"
                        )
            per_dim = list(_explicit_pairs(padding, n))
        pads: Any = tuple(
            _transpose_pads(ke, s, p) for ke, s, p in zip(keff, ss, per_dim, strict=True)
        )
    else:
        pads = padding
        if isinstance(pads, str):
            _pad_string(pads)
            if any(s != 1 for s in ss):
                raise ValueError(
                    f"padding (={padding!r}) is resolved by lax.conv_transpose only as 'SAME' "
                    f"or 'VALID' (exact case); with strides (={ss!r}) not all 1 any other "
                    "string is rejected by conv_general_dilated"
                )
    rhs_eff = list(rhs)
    if transpose_kernel:
        o, i = rhs_perm[0], rhs_perm[1]
        rhs_eff[o], rhs_eff[i] = rhs[i], rhs[o]
    return conv_output_shape(
        lhs,
        tuple(rhs_eff),
        (1,) * n,
        pads,
        lhs_dilation=ss,
        rhs_dilation=rd,
        dimension_numbers=dn,
    )


# ----------------------------------------------------------------------------------------------
# Flax modules


def _flax_broadcast(x: Any, n: int, name: str) -> tuple[int, ...]:
    """Flax's ``maybe_broadcast``: ``None`` -> 1, int -> ``n`` copies, else the sequence."""
    if x is None:
        x = 1
    if isinstance(x, int):
        return (x,) * n
    if isinstance(x, (str, bytes)) or not isinstance(x, (Sequence, np.ndarray)):
        raise ValueError(f"{name} (={x!r}) must be None, an int or a sequence of {n} ints")
    return _int_seq(x, name, n, positive=False)


def _flax_padding(padding: Any, rank: int) -> Any:
    """Flax's ``canonicalize_padding`` with a ``ValueError`` naming ``module.padding``."""
    if isinstance(padding, str):
        return padding
    if isinstance(padding, int):
        return [(padding, padding)] * rank
    if isinstance(padding, Sequence) and len(padding) == rank:
        new = []
        for p in padding:
            if isinstance(p, int):
                new.append((p, p))
            elif isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2:
                new.append(tuple(p))  # linen turns list attributes into tuples when bound
            else:
                break
        if len(new) == rank:
            return new
    raise ValueError(
        f"module.padding (={padding!r}) must be a string, an int, or a sequence of {rank} ints "
        "or (low, high) tuples (Flax's canonicalize_padding)"
    )


def _flax_kind(module: Any) -> tuple[str, str]:
    """``('linen' | 'nnx', 'conv' | 'transpose')``."""
    import flax.linen as nn
    from flax import nnx

    if isinstance(module, nn.ConvTranspose):
        return "linen", "transpose"
    if isinstance(module, (nn.Conv, nn.ConvLocal)):
        return "linen", "conv"
    if isinstance(module, nnx.ConvTranspose):
        return "nnx", "transpose"
    if isinstance(module, nnx.Conv):
        return "nnx", "conv"
    raise ValueError(
        f"module (={type(module).__name__}) must be a flax.linen or flax.nnx Conv, ConvLocal "
        "or ConvTranspose"
    )


def flax_conv_output_shape(module: Any, input_shape: Sequence[int]) -> tuple[int, ...]:
    r"""Output shape of a Flax ``Conv``/``ConvLocal``/``ConvTranspose`` (linen or NNX).

    Mirrors what the module does, without running it: inputs are channels-last
    ``(*batch, *spatial, C)``; zero, one or several batch dims (flattened, then restored);
    ``strides``/``input_dilation``/``kernel_dilation`` of ``None`` mean 1 and an int is
    broadcast; padding is any string Flax accepts (``'SAME'``, ``'SAME_LOWER'``, ``'VALID'`` in
    any case; ``'CIRCULAR'``, ``'REFLECT'`` for ``Conv`` and ``'CAUSAL'`` for 1-D ``Conv``, upper
    case only; ``'CIRCULAR'`` for ``ConvTranspose``), an int, or a sequence of ints or
    ``(lo, hi)`` tuples.

    * ``Conv`` with ``'CIRCULAR'``/``'REFLECT'`` pads ``((K_eff-1)//2, K_eff//2)`` (wrapped /
      reflected, *before* input dilation) and runs ``'VALID'``:
      :math:`\lfloor (\mathrm{dil}(H + K_\mathrm{eff} - 1, L) - K_\mathrm{eff}) / S \rfloor + 1`,
      which is :math:`\lceil H/S \rceil` for ``L = 1``; ``'CAUSAL'`` pads ``(K_eff - 1, 0)``.
    * ``ConvTranspose`` follows :func:`conv_transpose_output_shape`; with ``'CIRCULAR'`` the
      output is folded back to exactly :math:`H S`.

    Args:
      module: a ``flax.linen.Conv``/``ConvLocal``/``ConvTranspose`` (unbound is fine) or a
        ``flax.nnx.Conv``/``ConvTranspose``.
      input_shape: the shape of the array the module would be applied to.

    Raises:
      ValueError: where applying the module would fail (naming ``module.<attribute>`` or
        ``input_shape``), including Flax's own ``AssertionError`` for indivisible groups.
    """
    family, kind = _flax_kind(module)
    shape = _shape(input_shape, "input_shape")
    ks = module.kernel_size
    kernel_size = (ks,) if isinstance(ks, int) else tuple(ks)
    n = len(kernel_size)
    kernel_size = tuple(_index(k, f"module.kernel_size[{i}]") for i, k in enumerate(kernel_size))
    nb = len(shape) - (n + 1)
    if nb < 0:
        raise ValueError(
            f"input_shape (={shape!r}) must have at least {n + 1} dims (spatial dims of "
            f"kernel_size={kernel_size!r} plus features)"
        )
    batch_shape = shape[:nb]
    if nb != 1 and math.prod(shape[nb:]) == 0:
        raise ValueError(
            f"input_shape (={shape!r}): Flax flattens the batch dims with reshape(-1, ...), which "
            "fails when a spatial or feature dim is 0"
        )
    flat_batch = math.prod(batch_shape)
    x_shape = (flat_batch, *shape[nb:])
    in_features = x_shape[-1]
    spatial = list(x_shape[1:-1])
    strides = _flax_broadcast(module.strides, n, "module.strides")
    kd = _flax_broadcast(module.kernel_dilation, n, "module.kernel_dilation")
    features = module.features if family == "linen" else module.out_features
    pad = _flax_padding(module.padding, n)
    if family == "nnx" and in_features != module.in_features:
        raise ValueError(
            f"input_shape (={shape!r}) has {in_features} features, but the module was built "
            f"with in_features={module.in_features}"
        )
    if kind == "conv":
        idil = _flax_broadcast(module.input_dilation, n, "module.input_dilation")
        g = module.feature_group_count
        if in_features % g:
            raise ValueError(
                f"module.feature_group_count (={g}) must divide the input features "
                f"{in_features} (input_shape={shape!r})"
            )
        if isinstance(pad, str) and pad in ("CIRCULAR", "REFLECT", "CAUSAL"):
            if pad == "CAUSAL" and n != 1:
                raise ValueError(
                    f"module.padding (='CAUSAL') is only implemented for 1-D convolutions, "
                    f"kernel_size={kernel_size!r}"
                )
            for i, x in enumerate(spatial):
                ke = (kernel_size[i] - 1) * kd[i] + 1
                lo, hi = ((ke - 1) // 2, ke // 2) if pad != "CAUSAL" else (ke - 1, 0)
                if x == 0 and pad != "CAUSAL" and lo + hi > 0:
                    raise ValueError(
                        f"module.padding (={pad!r}) cannot pad an empty spatial dim {i} "
                        f"(input_shape={shape!r})"
                    )
                spatial[i] = x + lo + hi
            pad = "VALID"
        elif isinstance(pad, str):
            pad = _pad_string(pad, "module.padding")
        lhs = (x_shape[0], *spatial, in_features)
        rhs = (*kernel_size, in_features // g, features)
        spec = "".join(chr(ord("a") + i) for i in range(n))
        out = conv_output_shape(
            lhs,
            rhs,
            strides,
            pad,
            lhs_dilation=idil,
            rhs_dilation=kd,
            dimension_numbers=("N" + spec + "C", spec + "IO", "N" + spec + "C"),
            feature_group_count=g,
        )
    else:
        if n > 3:
            raise ValueError(
                f"module.kernel_size (={kernel_size!r}): lax.conv_transpose (used by Flax's "
                "ConvTranspose) supports at most 3 spatial dims"
            )
        tk = bool(module.transpose_kernel)
        rhs = (*kernel_size, features, in_features) if tk else (*kernel_size, in_features, features)
        circular = isinstance(pad, str) and pad == "CIRCULAR"
        lax_pad = "VALID" if circular else pad
        if isinstance(lax_pad, str) and lax_pad not in ("SAME", "VALID"):
            _pad_string(lax_pad, "module.padding")
        out = conv_transpose_output_shape(
            x_shape, rhs, strides, lax_pad, rhs_dilation=kd, transpose_kernel=tk
        )
        if circular:
            if x_shape[0] == 0 or features == 0:
                raise ValueError(
                    f"module.padding (='CIRCULAR') folds the output with reshape(-1, ...), which "
                    f"fails for an empty batch or zero features (input_shape={shape!r}, "
                    f"features={features})"
                )
            for i, (x, s) in enumerate(zip(spatial, strides, strict=True)):
                if x * s == 0:
                    raise ValueError(
                        f"module.padding (='CIRCULAR') cannot fold onto an empty spatial dim "
                        f"{i} (input_shape={shape!r}, strides={strides!r})"
                    )
            out = (out[0], *(x * s for x, s in zip(spatial, strides, strict=True)), out[-1])
    return (*batch_shape, *out[1:]) if nb != 1 else out


# ----------------------------------------------------------------------------------------------
# receptive fields


class ConvLayer(NamedTuple):
    """One conv or pooling layer for :func:`receptive_field`.

    ``kernel``, ``stride`` and ``dilation`` are ints (1-D) or per-dim tuples; ``padding`` is an
    int (both sides), a ``(lo, hi)`` pair (every dim), or a per-dim sequence of ``(lo, hi)``
    pairs. A plain tuple ``(kernel, stride, dilation, padding)`` (or a prefix) is accepted too.
    """

    kernel: int | tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    dilation: int | tuple[int, ...] = 1
    padding: int | tuple[int, int] | tuple[tuple[int, int], ...] = (0, 0)


class ReceptiveField(NamedTuple):
    r"""Receptive field of one output element of a stack of layers, in input coordinates.

    Output element ``i`` reads input positions in ``[start + i*jump, start + i*jump + size - 1]``
    (positions ``< 0`` or ``>= H`` are padding). Ints for 1-D stacks, per-dim tuples otherwise.
    With dilation or ``stride > kernel`` the support inside this span can have holes.
    """

    size: int | tuple[int, ...]
    jump: int | tuple[int, ...]
    start: int | tuple[int, ...]


def _layer_dims(layer: Any, idx: int) -> tuple[list, bool]:
    if isinstance(layer, dict):
        try:
            layer = ConvLayer(**layer)
        except TypeError as e:
            raise ValueError(f"layers[{idx}] (={layer!r}): {e}") from None
    elif not isinstance(layer, ConvLayer):
        if isinstance(layer, (int, np.integer)):
            layer = (layer,)
        if not isinstance(layer, (Sequence, np.ndarray)) or not 1 <= len(layer) <= 4:
            raise ValueError(
                f"layers[{idx}] (={layer!r}) must be a ConvLayer or a tuple "
                "(kernel, stride=1, dilation=1, padding=(0, 0))"
            )
        layer = ConvLayer(*layer)
    fields = {}
    multi = False
    rank = 1
    for f in ("kernel", "stride", "dilation"):
        v = getattr(layer, f)
        if isinstance(v, (Sequence, np.ndarray)) and not isinstance(v, str):
            multi = True
            rank = max(rank, len(v))
    pad = layer.padding
    per_dim_pad = (
        isinstance(pad, (Sequence, np.ndarray))
        and len(pad) > 0
        and all(isinstance(p, (Sequence, np.ndarray)) for p in pad)
    )
    if per_dim_pad:
        multi = True
        rank = max(rank, len(pad))
    for f in ("kernel", "stride", "dilation"):
        v = getattr(layer, f)
        name = f"layers[{idx}].{f}"
        if isinstance(v, (Sequence, np.ndarray)) and not isinstance(v, str):
            vals = _int_seq(v, name, len(v), positive=True)
            if len(vals) != rank:
                raise ValueError(f"{name} (={v!r}) must have {rank} entries (one per dim)")
        else:
            vals = (_index(v, name),) * rank
            if vals[0] <= 0:
                raise ValueError(f"{name} (={v!r}) must be a positive integer")
        fields[f] = vals
    name = f"layers[{idx}].padding"
    if per_dim_pad:
        pads = _explicit_pairs(pad, rank, name)
    elif isinstance(pad, (Sequence, np.ndarray)):
        if len(pad) != 2:
            raise ValueError(f"{name} (={pad!r}) must be an int, a (lo, hi) pair or (lo, hi) pairs")
        pads = ((_index(pad[0], name), _index(pad[1], name)),) * rank
    else:
        p = _index(pad, name)
        pads = ((p, p),) * rank
    dims = [
        (k, s, d, lo)
        for k, s, d, (lo, _) in zip(
            fields["kernel"], fields["stride"], fields["dilation"], pads, strict=True
        )
    ]
    return dims, multi


def receptive_field(layers: Sequence[Any]) -> ReceptiveField:
    r"""Receptive field (size, jump, start) of a stack of conv/pool layers.

    Layer ``l`` reads, for output ``i``, the positions ``i*s - lo + t*d`` (``t < k``) of its
    input. Composing from the network input (``size = jump = 1``, ``start = 0``):

    .. math::

        \text{size}_l = \text{size}_{l-1} + (k_l - 1) d_l\,\text{jump}_{l-1}, \quad
        \text{jump}_l = s_l\,\text{jump}_{l-1}, \quad
        \text{start}_l = \text{start}_{l-1} - lo_l\,\text{jump}_{l-1}

    (Araujo et al., *Computing receptive fields of convolutional neural networks*, Distill
    2019, who track the centre ``start + (size-1)/2`` instead of the first position). Output
    element ``i`` of the last layer depends on input positions inside
    ``[start + i*jump, start + i*jump + size - 1]``: the support of ``jax.grad`` of that
    output element always lies inside this span (clipped to the input). With non-zero weights,
    no padding, and no holes from dilation or ``stride > kernel``, it *is* the span. Padding on
    an inner layer can leave positions at the span's edge unread: a window that reaches into an
    inner layer's padding reads zeros there, not the input positions the span formula maps them
    to (e.g. layers ``[(2, 1, 1, 0), (4, 4, 1, 1), (3, 1, 1, 2)]`` on 17 inputs: the last
    output's span is 11..16, but input 16 gets no gradient).

    Args:
      layers: a sequence of :class:`ConvLayer`, plain tuples ``(kernel, stride, dilation,
        padding)`` (trailing fields optional) or dicts of those fields.

    Returns:
      :class:`ReceptiveField`, with ints for 1-D stacks (all fields ints) and per-dim tuples
      otherwise.

    >>> receptive_field([ConvLayer(3, 2), ConvLayer(3, 2)])
    ReceptiveField(size=7, jump=4, start=0)
    """
    if isinstance(layers, (str, bytes)) or not isinstance(layers, (Sequence, np.ndarray)):
        raise ValueError(f"layers (={layers!r}) must be a sequence of layers")
    parsed = [_layer_dims(layer, i) for i, layer in enumerate(layers)]
    multi = any(m for _, m in parsed)
    rank = max((len(d) for d, _ in parsed), default=1)
    for i, (d, _) in enumerate(parsed):
        if len(d) not in (1, rank):
            raise ValueError(f"layers[{i}] (={layers[i]!r}) has {len(d)} dims, others {rank}")
    size, jump, start = [1] * rank, [1] * rank, [0] * rank
    for dims, _ in parsed:
        if len(dims) == 1:
            dims = dims * rank
        for a, (k, s, d, lo) in enumerate(dims):
            size[a] += (k - 1) * d * jump[a]
            start[a] -= lo * jump[a]
            jump[a] *= s
    if multi:
        return ReceptiveField(tuple(size), tuple(jump), tuple(start))
    return ReceptiveField(size[0], jump[0], start[0])


# ----------------------------------------------------------------------------------------------
# explanations


class ConvExplanation(str):
    """The text of :func:`explain_conv` (a ``str``), with the numbers as attributes.

    Attributes: ``output_shape`` (tuple of ints: spatial, or ``(F, *spatial)`` when ``filters``
    was given), ``spatial`` (tuple), ``pads`` (``(lo, hi)`` per dim) and ``warnings`` (tuple of
    str).
    """

    output_shape: tuple[int, ...]
    spatial: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    warnings: tuple[str, ...]

    def __new__(cls, text: str, **attrs: Any) -> ConvExplanation:
        obj = super().__new__(cls, text)
        for k, v in attrs.items():
            setattr(obj, k, v)
        return obj

    def __repr__(self) -> str:
        return f"ConvExplanation(output_shape={self.output_shape!r})"

    def __str__(self) -> str:
        return str.__str__(self)


def _per_dim(value: Any, n: int, name: str) -> tuple[Any, ...]:
    if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, str):
        if len(value) != n:
            raise ValueError(f"{name} (={value!r}) must be one value or {n} values (one per dim)")
        return tuple(value)
    return (value,) * n


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.10g}"


def _uncovered(n: int, ld: int, lo: int, hi: int, k: int, d: int, s: int, out: int):
    """Input rows never read by any tap, split into (rows, tail_rows)."""
    padded = _dilate(n, ld) + lo + hi
    if padded > 5_000_000:
        return None
    used = np.zeros(max(padded, 0), dtype=bool)
    if out > 0:
        starts = np.arange(out) * s
        taps = (starts[:, None] + np.arange(k)[None, :] * d).ravel()
        used[taps[taps < padded]] = True
    pos = lo + np.arange(n) * ld  # padded position of input row r
    inside = (pos >= 0) & (pos < padded)
    read = np.zeros(n, dtype=bool)
    read[inside] = used[pos[inside]]
    rows = np.flatnonzero(~read).tolist()
    last = (out - 1) * s + (k - 1) * d if out > 0 else -1
    tail = [r for r in rows if pos[r] > last]
    return rows, tail


def explain_conv(
    input_shape: int | Sequence[int],
    kernel_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: Any = 0,
    dilation: int | Sequence[int] = 1,
    input_dilation: int | Sequence[int] = 1,
    channels: int | None = None,
    filters: int | None = None,
    feature_group_count: int = 1,
    transposed: bool = False,
) -> ConvExplanation:
    r"""A derivation of a convolution's output shape with the numbers substituted, and warnings.

    For each spatial dim (seed 1.1(b)'s rule, JAX's clamp included):

    .. math::

        H_\mathrm{out} = \max\Big(0, \Big\lfloor \frac{\mathrm{dil}(H, L) + lo + hi
            - (K + (K-1)(D-1))}{S} \Big\rfloor + 1\Big)

    and, with ``transposed=True``, ``lax.conv_transpose``'s rule (``L = S``, stride 1,
    ``'SAME'``/``'VALID'`` meaning the forward conv's padding, see
    :func:`conv_transpose_output_shape`). Warnings:

    * input rows no window covers, e.g. seed 1.1(a): ``(10 - 3)/2 + 1 = 4.5 -> 4``, row 9 is
      never read; rows skipped between windows (stride larger than the dilated kernel, or
      dilation holes) and rows cropped by negative padding are listed too;
    * a zero-size output (the dilated kernel is wider than the padded input);
    * asymmetric ``'SAME'``/``'SAME_LOWER'`` padding (odd total: which side gets the extra).

    Args:
      input_shape: spatial sizes (an int for 1-D), e.g. ``(10, 11)`` for seed 1.1(a).
      kernel_size, stride, dilation, input_dilation: an int or one per dim.
      padding: ``'SAME'``, ``'SAME_LOWER'``, ``'VALID'``, an int, or one int / ``(lo, hi)``
        pair per dim, read as :func:`padding_pairs` and Flax read it (so in 2-D ``(1, 2)``
        means 1 on both sides of dim 0 and 2 on both sides of dim 1). Where a sequence of two
        ints cannot be one per dim (1-D, or 3 and more dims) it is a ``(lo, hi)`` pair for
        every dim.
      channels: input channels ``C`` (validated against ``feature_group_count``).
      filters: number of filters ``F``; the output is then ``F x H1 x W1``.
      feature_group_count: groups ``G``; each filter sees ``C / G`` channels.
      transposed: explain ``lax.conv_transpose`` instead.

    Returns:
      :class:`ConvExplanation`, a ``str`` with ``output_shape``, ``spatial``, ``pads`` and
      ``warnings`` attributes.
    """
    if isinstance(input_shape, (int, np.integer)):
        input_shape = (input_shape,)
    ins = _shape(input_shape, "input_shape")
    n = len(ins)
    if n == 0:
        raise ValueError(f"input_shape (={input_shape!r}) needs at least one spatial dim")
    ks = tuple(_index(k, "kernel_size") for k in _per_dim(kernel_size, n, "kernel_size"))
    ss = tuple(_index(s, "stride") for s in _per_dim(stride, n, "stride"))
    ds = tuple(_index(d, "dilation") for d in _per_dim(dilation, n, "dilation"))
    lds = tuple(_index(d, "input_dilation") for d in _per_dim(input_dilation, n, "input_dilation"))
    for name, vals, given in (
        ("kernel_size", ks, kernel_size),
        ("stride", ss, stride),
        ("dilation", ds, dilation),
        ("input_dilation", lds, input_dilation),
    ):
        if any(v <= 0 for v in vals):
            raise ValueError(f"{name} (={given!r}) must be positive")
    g = _index(feature_group_count, "feature_group_count")
    if g <= 0:
        raise ValueError(f"feature_group_count (={g}) must be a positive integer")
    c = None if channels is None else _index(channels, "channels")
    f = None if filters is None else _index(filters, "filters")
    if c is not None and (c <= 0 or c % g):
        raise ValueError(
            f"channels (={c}) must be positive and divisible by feature_group_count (={g})"
        )
    if f is not None and (f <= 0 or f % g):
        raise ValueError(
            f"filters (={f}) must be positive and divisible by feature_group_count (={g})"
        )
    if g > 1 and c is None:
        raise ValueError(f"channels must be given when feature_group_count (={g}) > 1")

    # Resolve padding to explicit pairs (per dim), remembering the string for the text.
    mode = padding.upper() if isinstance(padding, str) else None
    lines: list[str] = []
    warns: list[str] = []
    if transposed:
        if mode is not None and mode not in ("SAME", "VALID"):
            raise ValueError(
                f"padding (={padding!r}) must be 'SAME', 'VALID' or explicit pairs when "
                "transposed=True"
            )
        if any(d != 1 for d in lds):
            raise ValueError(
                f"input_dilation (={input_dilation!r}) must be 1 when transposed=True "
                "(the stride is the input dilation)"
            )
        if mode is not None:
            tpad = mode
        else:
            tpad = padding_pairs(padding, ins, ks, ss, ds)
        cin = c if c is not None else 1
        fo = f if f is not None else 1
        shp = conv_transpose_output_shape(
            (1, *ins, cin),
            (*ks, cin, fo),
            ss,
            tpad if mode is not None else list(tpad),
            rhs_dilation=ds,
        )
        spatial = tuple(shp[1:-1])
        pads = []
        lines.append("transposed convolution (lax.conv_transpose): the input is stretched by")
        lines.append("inserting S-1 zeros between rows (input dilation S), then convolved")
        lines.append("with stride 1:")
        for i in range(n):
            x, k, s, d = ins[i], ks[i], ss[i], ds[i]
            ke = _dilate(k, d)
            if mode is not None:
                lo, hi = _transpose_pads(ke, s, mode)
                how = f"{mode} (forward conv's padding; transposed pads {lo}, {hi})"
            else:
                lo, hi = tpad[i]
                how = f"explicit ({lo}, {hi}) on the stretched input"
            pads.append((lo, hi))
            stretched = _dilate(x, s)
            lines.append(
                f"  dim {i}: H = {x}, K = {k}, D = {d}, S = {s}: K_eff = {k} + ({k} - 1)"
                f"({d} - 1) = {ke}; stretched (H-1)S+1 = {stretched}; padding {how}"
            )
            lines.append(
                f"    H_out = {stretched} + {lo} + {hi} - {ke} + 1 = {spatial[i]}"
                + (f" (clamped from {stretched + lo + hi - ke + 1})" if spatial[i] == 0 else "")
            )
            if spatial[i] == 0:
                warns.append(f"dim {i}: zero-size output")
    else:
        if mode is not None:
            if mode not in _LAX_PADDINGS:
                raise ValueError(
                    f"padding (={padding!r}) must be 'SAME', 'SAME_LOWER', 'VALID', an int, "
                    "a (lo, hi) pair or one per dim"
                )
            if any(d != 1 for d in lds):
                raise ValueError(
                    f"padding (={padding!r}) must be explicit when input_dilation "
                    f"(={input_dilation!r}) is not 1"
                )
            pads = list(padding_pairs(mode, ins, ks, ss, ds))
        elif (
            n != 2
            and isinstance(padding, (Sequence, np.ndarray))
            and len(padding) == 2
            and all(isinstance(p, (int, np.integer)) for p in padding)
        ):
            # Two ints that cannot be one per dim: a (lo, hi) pair for every dim. In 2-D they
            # are per-dim values, as padding_pairs and Flax read them.
            pads = [(int(padding[0]), int(padding[1]))] * n
        else:
            pads = list(padding_pairs(padding, ins, ks, ss, ds))
        spatial_l = []
        for i in range(n):
            x, k, s, d, ld = ins[i], ks[i], ss[i], ds[i], lds[i]
            lo, hi = pads[i]
            ke = _dilate(k, d)
            xd = _dilate(x, ld)
            padded = xd + lo + hi
            if padded < 0:
                raise ValueError(
                    f"padding (={padding!r}) crops more than the input has in dim {i}: "
                    f"{xd} + {lo} + {hi} = {padded} < 0"
                )
            out = _out_size(padded, ke, s)
            spatial_l.append(out)
            ptxt = {
                None: f"explicit ({lo}, {hi})",
                "VALID": "VALID: (0, 0)",
                "SAME": f"SAME: ceil({x}/{s}) = {-(-x // s)} outputs need ({lo}, {hi})",
                "SAME_LOWER": f"SAME_LOWER: ceil({x}/{s}) = {-(-x // s)} outputs need ({lo}, {hi})",
            }[mode]
            ktxt = f"K_eff = K + (K-1)(D-1) = {k} + ({k} - 1)({d} - 1) = {ke}"
            htxt = f"H = {x}" if ld == 1 else f"dil(H, L) = ({x} - 1)*{ld} + 1 = {xd}"
            lines.append(f"dim {i}: {htxt}, K = {k}, D = {d}, S = {s}, padding {ptxt}")
            lines.append(f"  {ktxt}")
            q = (padded - ke) / s
            lines.append(
                f"  H_out = floor(({xd} + {lo} + {hi} - {ke}) / {s}) + 1 = "
                f"floor({_fmt(q)}) + 1 = {math.floor(q) + 1}"
                + (f" -> clamped to {out}" if math.floor(q) + 1 != out else "")
            )
            if out == 0:
                warns.append(
                    f"dim {i}: zero-size output: the dilated kernel K_eff = {ke} is wider than "
                    f"the padded input {padded}"
                )
            if mode in ("SAME", "SAME_LOWER") and lo != hi:
                side = "end" if mode == "SAME" else "start"
                warns.append(
                    f"dim {i}: asymmetric {mode} padding ({lo}, {hi}): the odd total "
                    f"{lo + hi} puts the extra row at the {side} (PyTorch's symmetric "
                    "padding=K//2 differs here)"
                )
            unc = _uncovered(x, ld, lo, hi, k, d, s, out) if out > 0 else None
            if unc is not None:
                rows, tail = unc
                if tail:
                    exact = (padded - ke) / s + 1
                    warns.append(
                        f"dim {i}: {len(tail)} input row(s) {_rows(tail)} covered by no window: "
                        f"({xd}{_signed(lo + hi)} - {ke})/{s} + 1 = {_fmt(exact)} -> {out}"
                    )
                inner = [r for r in rows if r not in set(tail)]
                if inner:
                    warns.append(
                        f"dim {i}: {len(inner)} input row(s) {_rows(inner)} never read by any "
                        "kernel tap (cropped by negative padding, or skipped by stride / "
                        "dilation)"
                    )
        spatial = tuple(spatial_l)
        pads = [tuple(p) for p in pads]

    head = [
        f"input {' x '.join(map(str, ins))}"
        + (f" with C = {c} channels" if c is not None else "")
        + f", kernel {' x '.join(map(str, ks))}"
        + (f", F = {f} filters" if f is not None else "")
        + (f", {g} groups" if g > 1 else "")
    ]
    shape_txt = " x ".join(map(str, spatial))
    tail_lines = [f"output (spatial): {shape_txt}"]
    out_shape: tuple[int, ...] = spatial
    if f is not None:
        out_shape = (f, *spatial)
        tail_lines.append(f"output (C1 x spatial): C1 = F = {f}: {' x '.join(map(str, out_shape))}")
        if c is not None and not transposed:
            tail_lines.append(
                f"kernel shape (F, C/G, K...): {' x '.join(map(str, (f, c // g, *ks)))}"
            )
    body = head + lines + tail_lines
    if warns:
        body += ["warnings:"] + [f"  - {w}" for w in warns]
    return ConvExplanation(
        "\n".join(body),
        output_shape=tuple(out_shape),
        spatial=tuple(spatial),
        pads=tuple(tuple(p) for p in pads),
        warnings=tuple(warns),
    )


def _signed(v: int) -> str:
    return f" + {v}" if v > 0 else (f" - {-v}" if v < 0 else "")


def _rows(rows: list[int]) -> str:
    if len(rows) > 8:
        return f"({', '.join(map(str, rows[:4]))}, ..., {', '.join(map(str, rows[-2:]))})"
    return "(" + ", ".join(map(str, rows)) + ")"
