r"""Exact convolution shape arithmetic: JAX's rules, complete, explained and strict.

For one spatial dimension of size :math:`H`, a kernel of :math:`K` taps with dilation
:math:`D`, stride :math:`S`, padding :math:`(lo, hi)` and input (``lhs``) dilation :math:`L`,
``lax.conv_general_dilated`` computes

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
feature count is the kernel's ``O``; with ``feature_group_count = G`` the kernel has
:math:`C / G` input channels.

Every function here resolves its arguments once into a :class:`ConvConfig` (validation,
padding, dimension numbers), and :mod:`gated_jax.conv` computes on that same object. JAX's own
helpers are incomplete (``lax.conv_general_shape_tuple`` has no dilation or group arguments and
returns ``np.int64``; ``lax.conv_transpose_shape_tuple`` ignores ``rhs_dilation``) and
``jax.eval_shape`` accepts configs that XLA cannot compile (stride <= 0, zero-size kernel
windows, dilation sequences of the wrong length, malformed ``ConvDimensionNumbers``). The
functions here agree with ``jax.eval_shape`` wherever JAX's op works and raise a ``ValueError``
(or ``TypeError``) naming the argument as the caller wrote it, its value and the broken rule
everywhere else.

References:
  Dumoulin and Visin, *A guide to convolution arithmetic for deep learning*, 2016
  (arXiv:1603.07285); the JAX shape rule ``jax/_src/lax/convolution.py``
  (``conv_shape_tuple``, ``_conv_transpose_padding``); Araujo et al., *Computing receptive
  fields of convolutional neural networks*, Distill 2019. The homework's question 1.1 (a)/(b)
  is the first example of :func:`conv_output_size`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax import lax

from gated_jax._validate import fail, positive_int

__all__ = [
    "ConvConfig",
    "ConvExplanation",
    "ConvLayer",
    "ConvTransposeArgs",
    "ReceptiveField",
    "TorchConv",
    "TorchConvTranspose",
    "conv_output_shape",
    "conv_output_size",
    "conv_transpose_output_shape",
    "explain_conv",
    "flax_conv_output_shape",
    "inverse_conv_transpose",
    "padding_for_output",
    "padding_pairs",
    "receptive_field",
    "torch_conv",
    "torch_conv_transpose",
    "transpose_padding_for_output",
]

_LAX_MODES = ("SAME", "SAME_LOWER", "VALID")
_FLAX_MODES = ("CIRCULAR", "REFLECT", "CAUSAL")

# How lax's argument names are spelt by each caller: messages name what the user wrote.
_LAX_NAMES = {
    k: k
    for k in (
        "lhs_shape",
        "rhs_shape",
        "window_strides",
        "padding",
        "lhs_dilation",
        "rhs_dilation",
        "dimension_numbers",
        "feature_group_count",
        "batch_group_count",
    )
}


# ----------------------------------------------------------------------------------------------
# small validated conversions (every message through gated_jax._validate.fail)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_seq(value: Any) -> bool:
    """A sequence of entries: list, tuple or 1-D+ NumPy array (not str/bytes, not a scalar)."""
    if isinstance(value, np.ndarray):
        return value.ndim >= 1
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))


def _int(name: str, value: Any, minimum: int | None = None) -> int:
    """``int(value)`` for an int (Python or NumPy, not bool) ``>= minimum``."""
    if minimum is not None and minimum >= 0:
        return positive_int(name, value, minimum=minimum)
    if not _is_int(value):
        raise fail(name, value, "an int")
    return int(value)


def _shape(name: str, shape: Any) -> tuple[int, ...]:
    if not _is_seq(shape) or not all(_is_int(d) and d >= 0 for d in shape):
        raise fail(name, _show(shape), "a sequence of non-negative ints (a shape)")
    return tuple(int(d) for d in shape)


def _show(value: Any) -> Any:
    """A sequence as a tuple (for messages), anything else as it is."""
    if isinstance(value, (list, np.ndarray)):
        try:
            return tuple(value.tolist() if isinstance(value, np.ndarray) else value)
        except TypeError:
            return value
    return value


def _ints(
    name: str, value: Any, n: int, *, minimum: int = 1, none_ok: bool = True, scalar_ok=False
) -> tuple[int, ...]:
    """``n`` ints ``>= minimum`` from a sequence (``None``: ones; an int with ``scalar_ok``)."""
    if value is None and none_ok:
        return (1,) * n
    one = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    kind = "positive ints" if minimum == 1 else f"ints >= {minimum}"
    what = (f"{one} or " if scalar_ok else "") + f"a sequence of {n} {kind} (one per spatial dim)"
    if scalar_ok and _is_int(value):
        if value < minimum:
            raise fail(name, value, what)
        return (int(value),) * n
    if not _is_seq(value):
        raise fail(name, value, what)
    vals = tuple(value)
    if len(vals) != n:
        raise fail(name, _show(value), f"{what}, not {len(vals)} values")
    for i, v in enumerate(vals):
        if not _is_int(v) or v < minimum:
            why = "; XLA cannot lower a stride <= 0" if "stride" in name and _is_int(v) else ""
            raise fail(name, _show(value), f"{what}; entry {i} is {v!r}{why}")
    return tuple(int(v) for v in vals)


def _dilate(x: int, r: int) -> int:
    """Size of ``x`` elements with ``r - 1`` zeros inserted between neighbours."""
    return 0 if x == 0 else (x - 1) * r + 1


def _out_size(padded: int, keff: int, stride: int) -> int:
    """Windows of ``keff`` at ``stride`` that fit in ``padded`` (JAX's ``stride_dim``)."""
    return max(0, (padded - keff) // stride + 1)


# ----------------------------------------------------------------------------------------------
# padding: parsed here and nowhere else


def _parse_padding(
    name: str,
    padding: Any,
    n: int,
    *,
    modes: Sequence[str] = _LAX_MODES,
    exact_case: Sequence[str] = (),
    int_ok: bool = False,
    entry_int_ok: bool = False,
    pair_for_all: bool = False,
) -> str | tuple[tuple[int, int], ...]:
    """The one padding parser: an upper-case mode string, or ``n`` ``(lo, hi)`` int pairs.

    Accepted forms: a string in ``modes`` (any case, except those in ``exact_case``); with
    ``int_ok`` an int ``p`` (``(p, p)`` on every side of every dim); a sequence of ``n``
    entries, each a ``(lo, hi)`` pair (or, with ``entry_int_ok``, an int ``p`` for
    ``(p, p)``); with ``pair_for_all`` a single ``(lo, hi)`` pair of ints for every dim.
    """
    if isinstance(padding, str):
        mode = padding if padding.upper() in exact_case else padding.upper()
        if mode in modes:
            return mode
    elif int_ok and _is_int(padding):
        return ((int(padding), int(padding)),) * n
    elif _is_seq(padding):
        entries = list(padding)
        if pair_for_all and len(entries) == 2 and all(_is_int(e) for e in entries):
            return ((int(entries[0]), int(entries[1])),) * n
        if len(entries) == n:
            pairs = []
            for e in entries:
                if entry_int_ok and _is_int(e):
                    pairs.append((int(e), int(e)))
                elif _is_seq(e) and len(e) == 2 and all(_is_int(v) for v in e):
                    pairs.append((int(e[0]), int(e[1])))
                else:
                    break
            if len(pairs) == n:
                return tuple(pairs)
    forms = [" / ".join(repr(m) for m in modes)]
    if int_ok:
        forms.append("an int (every side of every dim)")
    if pair_for_all:
        forms.append("a (lo, hi) pair of ints (every dim)")
    entry = "an int or a (lo, hi) pair" if entry_int_ok else "a (lo, hi) pair of ints"
    forms.append(f"a sequence of {n} entries (one per spatial dim), each {entry}")
    raise fail(name, _show(padding), "one of: " + "; ".join(forms))


def _same_pads(x: int, keff: int, s: int, lower: bool) -> tuple[int, int]:
    total = max(0, (-(-x // s) - 1) * s + keff - x)
    small, big = total // 2, total - total // 2
    return (big, small) if lower else (small, big)


def _mode_pairs(
    name: str, mode: str, ins: Sequence[int], keff: Sequence[int], strides: Sequence[int]
) -> tuple[tuple[int, int], ...]:
    """Explicit pairs of a padding mode (lax's ``padtype_to_pads`` and Flax's modes)."""
    if mode == "VALID":
        return ((0, 0),) * len(ins)
    if mode in ("SAME", "SAME_LOWER"):
        return tuple(
            _same_pads(x, ke, s, mode == "SAME_LOWER")
            for x, ke, s in zip(ins, keff, strides, strict=True)
        )
    if mode in ("CIRCULAR", "REFLECT"):
        return tuple(((ke - 1) // 2, ke // 2) for ke in keff)
    if len(ins) != 1:  # CAUSAL
        raise fail(name, mode, f"used with 1 spatial dim only (as in Flax), not {len(ins)}")
    return ((keff[0] - 1, 0),)


def _transpose_pads(keff: int, s: int, padding: Any) -> tuple[int, int]:
    """lax's ``_conv_transpose_padding`` for one dim (``padding``: the forward conv's)."""
    if padding == "SAME":
        total = keff + s - 2
        lo = keff - 1 if s > keff - 1 else math.ceil(total / 2)
    elif padding == "VALID":
        total = keff + s - 2 + max(keff - s, 0)
        lo = keff - 1
    else:
        lo, total = keff - padding[0] - 1, 2 * keff - 2 - padding[0] - padding[1]
    return lo, total - lo


_PADDING_RULES: dict[str, dict[str, bool]] = {
    "lax": {},
    "flax": {"int_ok": True, "entry_int_ok": True},
    "pair": {"int_ok": True, "pair_for_all": True},
}

# ----------------------------------------------------------------------------------------------
# dimension numbers


def _dimension_numbers(name: str, dimension_numbers: Any, ndim: int) -> lax.ConvDimensionNumbers:
    """lax's ``ConvDimensionNumbers`` (``(batch/O, feature/I, spatial...)`` indices) or an error."""
    if dimension_numbers is None:
        iota = tuple(range(ndim))
        return lax.ConvDimensionNumbers(iota, iota, iota)
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        perms = []
        for spec in dimension_numbers:
            ok = _is_seq(spec) and all(_is_int(v) for v in spec)
            if not ok or sorted(int(v) for v in spec) != list(range(ndim)):
                raise fail(
                    name,
                    dimension_numbers,
                    f"a ConvDimensionNumbers whose lhs_spec, rhs_spec and out_spec are each a "
                    f"permutation of range({ndim}) (one entry per array dimension)",
                )
            perms.append(tuple(int(v) for v in spec))
        return lax.ConvDimensionNumbers(*perms)
    if (
        not isinstance(dimension_numbers, (list, tuple))
        or len(dimension_numbers) != 3
        or not all(isinstance(s, str) for s in dimension_numbers)
    ):
        raise fail(
            name,
            dimension_numbers,
            "None, three spec strings (lhs_spec, rhs_spec, out_spec) such as "
            "('NCHW', 'OIHW', 'NCHW'), or a lax.ConvDimensionNumbers",
        )
    specs = tuple(dimension_numbers)
    if any(len(s) != ndim for s in specs):
        raise fail(name, specs, f"three specs of {ndim} characters (one per array dimension)")
    try:
        perms = lax.conv_general_permutations(specs)
    except (TypeError, ValueError) as e:
        raise fail(name, specs, f"valid lax spec strings ({e})") from None
    return lax.ConvDimensionNumbers(*(tuple(int(i) for i in p) for p in perms))


# ----------------------------------------------------------------------------------------------
# the resolved configuration


def _effective_kernel(name: str, rhs, k_sp, rd) -> list[int]:
    """Dilated kernel sizes per spatial dim; an empty window (XLA cannot lower it) is refused."""
    for i, k in enumerate(k_sp):
        if k == 0:
            raise fail(
                name,
                rhs,
                f"a kernel with no zero-size window (spatial dim {i} is 0): XLA cannot "
                "lower an empty window",
            )
    return [_dilate(k, r) for k, r in zip(k_sp, rd, strict=True)]


@dataclasses.dataclass(frozen=True)
class ConvConfig:
    r"""A ``lax.conv_general_dilated`` configuration, validated and resolved once.

    Built by :meth:`resolve` (or :meth:`resolve_transpose` for ``lax.conv_transpose``, which is
    this convolution with ``lhs_dilation = strides`` and window stride 1). Every per-dim tuple
    is in the order of the kernel spec's spatial characters (lax's convention for
    ``window_strides`` and the dilations).

    Attributes:
      lhs_shape, rhs_shape, out_shape: the input, kernel and output shapes (Python ints).
      dimension_numbers: a ``lax.ConvDimensionNumbers``.
      strides, lhs_dilation, rhs_dilation: per spatial dim.
      padding: explicit ``(lo, hi)`` per spatial dim (any string resolved).
      padding_mode: the upper-case padding string the caller gave, or ``None``.
      feature_group_count, batch_group_count: the group counts.

    Examples:
      >>> cfg = ConvConfig.resolve((1, 1, 10, 11), (1, 1, 3, 3), (2, 2), "SAME")
      >>> cfg.out_shape, cfg.padding, cfg.out_spatial
      ((1, 1, 5, 6), ((0, 1), (1, 1)), (5, 6))
    """

    lhs_shape: tuple[int, ...]
    rhs_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    dimension_numbers: lax.ConvDimensionNumbers
    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    lhs_dilation: tuple[int, ...]
    rhs_dilation: tuple[int, ...]
    feature_group_count: int = 1
    batch_group_count: int = 1
    padding_mode: str | None = None

    @property
    def in_spatial(self) -> tuple[int, ...]:
        """Input spatial sizes :math:`H`."""
        return tuple(self.lhs_shape[i] for i in self.dimension_numbers.lhs_spec[2:])

    @property
    def kernel_spatial(self) -> tuple[int, ...]:
        """Kernel spatial sizes :math:`K`."""
        return tuple(self.rhs_shape[i] for i in self.dimension_numbers.rhs_spec[2:])

    @property
    def out_spatial(self) -> tuple[int, ...]:
        """Output spatial sizes :math:`H_\\mathrm{out}`."""
        return tuple(self.out_shape[i] for i in self.dimension_numbers.out_spec[2:])

    @property
    def kernel_eff(self) -> tuple[int, ...]:
        """Dilated kernel sizes :math:`K_\\mathrm{eff} = (K - 1) D + 1`."""
        return tuple(
            _dilate(k, d) for k, d in zip(self.kernel_spatial, self.rhs_dilation, strict=True)
        )

    @property
    def in_dilated(self) -> tuple[int, ...]:
        """:math:`\\mathrm{dil}(H, L)`: the input stretched by the input dilation."""
        return tuple(_dilate(x, a) for x, a in zip(self.in_spatial, self.lhs_dilation, strict=True))

    @property
    def out_dilated(self) -> tuple[int, ...]:
        """:math:`\\mathrm{dil}(H_\\mathrm{out}, S)`: the output stretched by the stride."""
        return tuple(_dilate(p, s) for p, s in zip(self.out_spatial, self.strides, strict=True))

    @classmethod
    def resolve(
        cls,
        lhs_shape: Sequence[int],
        rhs_shape: Sequence[int],
        window_strides: Sequence[int],
        padding: Any,
        lhs_dilation: Sequence[int] | None = None,
        rhs_dilation: Sequence[int] | None = None,
        dimension_numbers: Any = None,
        feature_group_count: int = 1,
        batch_group_count: int = 1,
        *,
        names: Mapping[str, str] | None = None,
        padding_rule: str = "lax",
    ) -> ConvConfig:
        """Validate and resolve ``lax.conv_general_dilated``'s arguments (shapes for arrays).

        Args:
          lhs_shape, rhs_shape, window_strides, padding, lhs_dilation, rhs_dilation,
            dimension_numbers, feature_group_count, batch_group_count: as
            :func:`conv_output_shape` takes them.
          names: how the caller's user spells each argument, e.g.
            ``{"window_strides": "strides"}``, so that messages name what the user wrote.
          padding_rule: how ``padding`` is read besides the strings: ``'lax'`` (``n``
            ``(lo, hi)`` pairs), ``'flax'`` (also an int for every side of every dim, and
            per-dim entries that are ints or pairs) or ``'pair'`` (an int, one ``(lo, hi)``
            pair for every dim, or ``n`` pairs).

        Returns:
          The :class:`ConvConfig`.

        Raises:
          ValueError: ``` `name` (=value) must be ... ``` for every config JAX rejects, and
            for those ``jax.eval_shape`` lets through but XLA cannot compile.
        """
        nm = {**_LAX_NAMES, **(names or {})}
        lhs = _shape(nm["lhs_shape"], lhs_shape)
        rhs = _shape(nm["rhs_shape"], rhs_shape)
        if len(lhs) < 2:
            raise fail(nm["lhs_shape"], lhs, "a shape of at least 2 dims (batch and feature)")
        if len(lhs) != len(rhs):
            raise fail(
                nm["rhs_shape"], rhs, f"a shape of {len(lhs)} dims, as lhs_shape (={lhs}) has"
            )
        ndim, n = len(lhs), len(lhs) - 2
        dn = _dimension_numbers(nm["dimension_numbers"], dimension_numbers, ndim)
        batch, feat, *lhs_sp = (lhs[i] for i in dn.lhs_spec)
        out_f, in_f, *k_sp = (rhs[i] for i in dn.rhs_spec)

        g = _int(nm["feature_group_count"], feature_group_count, minimum=1)
        bg = _int(nm["batch_group_count"], batch_group_count, minimum=1)
        gname, bname = nm["feature_group_count"], nm["batch_group_count"]
        if feat % g:
            raise fail(gname, g, f"a divisor of the input features {feat} (lhs_shape={lhs})")
        if feat // g != in_f:
            raise fail(
                nm["rhs_shape"],
                rhs,
                f"a kernel with input features {feat} // {gname} (={g}) = {feat // g}, "
                f"not {in_f} (lhs_shape={lhs})",
            )
        if out_f % g:
            raise fail(
                gname, g, f"a divisor of the kernel's output features {out_f} (rhs_shape={rhs})"
            )
        if bg > 1 and g > 1:
            raise fail(bname, bg, f"1 when {gname} (={g}) > 1: at most one of them may be > 1")
        if batch % bg:
            raise fail(bname, bg, f"a divisor of the input batch {batch} (lhs_shape={lhs})")
        if out_f % bg:
            raise fail(
                bname, bg, f"a divisor of the kernel's output features {out_f} (rhs_shape={rhs})"
            )

        strides = _ints(nm["window_strides"], window_strides, n, none_ok=False)
        ld = _ints(nm["lhs_dilation"], lhs_dilation, n)
        rd = _ints(nm["rhs_dilation"], rhs_dilation, n)
        keff = _effective_kernel(nm["rhs_shape"], rhs, k_sp, rd)
        pname = nm["padding"]
        if padding_rule not in _PADDING_RULES:
            raise fail(
                "padding_rule", padding_rule, "one of " + ", ".join(map(repr, _PADDING_RULES))
            )
        spec = _parse_padding(pname, padding, n, **_PADDING_RULES[padding_rule])  # type: ignore[arg-type]
        mode = spec if isinstance(spec, str) else None
        if mode is not None:
            if any(d != 1 for d in ld):
                raise fail(
                    pname,
                    padding,
                    f"explicit (lo, hi) pairs when {nm['lhs_dilation']} (={ld}) is not all "
                    "ones (string padding is defined for lhs_dilation 1 only)",
                )
            pads = _mode_pairs(pname, mode, lhs_sp, keff, strides)
        else:
            pads = spec  # type: ignore[assignment]
        out_sp = []
        for i, (x, r, (lo, hi), ke, s) in enumerate(
            zip(lhs_sp, ld, pads, keff, strides, strict=True)
        ):
            padded = _dilate(x, r) + lo + hi
            if padded < 0:
                raise fail(
                    pname,
                    _show(padding),
                    f"padding that crops no more than the input has: in spatial dim {i}, "
                    f"dil({x}, {r}) + {lo} + {hi} = {padded} < 0",
                )
            out_sp.append(_out_size(padded, ke, s))
        out = [0] * ndim
        for i, p in enumerate(dn.out_spec):
            out[p] = int((batch // bg, out_f, *out_sp)[i])
        return cls(
            lhs_shape=lhs,
            rhs_shape=rhs,
            out_shape=tuple(out),
            dimension_numbers=dn,
            strides=strides,
            padding=tuple(pads),
            lhs_dilation=ld,
            rhs_dilation=rd,
            feature_group_count=g,
            batch_group_count=bg,
            padding_mode=mode,
        )

    @classmethod
    def resolve_transpose(
        cls,
        lhs_shape: Sequence[int],
        rhs_shape: Sequence[int],
        strides: Sequence[int],
        padding: Any,
        rhs_dilation: Sequence[int] | None = None,
        dimension_numbers: Any = None,
        transpose_kernel: bool = False,
        use_consistent_padding: bool = False,
        *,
        names: Mapping[str, str] | None = None,
    ) -> ConvConfig:
        """The ``conv_general_dilated`` config that ``lax.conv_transpose`` runs.

        Arguments as :func:`conv_transpose_output_shape`; ``names`` as in :meth:`resolve`.
        The returned config has window stride 1, ``lhs_dilation = strides`` and the explicit
        padding lax derives; with ``transpose_kernel=True`` its ``rhs_shape`` is the kernel
        with ``I`` and ``O`` exchanged (the flip of the spatial dims does not change shapes).
        """
        nm = {"lhs_shape": "lhs_shape", "rhs_shape": "rhs_shape", "strides": "strides"}
        nm |= {"padding": "padding", "rhs_dilation": "rhs_dilation"}
        nm |= {"dimension_numbers": "dimension_numbers", **(names or {})}
        lhs = _shape(nm["lhs_shape"], lhs_shape)
        rhs = _shape(nm["rhs_shape"], rhs_shape)
        if len(lhs) != len(rhs):
            raise fail(
                nm["rhs_shape"], rhs, f"a shape of {len(lhs)} dims, as lhs_shape (={lhs}) has"
            )
        ndim = len(lhs)
        if dimension_numbers is None:
            if not 2 <= ndim <= 5:
                raise fail(
                    nm["dimension_numbers"],
                    None,
                    f"given for {ndim}-dim arrays: lax.conv_transpose has default dimension "
                    "numbers only for 2 to 5 dims",
                )
            sp = "HWD"[: ndim - 2]
            dimension_numbers = ("N" + sp + "C", sp + "IO", "N" + sp + "C")
        n = ndim - 2
        dn = _dimension_numbers(nm["dimension_numbers"], dimension_numbers, ndim)
        k_sp = [rhs[i] for i in dn.rhs_spec[2:]]
        ss = _ints(nm["strides"], strides, n, none_ok=False)
        rd = _ints(nm["rhs_dilation"], rhs_dilation, n)
        keff = _effective_kernel(nm["rhs_shape"], rhs, k_sp, rd)
        pname = nm["padding"]
        mode = None
        if isinstance(padding, str) and padding in ("SAME", "VALID"):
            mode = padding
            pads: Any = tuple(
                _transpose_pads(ke, s, padding) for ke, s in zip(keff, ss, strict=True)
            )
        elif use_consistent_padding and isinstance(padding, str) and n == 0:
            pads = ()  # lax resolves any string per spatial dim: with none, nothing to check
        elif use_consistent_padding:
            if isinstance(padding, str):
                raise fail(
                    pname,
                    padding,
                    "'SAME', 'VALID' (exact case) or (lo, hi) tuples when "
                    "use_consistent_padding=True",
                )
            if _is_seq(padding) and not all(isinstance(p, tuple) for p in padding):
                raise fail(
                    pname,
                    _show(padding),
                    "a sequence of (lo, hi) tuples: with use_consistent_padding=True "
                    "lax.conv_transpose accepts only tuples",
                )
            fwd = _parse_padding(pname, padding, n, modes=())
            pads = tuple(_transpose_pads(ke, s, p) for ke, s, p in zip(keff, ss, fwd, strict=True))
        else:
            # Other strings go to conv_general_dilated as lax passes them: with lhs_dilation
            # = strides they are accepted only when every stride is 1.
            pads = padding
            if isinstance(padding, str):
                _parse_padding(pname, padding, n)
                if any(s != 1 for s in ss):
                    raise fail(
                        pname,
                        padding,
                        f"'SAME', 'VALID' (exact case) or (lo, hi) pairs: with strides (={ss}) "
                        "not all 1 lax.conv_transpose passes any other string to "
                        "conv_general_dilated, which refuses it",
                    )
        rhs_eff = list(rhs)
        if transpose_kernel:
            o, i = dn.rhs_spec[0], dn.rhs_spec[1]
            rhs_eff[o], rhs_eff[i] = rhs[i], rhs[o]
        cfg = cls.resolve(
            lhs,
            tuple(rhs_eff),
            (1,) * n,
            pads,
            lhs_dilation=ss,
            rhs_dilation=rd,
            dimension_numbers=dn,
            names={
                "lhs_shape": nm["lhs_shape"],
                "rhs_shape": nm["rhs_shape"],
                "lhs_dilation": nm["strides"],
                "rhs_dilation": nm["rhs_dilation"],
                "padding": pname,
                "dimension_numbers": nm["dimension_numbers"],
            },
        )
        return dataclasses.replace(cfg, padding_mode=mode) if mode else cfg


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

    Per spatial dimension (in the order of the kernel spec's non-``O``/``I`` characters):

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
        ``<= 0``, a zero-size kernel window, a dilation sequence of the wrong length, a
        ``ConvDimensionNumbers`` whose specs are not permutations, non-integer group counts.

    Examples:
      >>> conv_output_shape((1, 1, 10, 11), (1, 1, 3, 3), (2, 2), "VALID")
      (1, 1, 4, 5)
      >>> conv_output_shape((8, 32, 32, 3), (3, 3, 3, 16), (1, 1), "SAME",
      ...                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
      (8, 32, 32, 16)
    """
    return ConvConfig.resolve(
        lhs_shape,
        rhs_shape,
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        batch_group_count,
    ).out_shape


def conv_output_size(
    size: int,
    kernel_size: int,
    *,
    stride: int = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int = 1,
    input_dilation: int = 1,
) -> int:
    r"""The 1-D rule, exactly as JAX applies it.

    .. math::

        H_\mathrm{out} = \max\Big(0, \Big\lfloor
            \frac{\mathrm{dil}(H, L) + lo + hi - (K + (K-1)(D-1))}{S} \Big\rfloor + 1\Big)

    with ``H = size``, ``K = kernel_size``, ``S = stride``, ``D = dilation``,
    ``L = input_dilation`` and ``dil(H, L) = (H - 1) L + 1`` (0 for ``H = 0``). The textbook
    ``floor((H + 2P - (K + (K-1)(D-1)))/S + 1)`` is the case ``lo = hi = P``, ``L = 1``
    without the clamp at 0 (a kernel wider than the padded input gives 0, never a negative
    size).

    Args:
      size: input length ``H >= 0``.
      kernel_size: taps ``K >= 1``.
      stride: ``S >= 1``.
      padding: an int (both sides), a ``(lo, hi)`` pair, or ``'SAME'``, ``'SAME_LOWER'``,
        ``'VALID'`` (string padding requires ``input_dilation == 1``, as in JAX).
      dilation: kernel dilation ``D >= 1``.
      input_dilation: ``L >= 1``.

    Returns:
      ``H_out``, a Python int.

    Examples:
      A 10 x 11 input, a 3 x 3 kernel, stride 2: ``floor((10 - 3)/2) + 1 = 4`` and
      ``floor((11 - 3)/2) + 1 = 5`` (the last row of the 10 is covered by no window):

      >>> conv_output_size(10, 3, stride=2), conv_output_size(11, 3, stride=2)
      (4, 5)
      >>> conv_output_size(10, 4, padding="SAME"), conv_output_size(10, 3, padding=(2, 0))
      (10, 10)

    References:
      Homework question 1.1 (a) and (b): the first example above.
    """
    n = _int("size", size, minimum=0)
    k = _int("kernel_size", kernel_size, minimum=1)
    s = _int("stride", stride, minimum=1)
    d = _int("dilation", dilation, minimum=1)
    ld = _int("input_dilation", input_dilation, minimum=1)
    cfg = ConvConfig.resolve(
        (1, 1, n),
        (1, 1, k),
        (s,),
        padding,
        (ld,),
        (d,),
        padding_rule="pair",
        names={
            "window_strides": "stride",
            "lhs_dilation": "input_dilation",
            "rhs_dilation": "dilation",
            "lhs_shape": "size",
            "rhs_shape": "kernel_size",
        },
    )
    return cfg.out_spatial[0]


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
    * Flax's rule for the rest: an int ``p`` is ``(p, p)`` on every dim; a sequence has one
      entry per spatial dim, each an int ``p`` (``(p, p)``) or a ``(lo, hi)`` pair.

    Args:
      padding: one of the above.
      in_spatial: input spatial sizes ``H`` (``n`` ints).
      kernel_spatial: kernel spatial sizes ``K``.
      strides: ``S`` per dim.
      rhs_dilation: ``D`` per dim (``None``: ones).

    Returns:
      ``n`` ``(lo, hi)`` pairs of Python ints.

    Examples:
      >>> padding_pairs("SAME", (10,), (4,), (1,))
      ((1, 2),)
      >>> padding_pairs([1, (0, 2)], (7, 7), (3, 3), (1, 1))
      ((1, 1), (0, 2))
    """
    ins = _shape("in_spatial", in_spatial)
    n = len(ins)
    ks = _ints("kernel_spatial", kernel_spatial, n, none_ok=False)
    ss = _ints("strides", strides, n, none_ok=False)
    rd = _ints("rhs_dilation", rhs_dilation, n)
    spec = _parse_padding(
        "padding", padding, n, modes=_LAX_MODES + _FLAX_MODES, int_ok=True, entry_int_ok=True
    )
    if isinstance(spec, str):
        keff = [_dilate(k, r) for k, r in zip(ks, rd, strict=True)]
        return _mode_pairs("padding", spec, ins, keff, ss)
    return spec


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
    ``'HWIO'``), defined for 0 to 3 spatial dims.

    Args:
      lhs_shape, rhs_shape: input and kernel shapes.
      strides: ``n`` positive ints (the input dilation of the underlying convolution).
      padding: ``'SAME'``, ``'VALID'`` or ``n`` ``(lo, hi)`` pairs (see above).
      rhs_dilation: ``None`` or ``n`` positive ints.
      dimension_numbers: as in ``lax.conv_transpose``.
      transpose_kernel, use_consistent_padding: as in ``lax.conv_transpose``.

    Returns:
      The output shape, equal to ``jax.eval_shape(lax.conv_transpose, ...)``. Unlike
      ``lax.conv_transpose_shape_tuple``, ``rhs_dilation`` is honoured.

    Examples:
      >>> conv_transpose_output_shape((1, 10, 1), (3, 1, 1), (2,), "VALID", rhs_dilation=(2,))
      (1, 23, 1)
      >>> conv_transpose_output_shape((1, 5, 1), (3, 1, 1), (2,), ((1, 1),),
      ...                             use_consistent_padding=True)
      (1, 9, 1)
    """
    return ConvConfig.resolve_transpose(
        lhs_shape,
        rhs_shape,
        strides,
        padding,
        rhs_dilation,
        dimension_numbers,
        transpose_kernel,
        use_consistent_padding,
    ).out_shape


# ----------------------------------------------------------------------------------------------
# Flax modules


def _flax_ints(name: str, value: Any, n: int) -> tuple[int, ...]:
    """Flax's ``maybe_broadcast``: ``None`` -> 1, an int -> ``n`` copies, else ``n`` ints."""
    return _ints(name, value, n, scalar_ok=True)


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
    raise fail(
        "module",
        type(module).__name__,
        "a flax.linen Conv, ConvLocal or ConvTranspose or a flax.nnx Conv or ConvTranspose",
    )


_FLAX_NAMES = {
    "window_strides": "strides",
    "lhs_dilation": "input_dilation",
    "rhs_dilation": "kernel_dilation",
    "lhs_shape": "input_shape",
    "rhs_shape": "kernel_size",
    "strides": "strides",
}


def flax_conv_output_shape(module: Any, input_shape: Sequence[int]) -> tuple[int, ...]:
    r"""Output shape of a Flax ``Conv``/``ConvLocal``/``ConvTranspose`` (linen or NNX).

    Mirrors what the module does, without running it: inputs are channels-last
    ``(*batch, *spatial, C)``; zero, one or several batch dims (flattened, then restored);
    ``strides``/``input_dilation``/``kernel_dilation`` of ``None`` mean 1 and an int is
    broadcast; padding is any string Flax accepts (``'SAME'``, ``'SAME_LOWER'``, ``'VALID'`` in
    any case; ``'CIRCULAR'``, ``'REFLECT'`` for ``Conv`` and ``'CAUSAL'`` for 1-D ``Conv``, upper
    case only; ``'CIRCULAR'`` for ``ConvTranspose``), an int, or a sequence of ints or
    ``(lo, hi)`` pairs, one per spatial dim.

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

    Returns:
      The output shape, equal to applying the module.

    Raises:
      ValueError: where applying the module would fail, naming the module's attribute as the
        user wrote it (``strides``, ``kernel_dilation``, ``padding``, ...) or ``input_shape``,
        including Flax's own ``AssertionError`` for indivisible groups.

    Examples:
      >>> import flax.linen as nn
      >>> flax_conv_output_shape(nn.Conv(16, (3, 3), strides=2), (8, 32, 32, 3))
      (8, 16, 16, 16)
    """
    family, kind = _flax_kind(module)
    shape = _shape("input_shape", input_shape)
    ks = module.kernel_size
    kernel_size = _ints("kernel_size", (ks,) if _is_int(ks) else ks, len(ks) if _is_seq(ks) else 1)
    n = len(kernel_size)
    nb = len(shape) - (n + 1)
    if nb < 0:
        raise fail(
            "input_shape",
            shape,
            f"a shape of at least {n + 1} dims (the {n} spatial dims of kernel_size "
            f"(={kernel_size}) and the features)",
        )
    batch_shape = shape[:nb]
    if nb != 1 and math.prod(shape[nb:]) == 0:
        raise fail(
            "input_shape",
            shape,
            "free of zero-size spatial or feature dims when the batch is not exactly one dim "
            "(Flax flattens the batch dims with reshape(-1, ...))",
        )
    x_shape = (math.prod(batch_shape), *shape[nb:])
    in_features = x_shape[-1]
    spatial = list(x_shape[1:-1])
    strides = _flax_ints("strides", module.strides, n)
    kd = _flax_ints("kernel_dilation", module.kernel_dilation, n)
    features = module.features if family == "linen" else module.out_features
    features = _int("features" if family == "linen" else "out_features", features, minimum=0)
    modes = _LAX_MODES + (_FLAX_MODES if kind == "conv" else ("CIRCULAR",))
    pad = _parse_padding(
        "padding",
        module.padding,
        n,
        modes=modes,
        exact_case=_FLAX_MODES,
        int_ok=True,
        entry_int_ok=True,
    )
    if family == "nnx" and in_features != module.in_features:
        raise fail(
            "input_shape",
            shape,
            f"a shape with in_features (={module.in_features}) features, the module's, "
            f"not {in_features}",
        )
    if kind == "conv":
        idil = _flax_ints("input_dilation", module.input_dilation, n)
        g = _int("feature_group_count", module.feature_group_count, minimum=1)
        if in_features % g:
            raise fail(
                "feature_group_count",
                g,
                f"a divisor of the input features {in_features} (input_shape={shape})",
            )
        if pad in _FLAX_MODES:
            keff = [_dilate(k, d) for k, d in zip(kernel_size, kd, strict=True)]
            pairs = _mode_pairs("padding", pad, spatial, keff, strides)
            for i, (x, (lo, hi)) in enumerate(zip(spatial, pairs, strict=True)):
                if x == 0 and pad != "CAUSAL" and lo + hi > 0:
                    raise fail(
                        "padding",
                        pad,
                        f"used on non-empty spatial dims: it cannot fill dim {i} of size 0 "
                        f"(input_shape={shape})",
                    )
                spatial[i] = x + lo + hi
            pad = "VALID"
        lhs = (x_shape[0], *spatial, in_features)
        rhs = (*kernel_size, in_features // g, features)
        spec = "".join(chr(ord("a") + i) for i in range(n))
        out = ConvConfig.resolve(
            lhs,
            rhs,
            strides,
            pad,
            lhs_dilation=idil,
            rhs_dilation=kd,
            dimension_numbers=("N" + spec + "C", spec + "IO", "N" + spec + "C"),
            feature_group_count=g,
            names=_FLAX_NAMES,
        ).out_shape
    else:
        if n > 3:
            raise fail(
                "kernel_size",
                kernel_size,
                "at most 3 spatial dims: lax.conv_transpose (used by Flax's ConvTranspose) "
                "has no default layout beyond 3",
            )
        tk = bool(module.transpose_kernel)
        rhs = (*kernel_size, features, in_features) if tk else (*kernel_size, in_features, features)
        circular = pad == "CIRCULAR"
        # lax.conv_transpose is given Flax's padding string as written (it tests exact case)
        lax_pad = "VALID" if circular else (module.padding if isinstance(pad, str) else pad)
        out = ConvConfig.resolve_transpose(
            x_shape, rhs, strides, lax_pad, kd, transpose_kernel=tk, names=_FLAX_NAMES
        ).out_shape
        if circular:
            if x_shape[0] == 0 or features == 0:
                raise fail(
                    "padding",
                    "CIRCULAR",
                    f"used with a non-empty batch and features: Flax folds the output with "
                    f"reshape(-1, ...) (input_shape={shape}, features={features})",
                )
            for i, (x, s) in enumerate(zip(spatial, strides, strict=True)):
                if x * s == 0:
                    raise fail(
                        "padding",
                        "CIRCULAR",
                        f"used on non-empty spatial dims: it cannot fold onto dim {i} of size "
                        f"0 (input_shape={shape}, strides={strides})",
                    )
            out = (out[0], *(x * s for x, s in zip(spatial, strides, strict=True)), out[-1])
    return (*batch_shape, *out[1:]) if nb != 1 else out


# ----------------------------------------------------------------------------------------------
# receptive fields


class ConvLayer(NamedTuple):
    """One conv or pooling layer for :func:`receptive_field`.

    ``kernel``, ``stride`` and ``dilation`` are ints (the same in every dim) or per-dim tuples;
    ``padding`` is an int (both sides of every dim), a ``(lo, hi)`` pair of ints (every dim),
    or a per-dim sequence of ``(lo, hi)`` pairs. A plain tuple ``(kernel, stride, dilation,
    padding)`` (or a prefix) is accepted too.
    """

    kernel: int | tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    dilation: int | tuple[int, ...] = 1
    padding: int | tuple[int, int] | tuple[tuple[int, int], ...] = (0, 0)


class ReceptiveField(NamedTuple):
    r"""Receptive field of one output element of a stack of layers, in input coordinates.

    Each field is a tuple with one entry per spatial dim. Along dim ``a``, output element
    ``i`` reads input positions in
    ``[start[a] + i*jump[a], start[a] + i*jump[a] + size[a] - 1]`` (positions ``< 0`` or
    ``>= H`` are padding). With dilation or ``stride > kernel`` the support inside this span
    can have holes.
    """

    size: tuple[int, ...]
    jump: tuple[int, ...]
    start: tuple[int, ...]


def _layer_dims(layer: Any, idx: int) -> list[tuple[int, int, int, int]]:
    """``(kernel, stride, dilation, lo)`` per spatial dim of one layer."""
    name = f"layers[{idx}]"
    if isinstance(layer, dict):
        unknown = sorted(set(layer) - set(ConvLayer._fields))
        if unknown or "kernel" not in layer:
            raise fail(name, layer, f"a dict with the fields {ConvLayer._fields} (kernel required)")
        layer = ConvLayer(**layer)
    elif not isinstance(layer, ConvLayer):
        if _is_int(layer):
            layer = (layer,)
        if not _is_seq(layer) or not 1 <= len(layer) <= 4:
            raise fail(
                name,
                layer,
                "a ConvLayer, an int kernel or a tuple (kernel, stride=1, dilation=1, "
                "padding=(0, 0))",
            )
        layer = ConvLayer(*layer)
    ranks = {len(v) for v in layer[:3] if _is_seq(v)}
    pad = layer.padding
    per_dim_pad = _is_seq(pad) and len(pad) > 0 and all(_is_seq(p) for p in pad)
    if per_dim_pad:
        ranks.add(len(pad))
    if len(ranks) > 1:
        raise fail(name, layer, f"one rank for every field, not {sorted(ranks)}")
    rank = ranks.pop() if ranks else 1
    vals = [
        _ints(f"{name}.{f}", getattr(layer, f), rank, scalar_ok=True) for f in layer._fields[:3]
    ]
    pads = _parse_padding(f"{name}.padding", pad, rank, modes=(), int_ok=True, pair_for_all=True)
    return [(k, s, d, lo) for k, s, d, (lo, _) in zip(*vals, pads, strict=True)]


def receptive_field(layers: Sequence[Any]) -> ReceptiveField:
    r"""Receptive field (size, jump, start) of a stack of conv/pool layers, per spatial dim.

    Layer ``l`` reads, for output ``i``, the positions ``i*s - lo + t*d`` (``t < k``) of its
    input. Composing from the network input (``size = jump = 1``, ``start = 0``):

    .. math::

        \text{size}_l = \text{size}_{l-1} + (k_l - 1) d_l\,\text{jump}_{l-1}, \quad
        \text{jump}_l = s_l\,\text{jump}_{l-1}, \quad
        \text{start}_l = \text{start}_{l-1} - lo_l\,\text{jump}_{l-1}

    Output element ``i`` of the last layer depends on input positions inside
    ``[start + i*jump, start + i*jump + size - 1]``: the support of ``jax.grad`` of that
    output element always lies inside this span (clipped to the input). With non-zero weights,
    no padding, and no holes from dilation or ``stride > kernel``, it *is* the span. Padding on
    an inner layer can leave positions at the span's edge unread: a window that reaches into an
    inner layer's padding reads zeros there, not the input positions the span formula maps them
    to.

    Args:
      layers: a sequence of :class:`ConvLayer`, plain tuples ``(kernel, stride, dilation,
        padding)`` (trailing fields optional), ints (a kernel) or dicts of those fields. A layer
        given with ints everywhere applies to every dim of the others.

    Returns:
      :class:`ReceptiveField` of per-dim tuples (one entry for a stack of 1-D layers).

    Examples:
      >>> receptive_field([ConvLayer(3, 2), ConvLayer(3, 2)])
      ReceptiveField(size=(7,), jump=(4,), start=(0,))
      >>> receptive_field([ConvLayer((3, 5), (2, 1)), (2, 2)])
      ReceptiveField(size=(5, 6), jump=(4, 2), start=(0, 0))

    References:
      Araujo, Norris and Sim, *Computing receptive fields of convolutional neural networks*,
      Distill 2019 (they track the centre ``start + (size - 1)/2`` instead of the first
      position).
    """
    if not _is_seq(layers):
        raise fail("layers", layers, "a sequence of layers")
    parsed = [_layer_dims(layer, i) for i, layer in enumerate(layers)]
    rank = max((len(d) for d in parsed), default=1)
    for i, dims in enumerate(parsed):
        if len(dims) not in (1, rank):
            raise fail(f"layers[{i}]", layers[i], f"a layer of 1 or {rank} dims, as the others")
    size, jump, start = [1] * rank, [1] * rank, [0] * rank
    for dims in parsed:
        for a, (k, s, d, lo) in enumerate(dims * rank if len(dims) == 1 else dims):
            size[a] += (k - 1) * d * jump[a]
            start[a] -= lo * jump[a]
            jump[a] *= s
    return ReceptiveField(tuple(size), tuple(jump), tuple(start))


# ----------------------------------------------------------------------------------------------
# explanations: resolve, then render


@dataclasses.dataclass(frozen=True)
class ConvExplanation:
    """What :func:`explain_conv` returns; ``str()`` of it is the derivation's text.

    Attributes:
      text: the derivation, with the numbers substituted, and the warnings.
      output_shape: spatial sizes, or ``(F, *spatial)`` when ``filters`` was given.
      spatial: the output's spatial sizes.
      pads: explicit ``(lo, hi)`` per dim (for ``transposed``, the padding of the stretched
        input that ``lax.conv_transpose`` uses).
      warnings: one line per surprise (rows no window reads, zero-size output, asymmetric
        ``'SAME'``).
      config: the resolved :class:`ConvConfig` the text was rendered from.
    """

    text: str = dataclasses.field(repr=False)
    output_shape: tuple[int, ...]
    spatial: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    warnings: tuple[str, ...]
    config: ConvConfig = dataclasses.field(repr=False)

    def __str__(self) -> str:
        return self.text


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.10g}"


def _signed(v: int) -> str:
    return f" + {v}" if v > 0 else (f" - {-v}" if v < 0 else "")


def _rows(rows: list[int]) -> str:
    if len(rows) > 8:
        return f"({', '.join(map(str, rows[:4]))}, ..., {', '.join(map(str, rows[-2:]))})"
    return "(" + ", ".join(map(str, rows)) + ")"


def _uncovered(n: int, ld: int, lo: int, hi: int, k: int, d: int, s: int, out: int):
    """Input rows never read by any tap, as (rows, tail_rows); ``None`` when too long to list."""
    padded = _dilate(n, ld) + lo + hi
    if padded > 5_000_000 or n > 5_000_000 or max(abs(lo), abs(hi)) > 5_000_000:
        return None
    s, d, ld = (min(v, padded + 1) for v in (s, d, ld))  # larger steps reach nothing more
    used = np.zeros(max(padded, 0), dtype=bool)
    if out > 0:
        taps_k = min(k, (padded - 1) // d + 1)  # taps at t*d >= padded read nothing
        starts = np.arange(out, dtype=np.int64) * s
        taps = (starts[:, None] + np.arange(taps_k, dtype=np.int64)[None, :] * d).ravel()
        used[taps[taps < padded]] = True
    pos = lo + np.arange(n, dtype=np.int64) * ld  # padded position of input row r
    inside = (pos >= 0) & (pos < padded)
    read = np.zeros(n, dtype=bool)
    read[inside] = used[pos[inside]]
    rows = np.flatnonzero(~read).tolist()
    last = (out - 1) * s + (k - 1) * d if out > 0 else -1
    tail = [r for r in rows if pos[r] > last]
    return rows, tail


def _render_forward(cfg: ConvConfig, mode: str | None) -> tuple[list[str], list[str]]:
    lines: list[str] = []
    warns: list[str] = []
    for i, (x, k, s, d, ld, (lo, hi), out) in enumerate(
        zip(
            cfg.in_spatial,
            cfg.kernel_spatial,
            cfg.strides,
            cfg.rhs_dilation,
            cfg.lhs_dilation,
            cfg.padding,
            cfg.out_spatial,
            strict=True,
        )
    ):
        ke, xd = _dilate(k, d), _dilate(x, ld)
        padded = xd + lo + hi
        same = f"ceil({x}/{s}) = {-(-x // s)} outputs need ({lo}, {hi})"
        ptxt = {
            None: f"explicit ({lo}, {hi})",
            "VALID": "VALID: (0, 0)",
            "SAME": f"SAME: {same}",
            "SAME_LOWER": f"SAME_LOWER: {same}",
        }[mode]
        htxt = f"H = {x}" if ld == 1 else f"dil(H, L) = ({x} - 1)*{ld} + 1 = {xd}"
        lines.append(f"dim {i}: {htxt}, K = {k}, D = {d}, S = {s}, padding {ptxt}")
        lines.append(f"  K_eff = K + (K-1)(D-1) = {k} + ({k} - 1)({d} - 1) = {ke}")
        fl = (padded - ke) // s
        q = _fmt((padded - ke) / s) if abs(padded - ke) < 2**52 else f"{padded - ke}/{s}"
        lines.append(
            f"  H_out = floor(({xd} + {lo} + {hi} - {ke}) / {s}) + 1 = floor({q}) + 1 = {fl + 1}"
            + (f" -> clamped to {out}" if fl + 1 != out else "")
        )
        if out == 0:
            warns.append(
                f"dim {i}: zero-size output: the dilated kernel K_eff = {ke} is wider than "
                f"the padded input {padded}"
            )
        if mode in ("SAME", "SAME_LOWER") and lo != hi:
            side = "end" if mode == "SAME" else "start"
            warns.append(
                f"dim {i}: asymmetric {mode} padding ({lo}, {hi}): the odd total {lo + hi} "
                f"puts the extra row at the {side} (PyTorch's symmetric padding=K//2 differs "
                "here)"
            )
        unc = _uncovered(x, ld, lo, hi, k, d, s, out) if out > 0 else None
        if unc is not None:
            rows, tail = unc
            if tail:
                exact = _fmt((padded - ke) / s + 1)
                warns.append(
                    f"dim {i}: {len(tail)} input row(s) {_rows(tail)} covered by no window: "
                    f"({xd}{_signed(lo + hi)} - {ke})/{s} + 1 = {exact} -> {out}"
                )
            inner = [r for r in rows if r not in set(tail)]
            if inner:
                warns.append(
                    f"dim {i}: {len(inner)} input row(s) {_rows(inner)} never read by any "
                    "kernel tap (cropped by negative padding, or skipped by stride / dilation)"
                )
    return lines, warns


def _render_transposed(cfg: ConvConfig, mode: str | None) -> tuple[list[str], list[str]]:
    lines = [
        "transposed convolution (lax.conv_transpose): the input is stretched by",
        "inserting S-1 zeros between rows (input dilation S), then convolved",
        "with stride 1:",
    ]
    warns = []
    for i, (x, k, s, d, (lo, hi), out) in enumerate(
        zip(
            cfg.in_spatial,
            cfg.kernel_spatial,
            cfg.lhs_dilation,
            cfg.rhs_dilation,
            cfg.padding,
            cfg.out_spatial,
            strict=True,
        )
    ):
        ke, stretched = _dilate(k, d), _dilate(x, s)
        if mode is not None:
            how = f"{mode} (forward conv's padding; transposed pads {lo}, {hi})"
        else:
            how = f"explicit ({lo}, {hi}) on the stretched input"
        lines.append(
            f"  dim {i}: H = {x}, K = {k}, D = {d}, S = {s}: K_eff = {k} + ({k} - 1)"
            f"({d} - 1) = {ke}; stretched (H-1)S+1 = {stretched}; padding {how}"
        )
        raw = stretched + lo + hi - ke + 1
        lines.append(
            f"    H_out = {stretched} + {lo} + {hi} - {ke} + 1 = {out}"
            + (f" (clamped from {raw})" if raw != out else "")
        )
        if out == 0:
            warns.append(f"dim {i}: zero-size output")
    return lines, warns


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

    The arguments are resolved into a :class:`ConvConfig` (exactly as
    :func:`conv_output_shape` resolves them, or :func:`conv_transpose_output_shape` with
    ``transposed=True``), then rendered. For each spatial dim:

    .. math::

        H_\mathrm{out} = \max\Big(0, \Big\lfloor \frac{\mathrm{dil}(H, L) + lo + hi
            - (K + (K-1)(D-1))}{S} \Big\rfloor + 1\Big)

    and, with ``transposed=True``, ``lax.conv_transpose``'s rule (``L = S``, stride 1,
    ``'SAME'``/``'VALID'`` meaning the forward conv's padding). Warnings:

    * input rows no window covers, e.g. ``(10 - 3)/2 + 1 = 4.5 -> 4``: row 9 is never read;
      rows skipped between windows (stride larger than the dilated kernel, or dilation holes)
      and rows cropped by negative padding are listed too;
    * a zero-size output (the dilated kernel is wider than the padded input);
    * asymmetric ``'SAME'``/``'SAME_LOWER'`` padding (odd total: which side gets the extra).

    Args:
      input_shape: spatial sizes (an int for 1-D).
      kernel_size, stride, dilation, input_dilation: an int (every dim) or one int per dim.
      padding: Flax's rule, the same in every rank: ``'SAME'``, ``'SAME_LOWER'``, ``'VALID'``
        (any case; ``'SAME'``/``'VALID'`` only with ``transposed``); an int ``p`` for ``p`` on
        every side of every dim; or a sequence with one entry per spatial dim, each an int
        ``p`` (``(p, p)``) or a ``(lo, hi)`` pair. So ``(1, 2)`` is per-dim padding in 2-D and
        an error in 1-D, where ``[(1, 2)]`` is the pair.
      channels: input channels ``C`` (validated against ``feature_group_count``).
      filters: number of filters ``F``; the output is then ``F x H1 x W1``.
      feature_group_count: groups ``G``; each filter sees ``C / G`` channels.
      transposed: explain ``lax.conv_transpose`` instead.

    Returns:
      :class:`ConvExplanation`: ``str()`` of it is the text; ``output_shape``, ``spatial``,
      ``pads``, ``warnings`` and the resolved ``config`` are its fields.

    Examples:
      >>> e = explain_conv((10, 11), 3, stride=2)
      >>> e.output_shape, e.pads
      ((4, 5), ((0, 0), (0, 0)))
      >>> print(e.warnings[0])
      dim 0: 1 input row(s) (9) covered by no window: (10 - 3)/2 + 1 = 4.5 -> 4
      >>> explain_conv(9, 3, padding=[(1, 2)]).output_shape
      (10,)
    """
    ins = _shape("input_shape", (input_shape,) if _is_int(input_shape) else input_shape)
    n = len(ins)
    if n == 0:
        raise fail("input_shape", ins, "a shape with at least one spatial dim")
    ks = _ints("kernel_size", kernel_size, n, scalar_ok=True, none_ok=False)
    ss = _ints("stride", stride, n, scalar_ok=True, none_ok=False)
    ds = _ints("dilation", dilation, n, scalar_ok=True, none_ok=False)
    lds = _ints("input_dilation", input_dilation, n, scalar_ok=True, none_ok=False)
    g = _int("feature_group_count", feature_group_count, minimum=1)
    c = None if channels is None else _int("channels", channels, minimum=1)
    f = None if filters is None else _int("filters", filters, minimum=1)
    if c is not None and c % g:
        raise fail("channels", c, f"divisible by feature_group_count (={g})")
    if f is not None and f % g:
        raise fail("filters", f, f"divisible by feature_group_count (={g})")
    if g > 1 and c is None:
        raise fail("channels", None, f"given when feature_group_count (={g}) > 1")
    if not isinstance(transposed, (bool, np.bool_)):
        raise fail("transposed", transposed, "a bool (True or False)")
    modes = ("SAME", "VALID") if transposed else _LAX_MODES
    spec = _parse_padding("padding", padding, n, modes=modes, int_ok=True, entry_int_ok=True)
    mode = spec if isinstance(spec, str) else None
    cin = c if c is not None else g
    sp = "".join(chr(ord("a") + i) for i in range(n))
    if transposed:
        if any(d != 1 for d in lds):
            raise fail(
                "input_dilation",
                input_dilation,
                "1 when transposed=True (the stride is the input dilation)",
            )
        cfg = ConvConfig.resolve_transpose(
            (1, cin, *ins),
            (f if f is not None else 1, cin, *ks),
            ss,
            spec,
            ds,
            ("NC" + sp, "OI" + sp, "NC" + sp),
            names={"lhs_shape": "input_shape", "strides": "stride", "rhs_dilation": "dilation"},
        )
        lines, warns = _render_transposed(cfg, mode)
    else:
        cfg = ConvConfig.resolve(
            (1, cin, *ins),
            (f if f is not None else g, cin // g, *ks),
            ss,
            spec,
            lds,
            ds,
            feature_group_count=g,
            names={
                "lhs_shape": "input_shape",
                "rhs_shape": "kernel_size",
                "window_strides": "stride",
                "lhs_dilation": "input_dilation",
                "rhs_dilation": "dilation",
            },
        )
        lines, warns = _render_forward(cfg, mode)
    spatial = cfg.out_spatial
    head = (
        f"input {' x '.join(map(str, ins))}"
        + (f" with C = {c} channels" if c is not None else "")
        + f", kernel {' x '.join(map(str, ks))}"
        + (f", F = {f} filters" if f is not None else "")
        + (f", {g} groups" if g > 1 else "")
    )
    tail = [f"output (spatial): {' x '.join(map(str, spatial))}"]
    out_shape: tuple[int, ...] = spatial
    if f is not None:
        out_shape = (f, *spatial)
        tail.append(f"output (C1 x spatial): C1 = F = {f}: {' x '.join(map(str, out_shape))}")
        if c is not None and not transposed:
            tail.append(f"kernel shape (F, C/G, K...): {' x '.join(map(str, (f, c // g, *ks)))}")
    body = [head, *lines, *tail]
    if warns:
        body += ["warnings:"] + [f"  - {w}" for w in warns]
    return ConvExplanation(
        text="\n".join(body),
        output_shape=tuple(out_shape),
        spatial=spatial,
        pads=cfg.padding,
        warnings=tuple(warns),
        config=cfg,
    )


# ----------------------------------------------------------------------------------------------
# the inverse direction: the padding for a target size, the ConvTranspose that undoes a Conv


def _sizes(name: str, value: Any, n: int | None = None, minimum: int = 0) -> tuple[int, ...]:
    """An int or a sequence of ints ``>= minimum`` as a tuple (an int is one dim, or ``n``)."""
    if n is None:
        n = len(value) if _is_seq(value) else 1
    return _ints(name, value, n, minimum=minimum, none_ok=False, scalar_ok=True)


def _split_same(total: int) -> tuple[int, int]:
    """``'SAME'``'s split of a total padding: ``lo = total // 2``, the extra at the end."""
    return total // 2, total - total // 2


def padding_for_output(
    input_size: int | Sequence[int],
    output_size: int | Sequence[int],
    kernel_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
    input_dilation: int | Sequence[int] = 1,
    all_paddings: bool = False,
) -> tuple:
    r"""The explicit ``(lo, hi)`` padding that makes ``conv_general_dilated`` output a size.

    Per spatial dim, with :math:`D = \mathrm{dil}(H, L)` and :math:`K_\mathrm{eff} = (K-1)d + 1`,
    the output is :math:`P` exactly when the total padding :math:`t = lo + hi` satisfies

    .. math::

        (P - 1) S \le D + t - K_\mathrm{eff} < P S \quad (P \ge 1), \qquad
        D + t < K_\mathrm{eff} \quad (P = 0),

    a window of :math:`S` consecutive totals. The canonical answer is the smallest
    non-negative total in it, split as ``'SAME'`` splits (``lo = t // 2``, the extra at the
    end); so where ``'SAME'`` gives :math:`P` this is ``'SAME'``'s padding. With non-negative
    padding the reachable sizes are exactly :math:`P \ge P_\mathrm{valid}`, the ``'VALID'``
    size (smaller ones need cropping).

    Args:
      input_size: :math:`H` (an int, or one per spatial dim).
      output_size: the target :math:`P` (an int, or one per dim).
      kernel_size, stride, dilation, input_dilation: an int (every dim) or one per dim.
      all_paddings: return every ``(lo, hi)`` with ``lo, hi >= 0`` that works instead.

    Returns:
      One ``(lo, hi)`` pair per spatial dim (what ``lax.conv_general_dilated`` takes); with
      ``all_paddings=True``, per spatial dim a tuple of every such pair, by total then ``lo``.

    Raises:
      ValueError: `` `output_size` (=...) must be ...`` naming the reachable sizes when the
        target needs negative padding.

    Examples:
      >>> padding_for_output(10, 10, 4)  # 'SAME' for a stride-1, 4-tap kernel
      ((1, 2),)
      >>> padding_for_output((64, 64), (32, 32), 3, stride=2)
      ((0, 1), (0, 1))
      >>> padding_for_output(10, 5, 3, stride=2, all_paddings=True)
      (((0, 1), (1, 0), (0, 2), (1, 1), (2, 0)),)
    """
    ins = _sizes("input_size", input_size)
    n = len(ins)
    outs = _sizes("output_size", output_size, n)
    ks = _ints("kernel_size", kernel_size, n, scalar_ok=True, none_ok=False)
    ss = _ints("stride", stride, n, scalar_ok=True, none_ok=False)
    ds = _ints("dilation", dilation, n, scalar_ok=True, none_ok=False)
    lds = _ints("input_dilation", input_dilation, n, scalar_ok=True, none_ok=False)
    if not isinstance(all_paddings, (bool, np.bool_)):
        raise fail("all_paddings", all_paddings, "a bool (True or False)")
    result: list[Any] = []
    for i, (h, p, k, s, d, ld) in enumerate(zip(ins, outs, ks, ss, ds, lds, strict=True)):
        dd, ke = _dilate(h, ld), _dilate(k, d)
        valid = _out_size(dd, ke, s)
        if p < valid:
            raise fail(
                "output_size",
                output_size,
                f"reachable with non-negative padding: in spatial dim {i} (H = {h}, "
                f"K_eff = {ke}, S = {s}) the sizes are {valid} ('VALID') and up; {p} needs "
                "cropping (negative padding)",
            )
        if p == 0:
            lo_t, hi_t = 0, ke - dd - 1
        else:
            lo_t, hi_t = max(0, (p - 1) * s + ke - dd), p * s + ke - dd - 1
        if all_paddings:
            result.append(tuple((lo, t - lo) for t in range(lo_t, hi_t + 1) for lo in range(t + 1)))
        else:
            result.append(_split_same(lo_t))
    return tuple(result)


def _transpose_pads_for(h: int, t: int, ke: int, s: int) -> tuple[int, int, tuple[int, int]]:
    """``(lo, hi)`` of ``lax.conv_transpose`` from ``h`` to ``t``, and the forward padding.

    The forward conv (stride ``s``) from ``t`` to ``h`` takes a total padding in a window of
    ``s`` totals; the smallest non-negative one is used (or, when every one crops, the one
    cropping least), split as ``'SAME'`` splits. The transposed padding is the padding of
    that conv's input gradient, ``(K_eff - 1 - lo, t + lo - (h - 1) s - 1)``.
    """
    lowest, highest = (h - 1) * s + ke - t, h * s + ke - t - 1
    total = max(lowest, 0) if highest >= 0 else highest
    flo, fhi = total // 2, total - total // 2
    return ke - 1 - flo, t + flo - (h - 1) * s - 1, (flo, fhi)


def transpose_padding_for_output(
    input_size: int | Sequence[int],
    output_size: int | Sequence[int],
    kernel_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
) -> tuple[tuple[int, int], ...]:
    r"""The padding for ``lax.conv_transpose`` (and Flax ``ConvTranspose``) giving a size.

    ``lax.conv_transpose`` dilates its input by the stride and runs a stride-1 convolution,
    so its output is :math:`(H - 1) S + 1 + lo + hi - K_\mathrm{eff} + 1` and every size
    :math:`P \ge 1` is reachable by some total. Among the splits, the one returned is the
    *gradient's*: the padding of the input gradient of the forward convolution from
    :math:`P` to :math:`H` (stride :math:`S`, the smallest non-negative total padding split as
    ``'SAME'`` splits), so that with ``transpose_kernel=True`` the result is exactly that
    gradient (see :func:`inverse_conv_transpose`). This answers jax#4592's ``output_shape``.

    Args:
      input_size: the transposed convolution's input size :math:`H` (int or one per dim).
      output_size: the wanted output size :math:`P \ge 1` (int or one per dim).
      kernel_size, stride, dilation: an int (every dim) or one per dim.

    Returns:
      One ``(lo, hi)`` pair per spatial dim for ``lax.conv_transpose(..., padding=...)``
      (explicit padding of the stretched input, ``use_consistent_padding=False``).

    Examples:
      >>> transpose_padding_for_output(32, 64, 3, stride=2)  # lax's own 'SAME' here
      ((2, 1),)
      >>> conv_transpose_output_shape((1, 32, 1), (3, 1, 1), (2,), ((2, 1),))
      (1, 64, 1)
      >>> transpose_padding_for_output(32, 65, 3, stride=2)  # the other size 'SAME' maps to 32
      ((2, 2),)
    """
    ins = _sizes("input_size", input_size, minimum=1)
    n = len(ins)
    outs = _sizes("output_size", output_size, n, minimum=1)
    ks = _ints("kernel_size", kernel_size, n, scalar_ok=True, none_ok=False)
    ss = _ints("stride", stride, n, scalar_ok=True, none_ok=False)
    ds = _ints("dilation", dilation, n, scalar_ok=True, none_ok=False)
    return tuple(
        _transpose_pads_for(h, p, _dilate(k, d), s)[:2]
        for h, p, k, s, d in zip(ins, outs, ks, ss, ds, strict=True)
    )


@dataclasses.dataclass(frozen=True)
class ConvTransposeArgs:
    """The ``lax.conv_transpose`` / Flax ``ConvTranspose`` arguments of a Conv's gradient.

    Attributes:
      strides, padding, rhs_dilation: for ``lax.conv_transpose(y, w, strides, padding,
        rhs_dilation=..., transpose_kernel=True)`` (explicit pairs on the stretched input).
      output_size: the spatial output size (the forward convolution's input size).
      forward_padding: the forward convolution's explicit padding.
    """

    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    rhs_dilation: tuple[int, ...]
    output_size: tuple[int, ...]
    forward_padding: tuple[tuple[int, int], ...]

    def lax_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``lax.conv_transpose`` (``transpose_kernel=True``)."""
        return {
            "strides": self.strides,
            "padding": self.padding,
            "rhs_dilation": self.rhs_dilation,
            "transpose_kernel": True,
        }

    def flax_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``flax.linen.ConvTranspose`` / ``flax.nnx.ConvTranspose``."""
        return {
            "strides": self.strides,
            "padding": self.padding,
            "kernel_dilation": self.rhs_dilation,
            "transpose_kernel": True,
        }


def inverse_conv_transpose(
    input_size: int | Sequence[int],
    kernel_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: Any = "VALID",
    dilation: int | Sequence[int] = 1,
) -> ConvTransposeArgs:
    r"""The ConvTranspose that undoes a Conv: its gradient, with the Conv's input shape.

    For a forward ``conv_general_dilated`` from spatial size :math:`T` (stride :math:`S`,
    kernel dilation :math:`d`, padding :math:`(lo, hi)`, output :math:`H`), the input gradient
    is a stride-1 convolution of the cotangent dilated by :math:`S` with the flipped kernel,
    padded by

    .. math::

        \big(K_\mathrm{eff} - 1 - lo,\ T + lo - (H - 1) S - 1\big),

    which is ``lax.conv_transpose`` with ``transpose_kernel=True``. Its output size is
    :math:`T` for every stride, dilation, padding and size, including sizes the stride does
    not divide (the high padding carries the rows no forward window reached; this is
    PyTorch's ``output_padding``).

    Args:
      input_size: the forward convolution's input spatial size :math:`T` (int or per dim).
      kernel_size, stride, dilation: the forward convolution's (int or per dim).
      padding: the forward convolution's padding, as :func:`padding_pairs` reads it
        (``'SAME'``, ``'VALID'``, ..., an int, or one entry per dim).

    Returns:
      :class:`ConvTransposeArgs`: ``lax.conv_transpose(y, w, **args.lax_kwargs())`` with
      the forward kernel ``w`` (``HWIO``, channels-last ``NHWC`` data) equals
      ``jax.vjp`` of the forward conv with respect to its input, applied to ``y``.

    Examples:
      >>> args = inverse_conv_transpose(10, 3, stride=2, padding="SAME")
      >>> args.padding, args.output_size, args.forward_padding
      (((2, 1),), (10,), ((0, 1),))
    """
    ins = _sizes("input_size", input_size)
    n = len(ins)
    ks = _ints("kernel_size", kernel_size, n, scalar_ok=True, none_ok=False)
    ss = _ints("stride", stride, n, scalar_ok=True, none_ok=False)
    ds = _ints("dilation", dilation, n, scalar_ok=True, none_ok=False)
    fwd = padding_pairs(padding, ins, ks, ss, ds)
    pads = []
    for i, (t, k, s, d, (lo, hi)) in enumerate(zip(ins, ks, ss, ds, fwd, strict=True)):
        ke = _dilate(k, d)
        if t + lo + hi < ke:
            raise fail(
                "input_size",
                input_size,
                f"large enough for one window: in spatial dim {i} the padded input "
                f"{t} + {lo} + {hi} is shorter than K_eff = {ke}, so the forward output is empty",
            )
        h = (t + lo + hi - ke) // s + 1
        pads.append((ke - 1 - lo, t + lo - (h - 1) * s - 1))
    return ConvTransposeArgs(
        strides=ss, padding=tuple(pads), rhs_dilation=ds, output_size=ins, forward_padding=fwd
    )


# ----------------------------------------------------------------------------------------------
# PyTorch ports: torch.nn.Conv{1,2,3}d and ConvTranspose{1,2,3}d as lax calls

# PyTorch's padding_mode -> the jnp.pad mode that fills the same values
_TORCH_PAD_MODES = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
}


def _torch_ints(name: str, value: Any, n: int, minimum: int) -> tuple[int, ...]:
    return _ints(name, value, n, minimum=minimum, scalar_ok=True, none_ok=False)


@dataclasses.dataclass(frozen=True)
class TorchConv:
    r"""A PyTorch ``Conv{n}d`` as ``lax.conv_general_dilated`` arguments (``NC...``/``OI...``).

    Call it as ``conv(x, weight, bias=None)`` with PyTorch's layouts (input ``(N, C, *spatial)``,
    weight ``(O, C / groups, *kernel)``): for ``padding_mode`` other than ``'zeros'`` the input
    is first padded by ``jnp.pad`` with ``pre_padding`` in ``pad_mode`` (PyTorch's
    ``reflect``/``replicate``/``circular`` are ``jnp.pad``'s ``reflect``/``edge``/``wrap``),
    then convolved with ``padding``.

    Attributes:
      window_strides, padding, rhs_dilation, feature_group_count: for ``lax``.
      pre_padding: ``(lo, hi)`` per dim for ``jnp.pad``, or ``None`` for zero padding.
      pad_mode: the ``jnp.pad`` mode of ``pre_padding``.
    """

    window_strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    rhs_dilation: tuple[int, ...]
    feature_group_count: int
    pre_padding: tuple[tuple[int, int], ...] | None = None
    pad_mode: str = "constant"

    def __call__(self, x, weight, bias=None):
        return _compiled_call(self, x, weight, bias)

    def _apply(self, x, weight, bias):
        import jax.numpy as jnp

        x = jnp.asarray(x)
        if self.pre_padding is not None:
            x = jnp.pad(x, ((0, 0), (0, 0), *self.pre_padding), mode=self.pad_mode)
        y = lax.conv_general_dilated(
            x,
            jnp.asarray(weight),
            self.window_strides,
            self.padding,
            rhs_dilation=self.rhs_dilation,
            feature_group_count=self.feature_group_count,
        )
        if bias is not None:
            y = y + jnp.asarray(bias).reshape((1, -1) + (1,) * (y.ndim - 2))
        return y


def torch_conv(
    spatial_dims: int,
    kernel_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: Any = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> TorchConv:
    r"""PyTorch's ``torch.nn.Conv{1,2,3}d`` arguments as a lax convolution.

    PyTorch's documented size rule, per spatial dim,

    .. math::

        H_\mathrm{out} = \Big\lfloor \frac{H + 2p - d (k - 1) - 1}{s} + 1 \Big\rfloor,

    is lax's with ``padding=(p, p)``. ``padding='valid'`` is 0; ``padding='same'`` (stride 1
    only, as in PyTorch) pads a total of :math:`d (k - 1)`, ``lo = total // 2``, the extra at
    the end (so it equals lax's ``'SAME'`` at stride 1, for any input size).

    Args:
      spatial_dims: 1, 2 or 3 (``Conv1d``, ``Conv2d``, ``Conv3d``).
      kernel_size, stride, dilation: an int or one per dim, as PyTorch takes them.
      padding: an int or one per dim, ``'same'`` or ``'valid'``.
      groups: PyTorch's ``groups`` (``feature_group_count``).
      padding_mode: ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``.

    Returns:
      :class:`TorchConv`; ``torch_conv(...)(x, weight, bias)`` equals the PyTorch module's
      output for the same ``weight`` and ``bias``.

    Examples:
      >>> import jax.numpy as jnp
      >>> conv = torch_conv(1, 3, padding=1, padding_mode="circular")
      >>> conv.pre_padding, conv.padding
      (((1, 1),), ((0, 0),))
      >>> conv(jnp.arange(4.0).reshape(1, 1, 4), jnp.ones((1, 1, 3))).tolist()
      [[[4.0, 3.0, 6.0, 5.0]]]
    """
    n = _int("spatial_dims", spatial_dims, minimum=1)
    if n > 3:
        raise fail("spatial_dims", spatial_dims, "1, 2 or 3 (Conv1d, Conv2d, Conv3d)")
    ks = _torch_ints("kernel_size", kernel_size, n, 1)
    ss = _torch_ints("stride", stride, n, 1)
    ds = _torch_ints("dilation", dilation, n, 1)
    g = _int("groups", groups, minimum=1)
    if padding_mode not in _TORCH_PAD_MODES:
        raise fail("padding_mode", padding_mode, "one of " + ", ".join(map(repr, _TORCH_PAD_MODES)))
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise fail("padding", padding, "an int, one int per dim, 'same' or 'valid'")
        if padding == "same" and any(s != 1 for s in ss):
            raise fail(
                "padding",
                padding,
                f"an int when stride (={stride!r}) is not 1: "
                "PyTorch refuses padding='same' for strided convolutions",
            )
        totals = [d * (k - 1) if padding == "same" else 0 for k, d in zip(ks, ds, strict=True)]
        pairs = tuple(_split_same(t) for t in totals)
    else:
        pairs = tuple((p, p) for p in _torch_ints("padding", padding, n, 0))
    if padding_mode == "zeros":
        return TorchConv(ss, pairs, ds, g)
    return TorchConv(ss, ((0, 0),) * n, ds, g, pairs, _TORCH_PAD_MODES[padding_mode])


@dataclasses.dataclass(frozen=True)
class TorchConvTranspose:
    r"""A PyTorch ``ConvTranspose{n}d`` as one ``lax.conv_general_dilated`` call.

    Call it as ``tconv(x, weight, bias=None, output_size=None)`` with PyTorch's layouts
    (input ``(N, C_in, *spatial)``, weight ``(C_in, C_out / groups, *kernel)``). The call is
    the input gradient of the forward ``Conv{n}d`` with that weight: the input dilated by the
    stride, convolved at stride 1 with the flipped kernel (in/out channels exchanged per
    group), padded by ``(d (k-1) - p, d (k-1) - p + output_padding)``.

    Attributes:
      stride, padding, output_padding, dilation, kernel_size: per spatial dim.
      groups: PyTorch's ``groups``.
    """

    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    output_padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int

    def output_shape(self, input_spatial: Sequence[int], output_padding=None) -> tuple[int, ...]:
        """PyTorch's documented rule ``(H-1)s - 2p + d(k-1) + output_padding + 1`` per dim."""
        ops = self.output_padding if output_padding is None else output_padding
        return tuple(
            (h - 1) * s - 2 * p + d * (k - 1) + op + 1
            for h, s, p, d, k, op in zip(
                input_spatial,
                self.stride,
                self.padding,
                self.dilation,
                self.kernel_size,
                ops,
                strict=True,
            )
        )

    def output_padding_for(self, input_spatial: Sequence[int], output_size: Any) -> tuple[int, ...]:
        """PyTorch's ``output_size`` at call time: the ``output_padding`` it implies.

        Each size must lie in ``[m, m + stride - 1]`` with ``m`` the size for
        ``output_padding = 0``, as PyTorch requires (``ValueError`` otherwise).
        """
        n = len(self.kernel_size)
        sizes = _ints("output_size", output_size, n, minimum=0, none_ok=False)
        least = self.output_shape(input_spatial, (0,) * n)
        for i, (o, m, s) in enumerate(zip(sizes, least, self.stride, strict=True)):
            if not m <= o <= m + s - 1:
                raise fail(
                    "output_size",
                    output_size,
                    f"in [{m}, {m + s - 1}] in spatial dim {i} (the sizes output_padding "
                    f"0..stride-1 give), as PyTorch requires",
                )
        return tuple(o - m for o, m in zip(sizes, least, strict=True))

    def conv_kwargs(self, input_spatial: Sequence[int], output_size=None) -> dict[str, Any]:
        """Arguments of the one ``lax.conv_general_dilated`` call (``NC...`` / ``OI...``).

        With :meth:`prepare_kernel`'s kernel; ``output_size`` solves for ``output_padding``.
        """
        n = len(self.kernel_size)
        ops = self.output_padding
        if output_size is not None:
            ops = self.output_padding_for(input_spatial, output_size)
        out = self.output_shape(input_spatial, ops)
        if min(out, default=1) < 1:
            raise fail(
                "padding",
                self.padding,
                f"small enough for a non-empty output: input {tuple(input_spatial)} gives "
                f"{out}, as PyTorch refuses too",
            )
        pads = tuple(
            (d * (k - 1) - p, d * (k - 1) - p + op)
            for k, p, d, op in zip(self.kernel_size, self.padding, self.dilation, ops, strict=True)
        )
        return {
            "window_strides": (1,) * n,
            "padding": pads,
            "lhs_dilation": self.stride,
            "rhs_dilation": self.dilation,
            "feature_group_count": self.groups,
        }

    def prepare_kernel(self, weight):
        """``(C_in, C_out / groups, *k)`` -> flipped ``(C_out, C_in / groups, *k)``.

        In/out channels exchanged per group; NumPy or JAX arrays alike.
        """
        g, ksp = self.groups, tuple(weight.shape[2:])
        cin, cout_g = weight.shape[0], weight.shape[1]
        w = weight.reshape((g, cin // g, cout_g) + ksp).swapaxes(1, 2)
        w = w.reshape((g * cout_g, cin // g) + ksp)
        return w[(slice(None), slice(None)) + (slice(None, None, -1),) * len(ksp)]

    def __call__(self, x, weight, bias=None, output_size=None):
        if output_size is not None:  # checked as typed, then a hashable static argument
            self.conv_kwargs(np.shape(x)[2:], output_size)
            output_size = tuple(int(v) for v in output_size)
        return _compiled_call(self, x, weight, bias, output_size)

    def _apply(self, x, weight, bias, output_size):
        import jax.numpy as jnp

        x, w = jnp.asarray(x), jnp.asarray(weight)
        kw = self.conv_kwargs(x.shape[2:], output_size)
        y = _lhs_dilated_conv(x, self.prepare_kernel(w), kw, range(2, x.ndim))
        if bias is not None:
            y = y + jnp.asarray(bias).reshape((1, -1) + (1,) * len(self.kernel_size))
        return y


# A port's call runs as ONE compiled program per (port, shapes): outside a jit, a convolution
# with its stretch, flips and bias would otherwise dispatch (and compile) op by op. The ports are
# frozen dataclasses of tuples, so they are hashable static arguments.
@jax.jit(static_argnums=(0, 4))
def _compiled_call_jit(port, x, kernel, bias, static):
    return port._apply(x, kernel, bias, *static)


def _compiled_call(port, x, kernel, bias=None, *static):
    """``port._apply(x, kernel, bias, *static)`` as one compiled program (``static`` hashable)."""
    return _compiled_call_jit(port, x, kernel, bias, static)


def _lhs_dilated_conv(x, w, kwargs: Mapping[str, Any], spatial_axes):
    """``lax.conv_general_dilated(x, w, **kwargs)`` with the input dilation done explicitly.

    The input is stretched (``S - 1`` zeros between neighbours, by a stack and a reshape) and
    convolved without ``lhs_dilation``: the same values, but XLA's CPU algebraic simplifier
    aborts the process on some ``lhs_dilation`` convolutions whose padded input is no larger
    than the kernel (it swaps the operands), ``lax.conv_transpose`` included (jax 0.10).
    """
    import jax.numpy as jnp

    kw = dict(kwargs)
    for axis, s in zip(spatial_axes, kw.pop("lhs_dilation"), strict=True):
        if s > 1 and x.shape[axis] > 0:
            st = jnp.stack([x] + [jnp.zeros_like(x)] * (s - 1), axis=axis + 1)
            st = st.reshape(x.shape[:axis] + (x.shape[axis] * s,) + x.shape[axis + 1 :])
            x = lax.slice_in_dim(st, 0, (x.shape[axis] - 1) * s + 1, axis=axis)
    return lax.conv_general_dilated(x, w, **kw)


def torch_conv_transpose(
    spatial_dims: int,
    kernel_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    output_padding: int | Sequence[int] = 0,
    groups: int = 1,
    dilation: int | Sequence[int] = 1,
) -> TorchConvTranspose:
    r"""PyTorch's ``torch.nn.ConvTranspose{1,2,3}d`` arguments as a lax convolution.

    PyTorch defines the transposed convolution as the gradient of ``Conv{n}d`` with respect
    to its input; its documented size rule is

    .. math::

        H_\mathrm{out} = (H - 1) s - 2 p + d (k - 1) + \text{output\_padding} + 1,

    with ``output_padding`` smaller than the stride or the dilation. Flax's ``ConvTranspose``
    has neither ``output_padding`` nor ``output_size``; with the explicit padding
    ``(d(k-1) - p, d(k-1) - p + output_padding)`` and ``transpose_kernel=True`` it computes the
    same values (:func:`inverse_conv_transpose` gives those arguments).

    Args:
      spatial_dims: 1, 2 or 3.
      kernel_size, stride, padding, output_padding, dilation: an int or one per dim.
      groups: PyTorch's ``groups``.

    Returns:
      :class:`TorchConvTranspose`; call it with ``output_size=`` to solve for
      ``output_padding`` as ``ConvTranspose.forward(x, output_size)`` does.

    Examples:
      >>> import jax.numpy as jnp
      >>> t = torch_conv_transpose(1, 3, stride=2, padding=1, output_padding=1)
      >>> t.output_shape((5,))
      (10,)
      >>> t(jnp.ones((1, 1, 5)), jnp.ones((1, 1, 3))).tolist()
      [[[1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 1.0]]]
    """
    n = _int("spatial_dims", spatial_dims, minimum=1)
    if n > 3:
        raise fail("spatial_dims", spatial_dims, "1, 2 or 3 (ConvTranspose1d, 2d, 3d)")
    ks = _torch_ints("kernel_size", kernel_size, n, 1)
    ss = _torch_ints("stride", stride, n, 1)
    ps = _torch_ints("padding", padding, n, 0)
    ops = _torch_ints("output_padding", output_padding, n, 0)
    ds = _torch_ints("dilation", dilation, n, 1)
    g = _int("groups", groups, minimum=1)
    for i, (op, s, d) in enumerate(zip(ops, ss, ds, strict=True)):
        if op >= s and op >= d:
            raise fail(
                "output_padding",
                output_padding,
                f"smaller than either stride or dilation in spatial dim {i}, as PyTorch "
                f"requires (stride {s}, dilation {d})",
            )
    return TorchConvTranspose(ks, ss, ps, ops, ds, g)
