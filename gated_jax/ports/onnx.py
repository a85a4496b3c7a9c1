r"""ONNX ``Conv`` and ``ConvTranspose`` as lax calls (``NCHW`` data, ``OIHW`` weights).

References:
  the ONNX operator specification of ``Conv`` and ``ConvTranspose`` (opset 11+), and the ONNX
  reference implementation (``onnx/reference/ops/op_conv_transpose.py``) for the pads that
  ``output_shape`` and ``auto_pad`` derive.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from gated_jax._validate import fail
from gated_jax.ports._base import _SPATIAL, PortedConv, PortedConvTranspose, _specs
from gated_jax.shapes._config import (
    _auto_pad,
    _dilate,
    _int,
    _ints,
    _is_seq,
    _onnx_pads,
    _show,
)

__all__ = ["OnnxConvTranspose", "onnx_conv", "onnx_conv_transpose"]


def _kernel_shape(value: Any) -> tuple[int, ...]:
    if not _is_seq(value) or not 1 <= len(value) <= 3:
        raise fail("kernel_shape", _show(value), "a sequence of 1 to 3 positive ints")
    return _ints("kernel_shape", value, len(value))


def onnx_conv(
    kernel_shape: Sequence[int],
    *,
    auto_pad: str = "NOTSET",
    pads: Sequence[int] | None = None,
    strides: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    group: int = 1,
) -> PortedConv:
    r"""ONNX ``Conv`` attributes as a lax convolution (``NCHW`` data, ``OIHW`` weight).

    The ONNX spec's output size per spatial dim, with :math:`K_\mathrm{eff} = (K - 1) d + 1`:

    .. math::

        \Big\lfloor \frac{H + b + e - K_\mathrm{eff}}{S} \Big\rfloor + 1 \ (\texttt{NOTSET}),
        \qquad \Big\lceil \frac{H}{S} \Big\rceil \ (\texttt{SAME\_*}), \qquad
        \Big\lceil \frac{H - K_\mathrm{eff} + 1}{S} \Big\rceil \ (\texttt{VALID}),

    ``pads = [x1_begin, x2_begin, ..., x1_end, x2_end, ...]`` giving :math:`(b, e)` per dim.
    ``SAME_UPPER`` pads a total of :math:`\max((\lceil H/S \rceil - 1) S + K_\mathrm{eff} - H,
    0)` with the extra at the end (lax's ``'SAME'``), ``SAME_LOWER`` at the beginning (lax's
    ``'SAME_LOWER'``): one lax call for every input size.

    Args:
      kernel_shape: the weight's spatial shape (its length is the number of spatial dims).
      auto_pad: ``'NOTSET'`` (use ``pads``), ``'SAME_UPPER'``, ``'SAME_LOWER'`` or ``'VALID'``.
      pads, strides, dilations: ONNX's lists (``None``: zeros / ones).
      group: ONNX's ``group`` (``feature_group_count``).

    Returns:
      :class:`PortedConv`; ``onnx_conv(...)(x, w, b)`` equals the ONNX node's ``Y``.

    Examples:
      >>> onnx_conv((3, 3), pads=[1, 0, 2, 1]).padding
      ((1, 2), (0, 1))
      >>> onnx_conv((3,), auto_pad="SAME_LOWER", strides=[2]).explicit_padding((10,))
      ((1, 0),)
    """
    ks = _kernel_shape(kernel_shape)
    n = len(ks)
    mode = _auto_pad(auto_pad)
    ss = _ints("strides", strides, n)
    ds = _ints("dilations", dilations, n)
    g = _int("group", group, minimum=1)
    explicit = _onnx_pads("pads", pads, n)
    pad: str | tuple[tuple[int, int], ...] = explicit
    if mode != "NOTSET":  # SAME_UPPER is lax's 'SAME'; SAME_LOWER and VALID are lax's own
        pad = "SAME" if mode == "SAME_UPPER" else mode
    lhs, _ = _specs(n, False)
    return PortedConv("onnx", ks, ss, pad, ds, g, (lhs, "OI" + _SPATIAL[n], lhs))


@dataclasses.dataclass(frozen=True)
class OnnxConvTranspose(PortedConvTranspose):
    r"""ONNX ``ConvTranspose``: see :func:`onnx_conv_transpose`.

    Attributes:
      auto_pad: ONNX's ``auto_pad``.
      pads: ``(begin, end)`` per dim (used with ``NOTSET`` and no ``output_shape``).
      output_padding: per dim.
      output_shape: the spatial output shape, or ``None``.
    """

    auto_pad: str = "NOTSET"
    pads: tuple[tuple[int, int], ...] = ()
    output_padding: tuple[int, ...] = ()
    output_shape_attr: tuple[int, ...] | None = None

    def window(self, input_spatial: Sequence[int]) -> tuple[tuple[int, int], ...]:
        out = []
        for i, (h, k, s, d) in enumerate(
            zip(input_spatial, self.kernel_size, self.strides, self.dilation, strict=True)
        ):
            ke, op = _dilate(k, d), self.output_padding[i]
            full = s * (h - 1) + op + ke
            if self.output_shape_attr is None and self.auto_pad in ("NOTSET", "VALID"):
                b, e = self.pads[i] if self.auto_pad == "NOTSET" else (0, 0)
                out.append((b, full - b - e))
                continue
            t = self.output_shape_attr[i] if self.output_shape_attr is not None else h * s
            total = full - t
            small = total // 2
            b = small if self.auto_pad == "SAME_UPPER" else total - small
            out.append((b, t))
        return tuple(out)

    def _kernel_spec(self) -> str:
        return "OI" + _SPATIAL[len(self.kernel_size)]


def onnx_conv_transpose(
    kernel_shape: Sequence[int],
    *,
    auto_pad: str = "NOTSET",
    pads: Sequence[int] | None = None,
    strides: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    group: int = 1,
    output_padding: Sequence[int] | None = None,
    output_shape: Sequence[int] | None = None,
) -> OnnxConvTranspose:
    r"""ONNX ``ConvTranspose`` attributes as a lax call (``NCHW`` data, ``(C, M/group, *k)``).

    The ONNX spec, per spatial dim (``pads = [x1_begin, ..., x1_end, ...]`` as :math:`(b, e)`,
    :math:`K_\mathrm{eff} = (K - 1) d + 1`, :math:`o` = ``output_padding``):

    .. math::

        T = S (H - 1) + o + K_\mathrm{eff} - b - e.

    With ``output_shape`` given (or ``auto_pad`` ``SAME_*``, where :math:`T = H S`) the pads
    are derived: ``total = S (H - 1) + o + K_eff - T``; ``SAME_UPPER``: ``b = total // 2``,
    ``e = total - b``; otherwise ``e = total // 2``, ``b = total - e`` (floor division, as the
    ONNX reference implementation; a negative total adds zero entries). The values are the
    full transposed result (:math:`F = S (H - 1) + K_\mathrm{eff}` entries, then :math:`o`
    zeros) cropped by :math:`(b, e)`: the gradient of ``Conv`` with pads :math:`(b, e - o)`.
    The explicit padding depends on the input size when ``output_shape`` or ``SAME_*`` is used
    (``padding_for(input_spatial)`` gives it for one size).

    Args:
      kernel_shape: the weight's spatial shape.
      auto_pad: ``'NOTSET'``, ``'SAME_UPPER'``, ``'SAME_LOWER'`` or ``'VALID'``.
      pads, strides, dilations, output_padding: ONNX's lists (``None``: zeros / ones).
      group: ONNX's ``group``.
      output_shape: the spatial output shape (or ``N, C`` and spatial), or ``None``.

    Returns:
      :class:`OnnxConvTranspose`; ``tconv(x, w, b)`` equals the ONNX node's ``Y``.

    Examples:
      >>> t = onnx_conv_transpose((3,), strides=[2], output_shape=[10])
      >>> t.output_shape((5,)), t.window((5,))
      ((10,), ((1, 10),))
      >>> onnx_conv_transpose((3,), strides=[2], pads=[1, 1], output_padding=[1]).output_shape((5,))
      (10,)
    """
    ks = _kernel_shape(kernel_shape)
    n = len(ks)
    mode = _auto_pad(auto_pad)
    ss = _ints("strides", strides, n)
    ds = _ints("dilations", dilations, n)
    g = _int("group", group, minimum=1)
    explicit = _onnx_pads("pads", pads, n)
    ops = (
        (0,) * n
        if output_padding is None
        else _ints("output_padding", output_padding, n, minimum=0)
    )
    shape = None
    if output_shape is not None:
        m = len(output_shape) if _is_seq(output_shape) else -1
        if m not in (n, n + 2):
            raise fail(
                "output_shape", _show(output_shape), f"{n} spatial sizes (or {n + 2} with N, C)"
            )
        shape = _ints("output_shape", output_shape, m)[m - n :]
    return OnnxConvTranspose(ks, ss, ds, g, False, mode, explicit, ops, shape)
