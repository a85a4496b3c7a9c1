r"""The inverse direction: the padding that gives a wanted size, the ConvTranspose of a Conv.

A forward convolution's output size is a step function of its total padding: a window of
:math:`S` consecutive totals gives each size. :func:`padding_for_output` and
:func:`transpose_padding_for_output` solve for the padding; :func:`inverse_conv_transpose`
gives the ``lax.conv_transpose`` / Flax ``ConvTranspose`` arguments that compute a
convolution's input gradient, the transposed convolution that maps its output shape back to
its input shape (PyTorch's ``output_padding`` carries the rows no forward window reached).

References:
  Dumoulin and Visin, *A guide to convolution arithmetic for deep learning*, 2016
  (arXiv:1603.07285), Section 4 (transposed convolution arithmetic); the PyTorch
  ``ConvTranspose2d`` documentation (``output_padding``); jax-ml/jax#4592 (an
  ``output_shape`` for ``lax.conv_transpose``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from gated_jax._validate import fail
from gated_jax.shapes._config import _dilate, _out_size, _per_dim, _sizes, _split_same
from gated_jax.shapes.rules import padding_pairs

__all__ = [
    "ConvTransposeArgs",
    "inverse_conv_transpose",
    "padding_for_output",
    "transpose_padding_for_output",
]


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
    ks = _per_dim("kernel_size", kernel_size, n)
    ss = _per_dim("stride", stride, n)
    ds = _per_dim("dilation", dilation, n)
    lds = _per_dim("input_dilation", input_dilation, n)
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
      >>> from gated_jax.shapes import conv_transpose_output_shape
      >>> conv_transpose_output_shape((1, 32, 1), (3, 1, 1), (2,), ((2, 1),))
      (1, 64, 1)
      >>> transpose_padding_for_output(32, 65, 3, stride=2)  # the other size 'SAME' maps to 32
      ((2, 2),)
    """
    ins = _sizes("input_size", input_size, minimum=1)
    n = len(ins)
    outs = _sizes("output_size", output_size, n, minimum=1)
    ks = _per_dim("kernel_size", kernel_size, n)
    ss = _per_dim("stride", stride, n)
    ds = _per_dim("dilation", dilation, n)
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
    ks = _per_dim("kernel_size", kernel_size, n)
    ss = _per_dim("stride", stride, n)
    ds = _per_dim("dilation", dilation, n)
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
