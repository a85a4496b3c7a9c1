r"""Keras and ONNX convolutions as lax calls, and kernel layouts between the frameworks.

Every port resolves the framework's arguments once and computes with **one**
``lax.conv_general_dilated`` call; ``lax_kwargs()`` / ``flax_kwargs()`` give the same call
as ``lax`` / Flax arguments. The PyTorch ports are :func:`gated_jax.shapes.torch_conv` and
:func:`gated_jax.shapes.torch_conv_transpose`.

A transposed convolution is, in every framework here, the input gradient of a forward
convolution: the input dilated by the stride (:math:`S - 1` zeros between neighbours),
padded, and convolved at stride 1 with the flipped kernel. Per spatial dim, with
:math:`K_\mathrm{eff} = (K - 1) d + 1`, the *full* result of an input of :math:`H` has
:math:`F = (H - 1) S + K_\mathrm{eff}` entries (each input entry scatters its kernel copy);
each framework returns a window of it, :math:`T` entries from ``begin`` (entries past
:math:`F` are zeros). That window is the ``lax.conv_transpose`` padding

.. math::

    (lo, hi) = \big(K_\mathrm{eff} - 1 - \mathrm{begin},\
                    T + \mathrm{begin} - (H - 1) S - 1\big)

on the stretched input (``transpose_kernel=True``), which is how the ports compute it.

References:
  Keras ``conv_utils.conv_output_length`` / ``deconv_output_length`` and the Keras 3 JAX
  backend (``_convert_conv_transpose_padding_args_from_keras_to_jax``); TensorFlow's
  ``'SAME'`` rule (``tf.nn.convolution``); the ONNX operator specification of ``Conv`` and
  ``ConvTranspose`` (opset 11+).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from jax import lax

from gated_jax._validate import fail
from gated_jax.shapes import (
    _compiled_call,
    _dilate,
    _int,
    _ints,
    _is_int,
    _is_seq,
    _lhs_dilated_conv,
    _same_pads,
    _show,
)

__all__ = [
    "KerasConvTranspose",
    "OnnxConvTranspose",
    "PortedConv",
    "PortedConvTranspose",
    "keras_conv",
    "keras_conv_transpose",
    "kernel_from_keras",
    "kernel_from_torch",
    "kernel_to_keras",
    "kernel_to_torch",
    "onnx_conv",
    "onnx_conv_transpose",
]

_SPATIAL = {1: "W", 2: "HW", 3: "DHW"}


def _specs(n: int, channels_last: bool) -> tuple[str, str]:
    sp = _SPATIAL[n]
    return ("N" + sp + "C") if channels_last else ("NC" + sp), sp + "IO"


def _spatial_dims(name: str, value: Any) -> int:
    n = _int(name, value, minimum=1)
    if n > 3:
        raise fail(name, value, "1, 2 or 3 (spatial dims)")
    return n


def _per_dim(name: str, value: Any, n: int, minimum: int = 1) -> tuple[int, ...]:
    return _ints(name, value, n, minimum=minimum, scalar_ok=True, none_ok=False)


def _data_format(value: Any) -> bool:
    if value not in ("channels_last", "channels_first"):
        raise fail("data_format", value, "'channels_last' or 'channels_first'")
    return value == "channels_last"


def _full_window_pads(h: int, t: int, begin: int, ke: int, s: int) -> tuple[int, int]:
    """``lax.conv_transpose`` padding returning ``t`` entries of the full result from ``begin``."""
    return ke - 1 - begin, t + begin - (h - 1) * s - 1


# ----------------------------------------------------------------------------------------------
# forward convolutions


@dataclasses.dataclass(frozen=True)
class PortedConv:
    r"""A framework's forward convolution as one ``lax.conv_general_dilated`` call.

    ``conv(x, kernel, bias=None)`` takes the framework's own layouts (named by
    ``dimension_numbers``). ``padding`` is a lax mode (``'SAME'``, ``'SAME_LOWER'``,
    ``'VALID'``), which lax resolves from the input size at trace time, or explicit pairs.

    Attributes:
      framework: ``'keras'`` or ``'onnx'``.
      kernel_size, window_strides, rhs_dilation, feature_group_count: for ``lax``.
      padding: a lax padding mode or one ``(lo, hi)`` pair per spatial dim.
      dimension_numbers: ``(lhs_spec, rhs_spec, out_spec)`` of the framework's layouts.
    """

    framework: str
    kernel_size: tuple[int, ...]
    window_strides: tuple[int, ...]
    padding: str | tuple[tuple[int, int], ...]
    rhs_dilation: tuple[int, ...]
    feature_group_count: int
    dimension_numbers: tuple[str, str, str]

    def explicit_padding(self, input_spatial: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """The ``(lo, hi)`` pairs the call uses for this input size (a mode resolved)."""
        if not isinstance(self.padding, str):
            return self.padding
        keff = [_dilate(k, d) for k, d in zip(self.kernel_size, self.rhs_dilation, strict=True)]
        if self.padding == "VALID":
            return ((0, 0),) * len(keff)
        lower = self.padding == "SAME_LOWER"
        return tuple(
            _same_pads(h, ke, s, lower)
            for h, ke, s in zip(input_spatial, keff, self.window_strides, strict=True)
        )

    def output_shape(self, input_spatial: Sequence[int]) -> tuple[int, ...]:
        """Spatial output size: ``floor((H + lo + hi - K_eff) / S) + 1`` per dim."""
        pads = self.explicit_padding(input_spatial)
        return tuple(
            max(0, (h + lo + hi - _dilate(k, d)) // s + 1)
            for h, (lo, hi), k, d, s in zip(
                input_spatial,
                pads,
                self.kernel_size,
                self.rhs_dilation,
                self.window_strides,
                strict=True,
            )
        )

    def lax_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``lax.conv_general_dilated`` (after ``lhs, rhs``)."""
        return {
            "window_strides": self.window_strides,
            "padding": self.padding,
            "rhs_dilation": self.rhs_dilation,
            "feature_group_count": self.feature_group_count,
            "dimension_numbers": self.dimension_numbers,
        }

    def flax_kwargs(self) -> dict[str, Any]:
        """Arguments of ``flax.linen.Conv`` / ``flax.nnx.Conv`` (channels-last, ``HWIO``).

        Flax takes channels-last data and an ``HWIO`` kernel: an ONNX (``OIHW``) weight goes
        through :func:`kernel_from_torch`; a Keras kernel is already ``HWIO``.
        """
        return {
            "kernel_size": self.kernel_size,
            "strides": self.window_strides,
            "padding": self.padding,
            "kernel_dilation": self.rhs_dilation,
            "feature_group_count": self.feature_group_count,
        }

    def __call__(self, x, kernel, bias=None):
        return _compiled_call(self, x, kernel, bias)

    def _apply(self, x, kernel, bias):
        import jax.numpy as jnp

        x, kernel = jnp.asarray(x), jnp.asarray(kernel)
        lhs_spec, rhs_spec, _ = self.dimension_numbers
        k_sp = tuple(kernel.shape[rhs_spec.index(c)] for c in _SPATIAL[len(self.kernel_size)])
        if k_sp != self.kernel_size:
            raise fail(
                "kernel", kernel, f"a kernel with spatial shape {self.kernel_size} ({rhs_spec})"
            )
        y = lax.conv_general_dilated(x, kernel, **self.lax_kwargs())
        if bias is not None:
            c = lhs_spec.index("C")
            y = y + jnp.asarray(bias).reshape([-1 if i == c else 1 for i in range(y.ndim)])
        return y


def keras_conv(
    spatial_dims: int,
    kernel_size: int | Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: str = "valid",
    data_format: str = "channels_last",
    dilation_rate: int | Sequence[int] = 1,
    groups: int = 1,
) -> PortedConv:
    r"""Keras ``Conv1D`` / ``Conv2D`` / ``Conv3D`` arguments as a lax convolution.

    Keras's documented size rule (``conv_output_length``) per spatial dim, with
    :math:`K_\mathrm{eff} = (K - 1) d + 1`:

    .. math::

        H_\mathrm{out} = \Big\lceil \frac{H}{S} \Big\rceil \ (\texttt{'same'},
        \texttt{'causal'}), \qquad
        \Big\lceil \frac{H - K_\mathrm{eff} + 1}{S} \Big\rceil \ (\texttt{'valid'}).

    ``'same'`` is TensorFlow's rule: a total padding of
    :math:`\max((\lceil H/S \rceil - 1) S + K_\mathrm{eff} - H, 0)`, ``lo = total // 2``, the
    extra at the end. With stride > 1 it depends on the input size, so no fixed explicit
    padding expresses it for every size (PyTorch's symmetric ``padding=p`` cannot express
    the odd totals at all, which needs a ``jnp.pad`` first); lax's ``'SAME'`` is the same rule
    resolved at trace time, so one lax or Flax call expresses it for every size, and
    :meth:`PortedConv.explicit_padding` gives the pairs for one size. ``'causal'``
    (``Conv1D`` only) pads :math:`(d (K - 1), 0)`, Flax's ``'CAUSAL'``.

    Args:
      spatial_dims: 1, 2 or 3 (``Conv1D``, ``Conv2D``, ``Conv3D``).
      kernel_size, strides, dilation_rate: an int or one per dim, as Keras takes them.
      padding: ``'valid'``, ``'same'`` or (one spatial dim) ``'causal'``.
      data_format: ``'channels_last'`` (Keras's default, ``NHWC``) or ``'channels_first'``.
      groups: Keras's ``groups`` (``feature_group_count``).

    Returns:
      :class:`PortedConv`; ``keras_conv(...)(x, kernel, bias)`` with Keras's kernel
      (``kernel_size + (C / groups, filters)``, ``HWIO``) equals the layer's output.

    Examples:
      >>> conv = keras_conv(1, 3, strides=2, padding="same")
      >>> conv.padding, conv.explicit_padding((10,)), conv.output_shape((10,))
      ('SAME', ((0, 1),), (5,))
      >>> keras_conv(1, 3, dilation_rate=2, padding="causal").padding
      ((4, 0),)
    """
    n = _spatial_dims("spatial_dims", spatial_dims)
    ks = _per_dim("kernel_size", kernel_size, n)
    ss = _per_dim("strides", strides, n)
    ds = _per_dim("dilation_rate", dilation_rate, n)
    g = _int("groups", groups, minimum=1)
    last = _data_format(data_format)
    mode = padding.lower() if isinstance(padding, str) else padding
    if mode not in ("valid", "same", "causal"):
        raise fail("padding", padding, "'valid', 'same' or 'causal'")
    if mode == "causal" and n != 1:
        raise fail(
            "padding", padding, f"'valid' or 'same' with {n} spatial dims ('causal': Conv1D)"
        )
    pad: str | tuple[tuple[int, int], ...]
    pad = (((ks[0] - 1) * ds[0], 0),) if mode == "causal" else mode.upper()
    lhs, rhs = _specs(n, last)
    return PortedConv("keras", ks, ss, pad, ds, g, (lhs, rhs, lhs))


def _onnx_pads(name: str, value: Any, n: int) -> tuple[tuple[int, int], ...]:
    """ONNX ``pads`` ``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]`` as ``(begin, end)``."""
    if value is None:
        return ((0, 0),) * n
    if not _is_seq(value) or len(value) != 2 * n or not all(_is_int(v) and v >= 0 for v in value):
        raise fail(
            name, _show(value), f"{2 * n} non-negative ints [x1_begin, ..., x1_end, ...] (ONNX)"
        )
    vals = [int(v) for v in value]
    return tuple((vals[i], vals[n + i]) for i in range(n))


def _kernel_shape(value: Any) -> tuple[int, ...]:
    if not _is_seq(value) or not 1 <= len(value) <= 3:
        raise fail("kernel_shape", _show(value), "a sequence of 1 to 3 positive ints")
    return _ints("kernel_shape", value, len(value))


_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def _auto_pad(value: Any) -> str:
    if value not in _AUTO_PADS:
        raise fail("auto_pad", value, "one of " + ", ".join(map(repr, _AUTO_PADS)))
    return value


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
    pad: str | tuple[tuple[int, int], ...] = {
        "NOTSET": explicit,
        "SAME_UPPER": "SAME",
        "SAME_LOWER": "SAME_LOWER",
        "VALID": "VALID",
    }[mode]
    lhs, _ = _specs(n, False)
    return PortedConv("onnx", ks, ss, pad, ds, g, (lhs, "OI" + _SPATIAL[n], lhs))


# ----------------------------------------------------------------------------------------------
# transposed convolutions


@dataclasses.dataclass(frozen=True)
class PortedConvTranspose(abc.ABC):
    r"""A framework's transposed convolution as one ``lax.conv_general_dilated`` call.

    Subclasses define :meth:`window`: which ``T`` entries of the full transposed result
    (:math:`F = (H - 1) S + K_\mathrm{eff}` per dim) the framework returns, from ``begin``.
    The call dilates the input by the stride and convolves at stride 1 with the flipped
    kernel (in/out channels exchanged per group), padded by :meth:`padding_for`.

    Attributes:
      kernel_size, strides, dilation: per spatial dim.
      groups: feature groups (1 for Keras).
      channels_last: the data layout (``N...C`` or ``NC...``).
    """

    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    channels_last: bool

    @abc.abstractmethod
    def window(self, input_spatial: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """``(begin, T)`` per spatial dim (defined by each framework)."""

    def output_shape(self, input_spatial: Sequence[int]) -> tuple[int, ...]:
        """The spatial output size ``T`` per dim (the framework's documented rule)."""
        return tuple(t for _, t in self.window(input_spatial))

    def padding_for(self, input_spatial: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """Explicit ``lax.conv_transpose`` padding (stretched input) for this input size."""
        out = []
        for h, (begin, t), k, d, s in zip(
            input_spatial,
            self.window(input_spatial),
            self.kernel_size,
            self.dilation,
            self.strides,
            strict=True,
        ):
            out.append(_full_window_pads(h, t, begin, _dilate(k, d), s))
        return tuple(out)

    @abc.abstractmethod
    def _kernel_spec(self) -> str:
        """The layout of the framework's transposed weight (Keras ``"HWIO"``, ONNX ``"OIHW"``)."""

    def lax_kwargs(self, input_spatial: Sequence[int]) -> dict[str, Any]:
        """Arguments of ``lax.conv_transpose`` (after ``lhs, rhs``) with the raw kernel.

        ``lax.conv_transpose`` has no feature groups: ``groups > 1`` is refused here (the
        port's own call handles groups). The port's call stretches the input explicitly
        instead: XLA's CPU simplifier aborts on some ``lhs_dilation`` convolutions whose
        padded input is no larger than the kernel (``lax.conv_transpose`` of a ``(1, 4, 1, 2)``
        input with a ``(2, 2)`` kernel, strides ``(2, 3)``, ``rhs_dilation=(1, 2)`` and padding
        ``((0, 0), (1, 1))``, for one, in jax 0.10).
        """
        if self.groups != 1:
            raise fail(
                "groups",
                self.groups,
                "1 for lax.conv_transpose / Flax ConvTranspose (they have no feature groups; "
                "call the port, one conv_general_dilated with lhs_dilation)",
            )
        lhs = _specs(len(self.kernel_size), self.channels_last)[0]
        return {
            "strides": self.strides,
            "padding": self.padding_for(input_spatial),
            "rhs_dilation": self.dilation,
            "dimension_numbers": (lhs, self._kernel_spec(), lhs),
            "transpose_kernel": True,
        }

    def flax_kwargs(self, input_spatial: Sequence[int]) -> dict[str, Any]:
        """Arguments of Flax ``ConvTranspose`` (channels-last data) for this input size.

        The kernel is the framework's through :func:`kernel_from_keras` /
        :func:`kernel_from_torch` with ``transposed=True`` (``transpose_kernel=True``).
        """
        kw = self.lax_kwargs(input_spatial)
        return {
            "kernel_size": self.kernel_size,
            "strides": kw["strides"],
            "padding": kw["padding"],
            "kernel_dilation": kw["rhs_dilation"],
            "transpose_kernel": True,
        }

    def _torch_kernel(self, kernel):
        """The kernel as ``(C_in, C_out / groups, *k)`` (PyTorch / ONNX layout)."""
        return kernel

    def prepare_kernel(self, kernel):
        """The framework's kernel as the ``OI...`` kernel of the stride-1 convolution.

        Flipped, in/out channels exchanged per group; NumPy or JAX arrays alike.
        """
        w = self._torch_kernel(kernel)
        if tuple(w.shape[2:]) != self.kernel_size:
            raise fail("kernel", kernel, f"a kernel with spatial shape {self.kernel_size}")
        return _regroup_flip(w, self.groups)

    def conv_kwargs(self, input_spatial: Sequence[int]) -> dict[str, Any]:
        """Arguments of the one ``lax.conv_general_dilated`` call (with :meth:`prepare_kernel`)."""
        n = len(self.kernel_size)
        if min(self.output_shape(input_spatial), default=1) < 1:
            raise fail(
                "input_spatial",
                tuple(input_spatial),
                f"large enough for a non-empty output (gives {self.output_shape(input_spatial)})",
            )
        lhs = _specs(n, self.channels_last)[0]
        return {
            "window_strides": (1,) * n,
            "padding": self.padding_for(input_spatial),
            "lhs_dilation": self.strides,
            "rhs_dilation": self.dilation,
            "dimension_numbers": (lhs, "OI" + _SPATIAL[n], lhs),
            "feature_group_count": self.groups,
        }

    def __call__(self, x, kernel, bias=None):
        return _compiled_call(self, x, kernel, bias)

    def _apply(self, x, kernel, bias):
        import jax.numpy as jnp

        x = jnp.asarray(x)
        axes = range(1, x.ndim - 1) if self.channels_last else range(2, x.ndim)
        kw = self.conv_kwargs([x.shape[a] for a in axes])
        y = _lhs_dilated_conv(x, self.prepare_kernel(jnp.asarray(kernel)), kw, axes)
        if bias is not None:
            c = kw["dimension_numbers"][0].index("C")
            y = y + jnp.asarray(bias).reshape([-1 if i == c else 1 for i in range(y.ndim)])
        return y


def _regroup_flip(w, groups: int):
    """``(C_in, C_out / g, *k)`` -> flipped ``(C_out, C_in / g, *k)`` (array-generic)."""
    cin, cout_g, ksp = w.shape[0], w.shape[1], tuple(w.shape[2:])
    if cin % groups:
        raise fail("kernel", w, f"a first dim divisible by groups (={groups})")
    w = w.reshape((groups, cin // groups, cout_g) + ksp).swapaxes(1, 2)
    w = w.reshape((groups * cout_g, cin // groups) + ksp)
    return w[(slice(None), slice(None)) + (slice(None, None, -1),) * len(ksp)]


@dataclasses.dataclass(frozen=True)
class KerasConvTranspose(PortedConvTranspose):
    r"""Keras ``Conv*Transpose``: see :func:`keras_conv_transpose`.

    Attributes:
      padding: ``'valid'`` or ``'same'``.
      output_padding: per dim, or ``None`` (Keras's default).
    """

    padding: str = "valid"
    output_padding: tuple[int, ...] | None = None

    def window(self, input_spatial: Sequence[int]) -> tuple[tuple[int, int], ...]:
        out = []
        for i, (h, k, s, d) in enumerate(
            zip(input_spatial, self.kernel_size, self.strides, self.dilation, strict=True)
        ):
            ke = _dilate(k, d)
            if self.output_padding is None:
                t = h * s + max(ke - s, 0) if self.padding == "valid" else h * s
            else:
                pad = ke // 2 if self.padding == "same" else 0
                t = (h - 1) * s + ke - 2 * pad + self.output_padding[i]
            begin = 0 if self.padding == "valid" else max((h - 1) * s + ke - t, 0) // 2
            out.append((begin, t))
        return tuple(out)

    def _kernel_spec(self) -> str:
        return _SPATIAL[len(self.kernel_size)] + "IO"

    def _torch_kernel(self, kernel):
        n = len(self.kernel_size)
        return kernel.transpose((n + 1, n, *range(n)))  # (*k, out, in) -> (in, out, *k)


def keras_conv_transpose(
    spatial_dims: int,
    kernel_size: int | Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: str = "valid",
    output_padding: int | Sequence[int] | None = None,
    data_format: str = "channels_last",
    dilation_rate: int | Sequence[int] = 1,
) -> KerasConvTranspose:
    r"""Keras ``Conv1DTranspose`` / ``Conv2DTranspose`` / ``Conv3DTranspose`` as a lax call.

    Keras's output size (``conv_utils.deconv_output_length``), per dim, with
    :math:`K_\mathrm{eff} = (K - 1) d + 1`:

    .. math::

        T = \begin{cases}
          H S + \max(K_\mathrm{eff} - S, 0) & \texttt{'valid'}, \text{ no output\_padding} \\
          H S & \texttt{'same'}, \text{ no output\_padding} \\
          (H - 1) S + K_\mathrm{eff} - 2 p + \text{output\_padding} &
            p = 0 \ (\texttt{'valid'}),\ p = \lfloor K_\mathrm{eff} / 2 \rfloor
            \ (\texttt{'same'}).
        \end{cases}

    The values are the gradient of the forward convolution from :math:`T` to :math:`H`:
    ``'valid'`` is the full transposed result from entry 0 (zeros past its end); ``'same'``
    starts at TensorFlow's ``'SAME'`` low padding of that forward convolution,
    :math:`\max((H - 1) S + K_\mathrm{eff} - T, 0) // 2`. (For an even :math:`K_\mathrm{eff}`
    with ``output_padding=0`` the ``'SAME'`` forward conv of :math:`T` has :math:`H - 1`
    outputs and TensorFlow refuses; Keras 3 and this port use the same start.) The padding
    depends on the input size only through ``output_padding=None``'s defaults, never for a
    given size: one ``lax.conv_transpose`` / Flax ``ConvTranspose`` call with
    :meth:`~PortedConvTranspose.padding_for` expresses every case.

    Args:
      spatial_dims: 1, 2 or 3.
      kernel_size, strides, dilation_rate: an int or one per dim.
      padding: ``'valid'`` or ``'same'``.
      output_padding: ``None`` or an int / one per dim, each smaller than the stride (as Keras
        requires).
      data_format: ``'channels_last'`` or ``'channels_first'``.

    Returns:
      :class:`KerasConvTranspose`; ``tconv(x, kernel, bias)`` with Keras's kernel
      (``kernel_size + (filters, C_in)``) equals the layer's output.

    Examples:
      >>> t = keras_conv_transpose(1, 3, strides=2, padding="same")
      >>> t.output_shape((5,)), t.padding_for((5,))
      ((10,), ((2, 1),))
      >>> keras_conv_transpose(1, 3, strides=2, output_padding=1).output_shape((5,))
      (12,)
    """
    n = _spatial_dims("spatial_dims", spatial_dims)
    ks = _per_dim("kernel_size", kernel_size, n)
    ss = _per_dim("strides", strides, n)
    ds = _per_dim("dilation_rate", dilation_rate, n)
    last = _data_format(data_format)
    mode = padding.lower() if isinstance(padding, str) else padding
    if mode not in ("valid", "same"):
        raise fail("padding", padding, "'valid' or 'same' (Keras Conv*Transpose)")
    ops = None
    if output_padding is not None:
        ops = _per_dim("output_padding", output_padding, n, minimum=0)
        for i, (op, s) in enumerate(zip(ops, ss, strict=True)):
            if op >= s:
                raise fail(
                    "output_padding",
                    output_padding,
                    f"smaller than the stride in spatial dim {i} (stride {s}), as Keras requires",
                )
    return KerasConvTranspose(ks, ss, ds, 1, last, mode, ops)


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


# ----------------------------------------------------------------------------------------------
# kernel layouts


def _array(value):
    """A NumPy or JAX array as it is (the helpers keep the caller's array type)."""
    return value if hasattr(value, "reshape") and hasattr(value, "transpose") else np.asarray(value)


def _perm_to_hwio(n: int) -> tuple[int, ...]:
    return (*range(2, 2 + n), 1, 0)  # (O, I, *k) -> (*k, I, O)


def _flip_swap(k, n: int, groups: int):
    """Gradient-form ``HWIO`` <-> the stride-1 stretched-input conv's ``HWIO`` (an involution).

    Spatially flipped; ``(*k, I, g * O_g)`` becomes ``(*k, O_g, g * I)`` (channels exchanged
    within each group).
    """
    k = k[(slice(None, None, -1),) * n]
    sp, i, o = k.shape[:n], k.shape[n], k.shape[n + 1]
    if o % groups:
        raise fail("groups", groups, f"a divisor of the kernel's last dim ({o})")
    k = k.reshape(sp + (i, groups, o // groups)).transpose((*range(n), n + 2, n + 1, n))
    return k.reshape(sp + (o // groups, groups * i))


def kernel_from_torch(weight, *, transposed: bool = False, transpose_kernel: bool = True, groups=1):
    r"""A PyTorch (or ONNX) weight as the ``HWIO`` kernel lax and Flax take (channels last).

    ``Conv{n}d``'s ``(O, C / groups, *k)`` becomes ``(*k, C / groups, O)``: the kernel of
    ``lax.conv_general_dilated`` with ``('NHWC', 'HWIO', 'NHWC')`` and of Flax ``Conv``.
    ``ConvTranspose{n}d``'s ``(C_in, C_out / groups, *k)`` is by definition the weight of the
    forward convolution it differentiates, so the same permutation gives that forward
    convolution's kernel, which ``lax.conv_transpose`` and Flax ``ConvTranspose`` take with
    ``transpose_kernel=True`` (this is also Keras's ``Conv*Transpose`` layout). With
    ``transpose_kernel=False`` the kernel is flipped and its channels exchanged per group:
    the kernel of the stride-1 convolution of the stretched input (Flax's default
    ``ConvTranspose``; ``feature_group_count=groups`` with ``lhs_dilation``).

    Args:
      weight: the PyTorch / ONNX weight (``O``/``I`` first, then the spatial dims).
      transposed: the weight of a transposed convolution.
      transpose_kernel: the form of a transposed kernel (see above).
      groups: the convolution's groups (used by ``transpose_kernel=False`` only).

    Returns:
      The kernel, spatial dims first (a NumPy array for NumPy input, a JAX array for JAX).

    Examples:
      >>> import numpy as np
      >>> kernel_from_torch(np.zeros((8, 3, 5, 4))).shape
      (5, 4, 3, 8)
    """
    w = _array(weight)
    n = w.ndim - 2
    if n < 1:
        raise fail("weight", weight, "an array of 3 to 5 dims (O, I, *kernel)")
    k = w.transpose(_perm_to_hwio(n))
    if transposed and not transpose_kernel:
        k = _flip_swap(k, n, _int("groups", groups, minimum=1))
    return k


def kernel_to_torch(kernel, *, transposed: bool = False, transpose_kernel: bool = True, groups=1):
    """The inverse of :func:`kernel_from_torch` (same arguments): ``HWIO`` to ``OIHW``.

    Examples:
      >>> import numpy as np
      >>> kernel_to_torch(np.zeros((5, 4, 3, 8))).shape
      (8, 3, 5, 4)
    """
    k = _array(kernel)
    n = k.ndim - 2
    if n < 1:
        raise fail("kernel", kernel, "an array of 3 to 5 dims (*kernel, I, O)")
    if transposed and not transpose_kernel:
        k = _flip_swap(k, n, _int("groups", groups, minimum=1))
    return k.transpose((n + 1, n, *range(n)))


def kernel_from_keras(kernel, *, transposed: bool = False, transpose_kernel: bool = True):
    """A Keras kernel as lax / Flax take it: ``Conv*`` kernels are ``HWIO`` already.

    ``Conv*Transpose`` kernels, ``kernel_size + (filters, C_in)``, are the forward
    convolution's ``HWIO`` kernel, what ``transpose_kernel=True`` takes; with
    ``transpose_kernel=False`` they are flipped and their channels exchanged.

    Examples:
      >>> import numpy as np
      >>> kernel_from_keras(np.zeros((3, 2, 4)), transposed=True, transpose_kernel=False).shape
      (3, 4, 2)
    """
    k = _array(kernel)
    if transposed and not transpose_kernel:
        k = _flip_swap(k, k.ndim - 2, 1)
    return k


def kernel_to_keras(kernel, *, transposed: bool = False, transpose_kernel: bool = True):
    """The inverse of :func:`kernel_from_keras` (same arguments).

    Examples:
      >>> import numpy as np
      >>> kernel_to_keras(np.zeros((3, 4, 2)), transposed=True, transpose_kernel=False).shape
      (3, 2, 4)
    """
    return kernel_from_keras(kernel, transposed=transposed, transpose_kernel=transpose_kernel)
