r"""The shared base of the framework ports: ported convolutions, kernel layouts, one compiled call.

Every port resolves the framework's arguments once and computes with **one**
``lax.conv_general_dilated`` call, compiled as one program per (port, shapes);
``lax_kwargs()`` / ``flax_kwargs()`` give the same call as ``lax`` / Flax arguments.

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
  Dumoulin and Visin, *A guide to convolution arithmetic for deep learning*, 2016
  (arXiv:1603.07285), Section 4 (transposed convolution arithmetic); the PyTorch
  ``Conv2d`` / ``ConvTranspose2d`` documentation (weight layouts); the Keras 3 JAX backend
  (``_convert_conv_transpose_padding_args_from_keras_to_jax``); the ONNX operator
  specification of ``Conv`` and ``ConvTranspose`` (opset 11+).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gated_jax._validate import fail
from gated_jax.shapes._config import _dilate, _int, _mode_pairs

_SPATIAL = {1: "W", 2: "HW", 3: "DHW"}


def _specs(n: int, channels_last: bool) -> tuple[str, str]:
    sp = _SPATIAL[n]
    return ("N" + sp + "C") if channels_last else ("NC" + sp), sp + "IO"


def _spatial_dims(name: str, value: Any) -> int:
    n = _int(name, value, minimum=1)
    if n > 3:
        raise fail(name, value, "1, 2 or 3 (spatial dims)")
    return n


def _data_format(value: Any) -> bool:
    if value not in ("channels_last", "channels_first"):
        raise fail("data_format", value, "'channels_last' or 'channels_first'")
    return value == "channels_last"


def _full_window_pads(h: int, t: int, begin: int, ke: int, s: int) -> tuple[int, int]:
    """``lax.conv_transpose`` padding returning ``t`` entries of the full result from ``begin``."""
    return ke - 1 - begin, t + begin - (h - 1) * s - 1


# ----------------------------------------------------------------------------------------------
# one compiled program per call


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
    kw = dict(kwargs)
    for axis, s in zip(spatial_axes, kw.pop("lhs_dilation"), strict=True):
        if s > 1 and x.shape[axis] > 0:
            st = jnp.stack([x] + [jnp.zeros_like(x)] * (s - 1), axis=axis + 1)
            st = st.reshape(x.shape[:axis] + (x.shape[axis] * s,) + x.shape[axis + 1 :])
            x = lax.slice_in_dim(st, 0, (x.shape[axis] - 1) * s + 1, axis=axis)
    return lax.conv_general_dilated(x, w, **kw)


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
        return _mode_pairs("padding", self.padding, input_spatial, keff, self.window_strides)

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
