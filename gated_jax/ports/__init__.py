r"""PyTorch, Keras and ONNX convolutions as lax calls, and kernel layouts between the frameworks.

Every port resolves the framework's arguments once (the padding forms are parsed in
``gated_jax.shapes._config``, with every other padding form) and computes with **one**
``lax.conv_general_dilated`` call; ``lax_kwargs()`` / ``flax_kwargs()`` give the same call
as ``lax`` / Flax arguments. One module per framework: :mod:`gated_jax.ports.torch`,
:mod:`gated_jax.ports.keras`, :mod:`gated_jax.ports.onnx`; the ported-conv base classes, the
kernel layouts and the one compiled call are in ``gated_jax.ports._base``.

A transposed convolution is, in every framework here, the input gradient of a forward
convolution: the input dilated by the stride, padded, and convolved at stride 1 with the
flipped kernel; each framework returns a window of that full result (see
:class:`PortedConvTranspose`).

References:
  the PyTorch documentation of ``torch.nn.Conv2d`` / ``ConvTranspose2d``; Keras
  ``conv_utils.conv_output_length`` / ``deconv_output_length`` and the Keras 3 JAX backend;
  the ONNX operator specification of ``Conv`` and ``ConvTranspose`` (opset 11+); Dumoulin and
  Visin, *A guide to convolution arithmetic for deep learning*, 2016 (arXiv:1603.07285).
"""

from __future__ import annotations

from gated_jax.ports._base import (
    PortedConv,
    PortedConvTranspose,
    kernel_from_keras,
    kernel_from_torch,
    kernel_to_keras,
    kernel_to_torch,
)
from gated_jax.ports.keras import KerasConvTranspose, keras_conv, keras_conv_transpose
from gated_jax.ports.onnx import OnnxConvTranspose, onnx_conv, onnx_conv_transpose
from gated_jax.ports.torch import TorchConv, TorchConvTranspose, torch_conv, torch_conv_transpose

__all__ = [
    "KerasConvTranspose",
    "OnnxConvTranspose",
    "PortedConv",
    "PortedConvTranspose",
    "TorchConv",
    "TorchConvTranspose",
    "keras_conv",
    "keras_conv_transpose",
    "kernel_from_keras",
    "kernel_from_torch",
    "kernel_to_keras",
    "kernel_to_torch",
    "onnx_conv",
    "onnx_conv_transpose",
    "torch_conv",
    "torch_conv_transpose",
]
