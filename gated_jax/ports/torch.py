r"""PyTorch's ``torch.nn.Conv{1,2,3}d`` and ``ConvTranspose{1,2,3}d`` as lax calls.

Input ``(N, C, *spatial)``, weight ``(O, C / groups, *kernel)`` (``ConvTranspose``:
``(C_in, C_out / groups, *kernel)``), as PyTorch lays them out.

References:
  the PyTorch documentation of ``torch.nn.Conv2d`` (its output-size rule, ``padding='same'``,
  ``padding_mode``) and ``torch.nn.ConvTranspose2d`` (the gradient of ``Conv2d``,
  ``output_padding``, ``output_size``); Dumoulin and Visin, *A guide to convolution
  arithmetic for deep learning*, 2016 (arXiv:1603.07285), Section 4.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from gated_jax._validate import fail
from gated_jax.ports._base import _compiled_call, _lhs_dilated_conv, _regroup_flip
from gated_jax.shapes._config import _int, _ints, _per_dim, _torch_pad_mode, _torch_padding

__all__ = ["TorchConv", "TorchConvTranspose", "torch_conv", "torch_conv_transpose"]


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
    ks = _per_dim("kernel_size", kernel_size, n)
    ss = _per_dim("stride", stride, n)
    ds = _per_dim("dilation", dilation, n)
    g = _int("groups", groups, minimum=1)
    pad_mode = _torch_pad_mode(padding_mode)
    pairs = _torch_padding(padding, stride, ks, ss, ds)
    if padding_mode == "zeros":
        return TorchConv(ss, pairs, ds, g)
    return TorchConv(ss, ((0, 0),) * n, ds, g, pairs, pad_mode)


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
        return _regroup_flip(weight, self.groups)

    def __call__(self, x, weight, bias=None, output_size=None):
        if output_size is not None:  # checked as typed, then a hashable static argument
            self.conv_kwargs(np.shape(x)[2:], output_size)
            output_size = tuple(int(v) for v in output_size)
        return _compiled_call(self, x, weight, bias, output_size)

    def _apply(self, x, weight, bias, output_size):
        x, w = jnp.asarray(x), jnp.asarray(weight)
        kw = self.conv_kwargs(x.shape[2:], output_size)
        y = _lhs_dilated_conv(x, self.prepare_kernel(w), kw, range(2, x.ndim))
        if bias is not None:
            y = y + jnp.asarray(bias).reshape((1, -1) + (1,) * len(self.kernel_size))
        return y


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
    same values (:func:`~gated_jax.shapes.inverse_conv_transpose` gives those arguments).

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
    ks = _per_dim("kernel_size", kernel_size, n)
    ss = _per_dim("stride", stride, n)
    ps = _per_dim("padding", padding, n, 0)
    ops = _per_dim("output_padding", output_padding, n, 0)
    ds = _per_dim("dilation", dilation, n)
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
