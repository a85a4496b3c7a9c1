r"""A convolution's output shape derived step by step, with the numbers substituted.

:func:`explain_conv` resolves its arguments into a :class:`~gated_jax.shapes.ConvConfig`
(exactly as :func:`~gated_jax.shapes.conv_output_shape` or
:func:`~gated_jax.shapes.conv_transpose_output_shape` resolve them), then renders the rule

.. math::

    H_\mathrm{out} = \max\Big(0, \Big\lfloor \frac{\mathrm{dil}(H, L) + lo + hi
        - (K + (K-1)(D-1))}{S} \Big\rfloor + 1\Big)

per spatial dim, and warns where the arithmetic surprises: input rows no window reads, a
zero-size output, an asymmetric ``'SAME'`` padding.

References:
  Dumoulin and Visin, *A guide to convolution arithmetic for deep learning*, 2016
  (arXiv:1603.07285), Sections 2 and 4 (the rows a strided window skips, the transposed
  convolution as a stride-1 convolution of the stretched input).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from gated_jax._validate import fail
from gated_jax.shapes._config import (
    _LAX_MODES,
    ConvConfig,
    _dilate,
    _int,
    _is_int,
    _parse_padding,
    _per_dim,
    _shape,
)

__all__ = ["ConvExplanation", "explain_conv"]


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


def _row_warnings(
    i: int, x: int, k: int, s: int, d: int, ld: int, pad: tuple[int, int], out: int
) -> list[str]:
    """Warnings of dim ``i``: rows past the last window, and rows no kernel tap reads."""
    lo, hi = pad
    unc = _uncovered(x, ld, lo, hi, k, d, s, out) if out > 0 else None
    if unc is None:
        return []
    warns = []
    rows, tail = unc
    xd, ke = _dilate(x, ld), _dilate(k, d)
    if tail:
        exact = _fmt((xd + lo + hi - ke) / s + 1)
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
    return warns


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
        warns += _row_warnings(i, x, k, s, d, ld, (lo, hi), out)
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


class _Args(NamedTuple):
    """:func:`explain_conv`'s arguments, validated."""

    ins: tuple[int, ...]
    ks: tuple[int, ...]
    ss: tuple[int, ...]
    ds: tuple[int, ...]
    lds: tuple[int, ...]
    g: int
    c: int | None
    f: int | None
    spec: str | tuple[tuple[int, int], ...]  # the padding: a mode or explicit pairs


def _explain_args(
    input_shape: Any,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    input_dilation: Any,
    channels: Any,
    filters: Any,
    feature_group_count: Any,
    transposed: Any,
) -> _Args:
    ins = _shape("input_shape", (input_shape,) if _is_int(input_shape) else input_shape)
    n = len(ins)
    if n == 0:
        raise fail("input_shape", ins, "a shape with at least one spatial dim")
    ks = _per_dim("kernel_size", kernel_size, n)
    ss = _per_dim("stride", stride, n)
    ds = _per_dim("dilation", dilation, n)
    lds = _per_dim("input_dilation", input_dilation, n)
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
    return _Args(ins, ks, ss, ds, lds, g, c, f, spec)


def _explain_config(a: _Args, input_dilation: Any, transposed: bool) -> ConvConfig:
    """The resolved config: ``NC...`` layout, ``C = channels`` (or ``G``), ``F`` filters."""
    cin = a.c if a.c is not None else a.g
    sp = "".join(chr(ord("a") + i) for i in range(len(a.ins)))
    if transposed:
        if any(d != 1 for d in a.lds):
            raise fail(
                "input_dilation",
                input_dilation,
                "1 when transposed=True (the stride is the input dilation)",
            )
        return ConvConfig.resolve_transpose(
            (1, cin, *a.ins),
            (a.f if a.f is not None else 1, cin, *a.ks),
            a.ss,
            a.spec,
            a.ds,
            ("NC" + sp, "OI" + sp, "NC" + sp),
            names={"lhs_shape": "input_shape", "strides": "stride", "rhs_dilation": "dilation"},
        )
    return ConvConfig.resolve(
        (1, cin, *a.ins),
        (a.f if a.f is not None else a.g, cin // a.g, *a.ks),
        a.ss,
        a.spec,
        a.lds,
        a.ds,
        feature_group_count=a.g,
        names={
            "lhs_shape": "input_shape",
            "rhs_shape": "kernel_size",
            "window_strides": "stride",
            "lhs_dilation": "input_dilation",
            "rhs_dilation": "dilation",
        },
    )


def _explain_text(
    a: _Args, cfg: ConvConfig, lines: list[str], warns: list[str], transposed: bool
) -> tuple[str, tuple[int, ...]]:
    """The text (head, derivation, output, warnings) and the output shape."""
    c, f, g, spatial = a.c, a.f, a.g, cfg.out_spatial
    head = (
        f"input {' x '.join(map(str, a.ins))}"
        + (f" with C = {c} channels" if c is not None else "")
        + f", kernel {' x '.join(map(str, a.ks))}"
        + (f", F = {f} filters" if f is not None else "")
        + (f", {g} groups" if g > 1 else "")
    )
    tail = [f"output (spatial): {' x '.join(map(str, spatial))}"]
    out_shape: tuple[int, ...] = spatial
    if f is not None:
        out_shape = (f, *spatial)
        tail.append(f"output (C1 x spatial): C1 = F = {f}: {' x '.join(map(str, out_shape))}")
        if c is not None and not transposed:
            tail.append(f"kernel shape (F, C/G, K...): {' x '.join(map(str, (f, c // g, *a.ks)))}")
    body = [head, *lines, *tail]
    if warns:
        body += ["warnings:"] + [f"  - {w}" for w in warns]
    return "\n".join(body), tuple(out_shape)


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
    a = _explain_args(
        input_shape,
        kernel_size,
        stride,
        padding,
        dilation,
        input_dilation,
        channels,
        filters,
        feature_group_count,
        transposed,
    )
    cfg = _explain_config(a, input_dilation, bool(transposed))
    mode = a.spec if isinstance(a.spec, str) else None
    render = _render_transposed if transposed else _render_forward
    lines, warns = render(cfg, mode)
    text, out_shape = _explain_text(a, cfg, lines, warns, bool(transposed))
    return ConvExplanation(
        text=text,
        output_shape=out_shape,
        spatial=cfg.out_spatial,
        pads=cfg.padding,
        warnings=tuple(warns),
        config=cfg,
    )
