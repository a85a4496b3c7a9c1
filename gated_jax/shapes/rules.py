r"""The output rules of ``lax.conv_general_dilated``, ``lax.conv_transpose`` and Flax's modules.

Per spatial dim, with :math:`\mathrm{dil}(x, r) = (x - 1) r + 1` (0 for :math:`x = 0`) and
:math:`K_\mathrm{eff} = \mathrm{dil}(K, D)`:

.. math::

    H_\mathrm{out} = \max\Big(0,\ \Big\lfloor
        \frac{\mathrm{dil}(H, L) + lo + hi - K_\mathrm{eff}}{S} \Big\rfloor + 1\Big).

Each function resolves its arguments into a :class:`~gated_jax.shapes.ConvConfig` and reads
the output shape from it.

References:
  Dumoulin and Visin, *A guide to convolution arithmetic for deep learning*, 2016
  (arXiv:1603.07285), Section 2 (this rule with :math:`L = 1`), Section 4 (transposed
  convolutions) and Section 5.1 (dilated convolutions); the JAX shape rule
  ``jax/_src/lax/convolution.py`` (``conv_shape_tuple``, ``_conv_transpose_padding``);
  Flax ``linen/linear.py`` (``Conv``, ``ConvTranspose``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from gated_jax._validate import fail
from gated_jax.shapes._config import (
    _FLAX_MODES,
    _LAX_MODES,
    ConvConfig,
    _dilate,
    _flax_padding,
    _int,
    _ints,
    _is_int,
    _is_seq,
    _mode_pairs,
    _parse_padding,
    _shape,
)

__all__ = [
    "conv_output_shape",
    "conv_output_size",
    "conv_transpose_output_shape",
    "flax_conv_output_shape",
    "padding_pairs",
]


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
      Dumoulin and Visin, *A guide to convolution arithmetic for deep learning*, 2016,
      Section 2 (the size relationships; the first example above is its stride-2 case) and
      Section 5.1 (dilation).
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


class _FlaxInput(NamedTuple):
    """A Flax conv module's input, as the module flattens it (``(B, *spatial, C)``)."""

    shape: tuple[int, ...]  # as given
    kernel_size: tuple[int, ...]
    batch_shape: tuple[int, ...]  # the leading batch dims (flattened into one)
    x_shape: tuple[int, ...]  # (B, *spatial, C)


def _flax_input(module: Any, input_shape: Sequence[int]) -> _FlaxInput:
    """Flax's ``kernel_size`` and the input with its batch dims flattened, validated."""
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
    return _FlaxInput(shape, kernel_size, batch_shape, (math.prod(batch_shape), *shape[nb:]))


def _flax_fill(
    pad: str, inp: _FlaxInput, kd: Sequence[int], strides: Sequence[int]
) -> tuple[int, ...]:
    """Spatial sizes after Flax fills ``'CIRCULAR'``/``'REFLECT'``/``'CAUSAL'`` padding."""
    spatial = list(inp.x_shape[1:-1])
    keff = [_dilate(k, d) for k, d in zip(inp.kernel_size, kd, strict=True)]
    pairs = _mode_pairs("padding", pad, spatial, keff, strides)
    for i, (x, (lo, hi)) in enumerate(zip(spatial, pairs, strict=True)):
        if x == 0 and pad != "CAUSAL" and lo + hi > 0:
            raise fail(
                "padding",
                pad,
                f"used on non-empty spatial dims: it cannot fill dim {i} of size 0 "
                f"(input_shape={inp.shape})",
            )
        spatial[i] = x + lo + hi
    return tuple(spatial)


def _flax_conv_shape(
    module: Any,
    inp: _FlaxInput,
    pad: Any,
    features: int,
    strides: tuple[int, ...],
    kd: tuple[int, ...],
) -> tuple[int, ...]:
    """Output of a Flax ``Conv`` / ``ConvLocal`` on the flattened input."""
    n = len(inp.kernel_size)
    in_features = inp.x_shape[-1]
    idil = _flax_ints("input_dilation", module.input_dilation, n)
    g = _int("feature_group_count", module.feature_group_count, minimum=1)
    if in_features % g:
        raise fail(
            "feature_group_count",
            g,
            f"a divisor of the input features {in_features} (input_shape={inp.shape})",
        )
    spatial = inp.x_shape[1:-1]
    if pad in _FLAX_MODES:
        spatial, pad = _flax_fill(pad, inp, kd, strides), "VALID"
    spec = "".join(chr(ord("a") + i) for i in range(n))
    return ConvConfig.resolve(
        (inp.x_shape[0], *spatial, in_features),
        (*inp.kernel_size, in_features // g, features),
        strides,
        pad,
        lhs_dilation=idil,
        rhs_dilation=kd,
        dimension_numbers=("N" + spec + "C", spec + "IO", "N" + spec + "C"),
        feature_group_count=g,
        names=_FLAX_NAMES,
    ).out_shape


def _flax_circular_fold(
    out: tuple[int, ...], inp: _FlaxInput, features: int, strides: tuple[int, ...]
) -> tuple[int, ...]:
    """``ConvTranspose`` with ``'CIRCULAR'``: the output folded back to ``H S`` per dim."""
    spatial = inp.x_shape[1:-1]
    if inp.x_shape[0] == 0 or features == 0:
        raise fail(
            "padding",
            "CIRCULAR",
            f"used with a non-empty batch and features: Flax folds the output with "
            f"reshape(-1, ...) (input_shape={inp.shape}, features={features})",
        )
    for i, (x, s) in enumerate(zip(spatial, strides, strict=True)):
        if x * s == 0:
            raise fail(
                "padding",
                "CIRCULAR",
                f"used on non-empty spatial dims: it cannot fold onto dim {i} of size "
                f"0 (input_shape={inp.shape}, strides={strides})",
            )
    return (out[0], *(x * s for x, s in zip(spatial, strides, strict=True)), out[-1])


def _flax_transpose_shape(
    module: Any,
    inp: _FlaxInput,
    pad: Any,
    features: int,
    strides: tuple[int, ...],
    kd: tuple[int, ...],
) -> tuple[int, ...]:
    """Output of a Flax ``ConvTranspose`` on the flattened input (``lax.conv_transpose``)."""
    n = len(inp.kernel_size)
    if n > 3:
        raise fail(
            "kernel_size",
            inp.kernel_size,
            "at most 3 spatial dims: lax.conv_transpose (used by Flax's ConvTranspose) "
            "has no default layout beyond 3",
        )
    tk = bool(module.transpose_kernel)
    in_features = inp.x_shape[-1]
    io = (features, in_features) if tk else (in_features, features)
    circular = pad == "CIRCULAR"
    # lax.conv_transpose is given Flax's padding string as written (it tests exact case)
    lax_pad = "VALID" if circular else (module.padding if isinstance(pad, str) else pad)
    out = ConvConfig.resolve_transpose(
        inp.x_shape,
        (*inp.kernel_size, *io),
        strides,
        lax_pad,
        kd,
        transpose_kernel=tk,
        names=_FLAX_NAMES,
    ).out_shape
    return _flax_circular_fold(out, inp, features, strides) if circular else out


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
    inp = _flax_input(module, input_shape)
    n = len(inp.kernel_size)
    strides = _flax_ints("strides", module.strides, n)
    kd = _flax_ints("kernel_dilation", module.kernel_dilation, n)
    features = module.features if family == "linen" else module.out_features
    features = _int("features" if family == "linen" else "out_features", features, minimum=0)
    pad = _flax_padding(module.padding, n, kind)
    in_features = inp.x_shape[-1]
    if family == "nnx" and in_features != module.in_features:
        raise fail(
            "input_shape",
            inp.shape,
            f"a shape with in_features (={module.in_features}) features, the module's, "
            f"not {in_features}",
        )
    shape_of = _flax_conv_shape if kind == "conv" else _flax_transpose_shape
    out = shape_of(module, inp, pad, features, strides, kd)
    return (*inp.batch_shape, *out[1:]) if len(inp.batch_shape) != 1 else out
