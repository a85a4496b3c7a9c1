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
  fields of convolutional neural networks*, Distill 2019.

The package, one concept per module: ``gated_jax.shapes._config`` (:class:`ConvConfig`,
the argument validators and every padding form), :mod:`gated_jax.shapes.rules` (the lax and
Flax output rules), :mod:`gated_jax.shapes.explain` (the derivation as text),
:mod:`gated_jax.shapes.inverse` (the padding for a wanted size, the ConvTranspose of a Conv)
and :mod:`gated_jax.shapes.receptive` (receptive fields). The framework ports (PyTorch,
Keras, ONNX) are :mod:`gated_jax.ports`.
"""

from __future__ import annotations

import importlib
from typing import Any

from gated_jax.shapes._config import ConvConfig
from gated_jax.shapes.explain import ConvExplanation, explain_conv
from gated_jax.shapes.inverse import (
    ConvTransposeArgs,
    inverse_conv_transpose,
    padding_for_output,
    transpose_padding_for_output,
)
from gated_jax.shapes.receptive import (
    ConvLayer,
    ReceptiveField,
    receptive_field,
    receptive_field_of,
)
from gated_jax.shapes.rules import (
    conv_output_shape,
    conv_output_size,
    conv_transpose_output_shape,
    flax_conv_output_shape,
    padding_pairs,
)

__all__ = [
    "ConvConfig",
    "ConvExplanation",
    "ConvLayer",
    "ConvTransposeArgs",
    "ReceptiveField",
    "conv_output_shape",
    "conv_output_size",
    "conv_transpose_output_shape",
    "explain_conv",
    "flax_conv_output_shape",
    "inverse_conv_transpose",
    "padding_for_output",
    "padding_pairs",
    "receptive_field",
    "receptive_field_of",
    "transpose_padding_for_output",
]

# The PyTorch ports moved to gated_jax.ports (their documented home); their old paths
# gated_jax.shapes.torch_conv, ... still resolve, on first use (PEP 562), with no import cycle.
_MOVED = {"TorchConv", "TorchConvTranspose", "torch_conv", "torch_conv_transpose"}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module 'gated_jax.shapes' has no attribute {name!r}")
    return getattr(importlib.import_module("gated_jax.ports.torch"), name)
