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
from gated_jax.ports._base import (
    _SPATIAL,
    _compiled_call,
    _lhs_dilated_conv,
    _regroup_flip,
    _transpose_flax_kwargs,
    _transpose_lax_kwargs,
)
from gated_jax.shapes._config import (
    _dilate,
    _int,
    _ints,
    _is_seq,
    _nonempty_output,
    _operands,
    _output_padding,
    _per_dim,
    _show,
    _sizes,
    _torch_pad_limits,
    _torch_pad_mode,
    _torch_padding,
)

__all__ = [
    "TorchConv",
    "TorchConvTranspose",
    "torch_conv",
    "torch_conv_transpose",
    "torch_transpose_padding_for_output",
]


@dataclasses.dataclass(frozen=True)
class TorchConv:
    r"""A PyTorch ``Conv{n}d`` as ``lax.conv_general_dilated`` arguments (``NC...``/``OI...``).

    Call it as ``conv(x, weight, bias=None)`` with PyTorch's layouts (input ``(N, C, *spatial)``,
    weight ``(O, C / groups, *kernel)``): for ``padding_mode`` other than ``'zeros'`` the input
    is first padded by ``jnp.pad`` with ``pre_padding`` in ``pad_mode`` (PyTorch's
    ``reflect``/``replicate``/``circular`` are ``jnp.pad``'s ``reflect``/``edge``/``wrap``),
    then convolved with ``padding``. The call refuses what PyTorch refuses: a weight that is not
    the layer's (its spatial shape, or ``C / groups`` input channels), an empty output (the
    padded input shorter than the dilated kernel), ``'reflect'`` padding not smaller than the
    input and ``'circular'`` padding larger than the input (wrapping around more than once).

    Attributes:
      window_strides, padding, rhs_dilation, feature_group_count: for ``lax``.
      pre_padding: ``(lo, hi)`` per dim for ``jnp.pad``, or ``None`` for zero padding.
      pad_mode: the ``jnp.pad`` mode of ``pre_padding``.
      kernel_size: the layer's kernel size (``None``: not checked, no :meth:`output_shape`).
    """

    window_strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    rhs_dilation: tuple[int, ...]
    feature_group_count: int
    pre_padding: tuple[tuple[int, int], ...] | None = None
    pad_mode: str = "constant"
    kernel_size: tuple[int, ...] | None = None

    def padding_for(self, input_spatial: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """The ``(lo, hi)`` padding per dim PyTorch applies (whatever its ``padding_mode``).

        The same for every input size; ``input_spatial`` is checked against PyTorch's limits
        of ``'reflect'`` / ``'circular'`` padding (``ValueError`` naming ``padding``).
        """
        n = len(self.window_strides)
        sizes = _ints("input_spatial", input_spatial, n, minimum=0)
        pairs = self.padding if self.pre_padding is None else self.pre_padding
        _torch_pad_limits(self.pad_mode, pairs, sizes)
        return pairs

    def output_shape(self, input_spatial: Sequence[int]) -> tuple[int, ...]:
        r"""PyTorch's documented size rule :math:`\lfloor (H + lo + hi - d (k - 1) - 1) / s
        \rfloor + 1` per dim.

        Raises:
          ValueError: naming ``input_spatial`` where the output would be empty (PyTorch:
            "Kernel size can't be greater than actual input size"), or ``padding`` beyond
            PyTorch's ``'reflect'`` / ``'circular'`` limits.
        """
        return self._sizes("input_spatial", input_spatial)

    def _sizes(self, name: str, value: Any) -> tuple[int, ...]:
        """:meth:`output_shape` for the input ``value`` (a size, or the array ``x``)."""
        if self.kernel_size is None:
            raise fail("kernel_size", None, "known for output_shape (build with torch_conv)")
        input_spatial = np.shape(value)[2:] if name == "x" else value
        pairs = self.padding_for(input_spatial)
        out = [
            max(0, (h + lo + hi - _dilate(k, d)) // s + 1)
            for h, (lo, hi), k, d, s in zip(
                input_spatial,
                pairs,
                self.kernel_size,
                self.rhs_dilation,
                self.window_strides,
                strict=True,
            )
        ]
        return _nonempty_output(name, value, out, _TORCH_EMPTY)

    def lax_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``lax.conv_general_dilated`` (after ``lhs, rhs``), ``NC...``.

        With ``padding_mode='zeros'`` only: lax pads with zeros, so for the other modes a
        ``ValueError`` names ``padding_mode`` (the port's call pads the input with
        ``jnp.pad(x, ((0, 0), (0, 0), *pre_padding), mode=pad_mode)`` first).
        """
        if self.pre_padding is not None:
            raise fail(
                "padding_mode",
                _PAD_MODE_NAMES[self.pad_mode],
                "'zeros' for lax_kwargs (lax pads with zeros only): pad the input with "
                "jnp.pad(x, ((0, 0), (0, 0), *pre_padding), mode=pad_mode) first, or call "
                "the port",
            )
        sp = _SPATIAL[len(self.window_strides)]
        return {
            "window_strides": self.window_strides,
            "padding": self.padding,
            "rhs_dilation": self.rhs_dilation,
            "feature_group_count": self.feature_group_count,
            "dimension_numbers": ("NC" + sp, "OI" + sp, "NC" + sp),
        }

    def flax_kwargs(self) -> dict[str, Any]:
        """Arguments of ``flax.linen.Conv`` / ``flax.nnx.Conv`` (channels-last, ``HWIO``).

        The weight goes through :func:`kernel_from_torch`. ``'zeros'`` padding is explicit
        pairs; ``'reflect'`` / ``'circular'`` are Flax's ``'REFLECT'`` / ``'CIRCULAR'`` where
        PyTorch's pairs are Flax's ``((K_eff - 1) // 2, K_eff // 2)`` (``padding='same'``, or
        an odd ``K_eff`` with ``padding=(K_eff - 1) / 2``); anything else (``'replicate'``,
        other pairs) has no Flax form: a ``ValueError`` names ``padding_mode``.
        """
        if self.kernel_size is None:
            raise fail("kernel_size", None, "known for flax_kwargs (build with torch_conv)")
        padding: Any = self.padding
        if self.pre_padding is not None:
            keff = [_dilate(k, d) for k, d in zip(self.kernel_size, self.rhs_dilation, strict=True)]
            flax_pairs = tuple(((k - 1) // 2, k // 2) for k in keff)
            mode = {"reflect": "REFLECT", "wrap": "CIRCULAR"}.get(self.pad_mode)
            if mode is None or self.pre_padding != flax_pairs:
                raise fail(
                    "padding_mode",
                    _PAD_MODE_NAMES[self.pad_mode],
                    f"'zeros' for flax_kwargs with padding {self.pre_padding}: Flax pads "
                    f"'REFLECT' / 'CIRCULAR' by {flax_pairs} only, and has no 'replicate'",
                )
            padding = mode
        return {
            "kernel_size": self.kernel_size,
            "strides": self.window_strides,
            "padding": padding,
            "kernel_dilation": self.rhs_dilation,
            "feature_group_count": self.feature_group_count,
        }

    def __call__(self, x, weight, bias=None):
        return _compiled_call(self, x, weight, bias)

    def _apply(self, x, weight, bias):
        x, weight = jnp.asarray(x), jnp.asarray(weight)
        n = len(self.window_strides)
        if self.kernel_size is not None:
            layout = (1, 1, range(2, n + 2))
            _operands(x, weight, "weight", layout, self.kernel_size, self.feature_group_count)
            self._sizes("x", x)  # PyTorch's refusals, before any padding
        if self.pre_padding is not None:
            x = jnp.pad(x, ((0, 0), (0, 0), *self.pre_padding), mode=self.pad_mode)
        y = lax.conv_general_dilated(
            x,
            weight,
            self.window_strides,
            self.padding,
            rhs_dilation=self.rhs_dilation,
            feature_group_count=self.feature_group_count,
        )
        if bias is not None:
            y = y + jnp.asarray(bias).reshape((1, -1) + (1,) * (y.ndim - 2))
        return y


_TORCH_EMPTY = (
    "the padded input is shorter than the dilated kernel, which PyTorch refuses "
    "(Kernel size can't be greater than actual input size)"
)
_PAD_MODE_NAMES = {
    "constant": "zeros",
    "reflect": "reflect",
    "edge": "replicate",
    "wrap": "circular",
}


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

    Raises:
      ValueError: naming the argument, for what PyTorch refuses: ``padding='same'`` with a
        stride; and for an input (the call, :meth:`TorchConv.output_shape`,
        :meth:`TorchConv.padding_for`) an empty output, ``'reflect'`` padding not smaller
        than the input, ``'circular'`` padding larger than the input, and (the call) a weight
        of another spatial shape or channel count than the layer's.

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
        return TorchConv(ss, pairs, ds, g, kernel_size=ks)
    return TorchConv(ss, ((0, 0),) * n, ds, g, pairs, pad_mode, ks)


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

    def output_shape(
        self, input_spatial: Sequence[int], output_padding: Any = None
    ) -> tuple[int, ...]:
        """PyTorch's documented rule ``(H-1)s - 2p + d(k-1) + output_padding + 1`` per dim.

        Raises:
          ValueError: `` `padding` (=...) must be small enough for a non-empty output`` where
            the rule gives a size below 1 (PyTorch refuses such a call).
        """
        n = len(self.kernel_size)
        sizes = _ints("input_spatial", input_spatial, n, minimum=0)
        ops = self.output_padding if output_padding is None else output_padding
        ops = _ints("output_padding", ops, n, minimum=0)
        return self._nonempty(sizes, self._rule(sizes, ops))

    def _rule(self, sizes: Sequence[int], ops: Sequence[int]) -> tuple[int, ...]:
        return tuple(
            (h - 1) * s - 2 * p + d * (k - 1) + op + 1
            for h, s, p, d, k, op in zip(
                sizes, self.stride, self.padding, self.dilation, self.kernel_size, ops, strict=True
            )
        )

    def _nonempty(self, sizes: Sequence[int], out: tuple[int, ...]) -> tuple[int, ...]:
        if min(out, default=1) < 1:
            raise fail(
                "padding",
                self.padding,
                f"small enough for a non-empty output: input {tuple(sizes)} gives {out}, as "
                "PyTorch refuses too",
            )
        return out

    def output_padding_for(self, input_spatial: Sequence[int], output_size: Any) -> tuple[int, ...]:
        """PyTorch's ``output_size`` at call time: the ``output_padding`` it implies.

        ``output_size`` is the spatial sizes or, as PyTorch also takes it (its own example
        passes ``input.size()``), all ``n + 2`` entries ``(N, C_out, *spatial)``, of which the
        first two are ignored, as PyTorch ignores them. Each size must lie in
        ``[m, m + stride - 1]`` with ``m`` the size for ``output_padding = 0``, as PyTorch
        requires (``ValueError`` otherwise). This is PyTorch's own split of a wanted size
        between ``padding`` (fixed by the layer) and ``output_padding``.
        """
        n = len(self.kernel_size)
        sizes = _ints("input_spatial", input_spatial, n, minimum=0)
        m = len(output_size) if _is_seq(output_size) else n
        spatial = output_size[2:] if m == n + 2 else output_size
        outs = _ints("output_size", spatial, n, minimum=0, none_ok=False)
        least = self._rule(sizes, (0,) * n)
        for i, (o, lo, s) in enumerate(zip(outs, least, self.stride, strict=True)):
            if not lo <= o <= lo + s - 1:
                raise fail(
                    "output_size",
                    _show(output_size),
                    f"in [{lo}, {lo + s - 1}] in spatial dim {i} (the sizes output_padding "
                    f"0..stride-1 give), as PyTorch requires",
                )
        return tuple(o - lo for o, lo in zip(outs, least, strict=True))

    def padding_for(
        self, input_spatial: Sequence[int], output_size: Any = None
    ) -> tuple[tuple[int, int], ...]:
        """Explicit ``lax.conv_transpose`` padding (stretched input) for this input size.

        ``(d (k - 1) - p, d (k - 1) - p + output_padding)`` per dim, with ``output_size``
        resolved as the call resolves it.
        """
        return self.conv_kwargs(input_spatial, output_size)["padding"]

    def lax_kwargs(self, input_spatial: Sequence[int], output_size: Any = None) -> dict[str, Any]:
        """Arguments of ``lax.conv_transpose`` (after ``lhs, rhs``) with PyTorch's raw weight.

        ``NC...`` data, the weight ``(C_in, C_out, *k)`` as ``OI...`` of the forward
        convolution, ``transpose_kernel=True``. ``lax.conv_transpose`` has no feature groups:
        ``groups > 1`` is refused (the port's own call handles groups).
        """
        sp = _SPATIAL[len(self.kernel_size)]
        dn = ("NC" + sp, "OI" + sp, "NC" + sp)
        pads = self.padding_for(input_spatial, output_size)
        return _transpose_lax_kwargs(self.groups, self.stride, pads, self.dilation, dn)

    def flax_kwargs(self, input_spatial: Sequence[int], output_size: Any = None) -> dict[str, Any]:
        """Arguments of Flax ``ConvTranspose`` (channels-last data) for this input size.

        The weight goes through ``kernel_from_torch(w, transposed=True)``
        (``transpose_kernel=True``); ``groups`` must be 1.
        """
        kw = self.lax_kwargs(input_spatial, output_size)
        return _transpose_flax_kwargs(self.kernel_size, kw)

    def conv_kwargs(self, input_spatial: Sequence[int], output_size=None) -> dict[str, Any]:
        """Arguments of the one ``lax.conv_general_dilated`` call (``NC...`` / ``OI...``).

        With :meth:`prepare_kernel`'s kernel; ``output_size`` solves for ``output_padding``.
        """
        n = len(self.kernel_size)
        sizes = _ints("input_spatial", input_spatial, n, minimum=0)
        ops = self.output_padding
        if output_size is not None:
            ops = self.output_padding_for(sizes, output_size)
        self._nonempty(sizes, self._rule(sizes, ops))
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
        if tuple(np.shape(weight)[2:]) != self.kernel_size:
            want = f"a weight of spatial shape {self.kernel_size} (the layer's)"
            raise fail("weight", weight, want)
        return _regroup_flip(weight, self.groups)

    def __call__(self, x, weight, bias=None, output_size=None):
        if output_size is not None:  # checked as typed, then a hashable static argument
            self.conv_kwargs(np.shape(x)[2:], output_size)
            output_size = tuple(int(v) for v in output_size)
        return _compiled_call(self, x, weight, bias, output_size)

    def _apply(self, x, weight, bias, output_size):
        x, w = jnp.asarray(x), jnp.asarray(weight)
        layout = (1, 0, range(2, len(self.kernel_size) + 2))
        _operands(x, w, "weight", layout, self.kernel_size, self.groups, transposed=True)
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

    Raises:
      ValueError: naming the argument: ``output_padding`` not smaller than
        ``max(stride, dilation)``; for an input (the call, :meth:`~TorchConvTranspose.output_shape`)
        a padding that empties the output, an ``output_size`` outside PyTorch's range, and
        (the call) a weight that is not the layer's.

    Returns:
      :class:`TorchConvTranspose`; call it with ``output_size=`` to solve for
      ``output_padding`` as ``ConvTranspose.forward(x, output_size)`` does (the spatial
      sizes, or all ``n + 2`` entries as PyTorch also takes them).

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
    ds = _per_dim("dilation", dilation, n)
    g = _int("groups", groups, minimum=1)
    limits = [max(s, d) for s, d in zip(ss, ds, strict=True)]
    ops = _output_padding(output_padding, n, limits, "max(stride, dilation), as PyTorch requires")
    return TorchConvTranspose(ks, ss, ps, ops, ds, g)


def _torch_split(
    i: int, h: int, t: int, k: int, s: int, d: int, output_size: Any
) -> tuple[int, int]:
    """PyTorch's ``(padding, output_padding)`` of one dim giving ``t`` (the smallest padding)."""
    excess = (h - 1) * s + d * (k - 1) + 1 - t  # = 2 p - output_padding
    limit = max(s, d)  # output_padding < max(stride, dilation)
    p = max(0, -(-excess // 2))
    op = 2 * p - excess
    if op >= limit:
        low, high = (h - 1) * s + d * (k - 1) + 1, (h - 1) * s + d * (k - 1) + limit
        reach = f"sizes up to {high}" if excess < 0 else f"sizes <= {low} of its parity"
        raise fail(
            "output_size",
            output_size,
            f"reachable by PyTorch's ConvTranspose in spatial dim {i} (H = {h}, kernel {k}, "
            f"stride {s}, dilation {d}: padding >= 0 and output_padding < {limit} give {reach})",
        )
    return p, op


def torch_transpose_padding_for_output(
    input_size: int | Sequence[int],
    output_size: int | Sequence[int],
    kernel_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    r"""PyTorch's ``padding`` and ``output_padding`` that give ``ConvTranspose{n}d`` a size.

    PyTorch's rule :math:`T = (H - 1) s - 2 p + d (k - 1) + 1 + o` fixes
    :math:`2 p - o = (H - 1) s + d (k - 1) + 1 - T`; the answer is the smallest
    :math:`p \ge 0` with :math:`0 \le o < \max(s, d)`. This is PyTorch's own split of the
    size: its layer returns the full transposed result from entry :math:`p`. The generic
    :func:`~gated_jax.shapes.transpose_padding_for_output` answers with the *gradient's*
    split instead (``lax.conv_transpose`` padding whose window starts at
    :math:`\lfloor (2 p - o) / 2 \rfloor`), which for an odd :math:`2 p - o` is one entry
    before PyTorch's: the same size, shifted by one. For a layer whose ``padding`` is already
    fixed, :meth:`TorchConvTranspose.output_padding_for` gives the ``output_padding`` (as
    PyTorch's ``output_size`` argument does), and :meth:`TorchConvTranspose.padding_for` the
    ``lax.conv_transpose`` padding of PyTorch's split.

    Args:
      input_size: the input's spatial size :math:`H` (an int, or one per spatial dim).
      output_size: the wanted size :math:`T \ge 1` (an int, or one per dim).
      kernel_size, stride, dilation: an int (every dim) or one per dim.

    Returns:
      ``(padding, output_padding)``, one int per spatial dim each, for
      ``torch.nn.ConvTranspose{n}d`` (and :func:`torch_conv_transpose`).

    Raises:
      ValueError: `` `output_size` (=...) must be reachable ...`` where no ``padding >= 0``
        and ``output_padding < max(stride, dilation)`` give it (too large, or of the wrong
        parity at stride and dilation 1).

    Examples:
      >>> torch_transpose_padding_for_output(7, 14, 3, stride=2)  # size 14 from 7
      ((1,), (1,))
      >>> torch_conv_transpose(1, 3, stride=2, padding=1, output_padding=1).padding_for((7,))
      ((1, 2),)
      >>> from gated_jax.shapes import transpose_padding_for_output
      >>> transpose_padding_for_output(7, 14, 3, stride=2)  # the gradient's: one entry earlier
      ((2, 1),)
    """
    ins = _sizes("input_size", input_size, minimum=1)
    n = len(ins)
    outs = _sizes("output_size", output_size, n, minimum=1)
    ks = _per_dim("kernel_size", kernel_size, n)
    ss = _per_dim("stride", stride, n)
    ds = _per_dim("dilation", dilation, n)
    split = [
        _torch_split(i, h, t, k, s, d, output_size)
        for i, (h, t, k, s, d) in enumerate(zip(ins, outs, ks, ss, ds, strict=True))
    ]
    return tuple(p for p, _ in split), tuple(op for _, op in split)
