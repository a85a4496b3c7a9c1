r"""Keras ``Conv1D``/``2D``/``3D`` and ``Conv*Transpose`` as lax calls.

References:
  the Keras layer documentation (``keras.layers.Conv2D``, ``Conv2DTranspose``); Keras
  ``conv_utils.conv_output_length`` / ``deconv_output_length``; the Keras 3 JAX backend
  (``_convert_conv_transpose_padding_args_from_keras_to_jax``); TensorFlow's ``'SAME'`` rule
  (``tf.nn.convolution``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from gated_jax._validate import fail
from gated_jax.ports._base import (
    _SPATIAL,
    PortedConv,
    PortedConvTranspose,
    _data_format,
    _spatial_dims,
    _specs,
)
from gated_jax.shapes._config import (
    _dilate,
    _int,
    _keras_padding,
    _keras_transpose_padding,
    _per_dim,
)

__all__ = ["KerasConvTranspose", "keras_conv", "keras_conv_transpose"]


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
    pad = _keras_padding(padding, ks, ds)
    lhs, rhs = _specs(n, last)
    return PortedConv("keras", ks, ss, pad, ds, g, (lhs, rhs, lhs))


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
    mode = _keras_transpose_padding(padding)
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
