"""gated_jax: exact, fast and inspectable mechanics of convolutional and recurrent networks.

One concept per module, imports flowing one way (a module imports only from the layers below):

* the library core, pure functions:

  - :mod:`gated_jax.shapes`, a package: convolution shape arithmetic, one module per concept
    (``_config``: the resolved :class:`ConvConfig` and every padding form; ``rules``: the lax
    and Flax output rules; ``explain``: the derivation as text; ``inverse``: the padding for a
    wanted size and the ConvTranspose that undoes a Conv; ``receptive``: receptive fields);
  - :mod:`gated_jax.ports`, a package: PyTorch, Keras and ONNX convolutions as lax calls, one
    module per framework on a shared base (``_base``: the ported-convolution classes and the
    kernel layouts);
  - :mod:`gated_jax.conv` (closed-form convolution derivatives), :mod:`gated_jax.linalg`
    (spectral norms, Jacobian products), :mod:`gated_jax.testing` (reference implementations);
  - :mod:`gated_jax.cell`, a package: the gated recurrence, its BPTT and Jacobians, with the
    sequential primitives the solvers share (``_core``) below the backends (``sequential``,
    ``parallel``) and the diagnostics, and one dispatch on top (``scan``: :func:`gated_scan`);
  - :mod:`gated_jax._validate`: every argument check, with one error format (convolution
    arguments in ``gated_jax.shapes._config``);

* Flax modules: :mod:`gated_jax.nn` (linen) and :mod:`gated_jax.nnx` (NNX), thin front-ends on
  one sequence driver (``gated_jax._rnn_common``);
* :mod:`gated_jax.model_summary`: a model's per-layer shapes, parameters, FLOPs, bytes and
  receptive fields (linen, NNX or a function), a tool over models beside the Flax modules;
* :mod:`gated_jax.experiments` (gradient-flow sweeps and learning experiments) and
  :mod:`gated_jax.diagrams` (the cell drawn unrolled in time);
* the application layer, :mod:`gated_jax.lab`: one module per capability holding its verify
  rows, report section and benchmark;
* :mod:`gated_jax.cli` (the ``gated-jax`` command line).

Every public function of the core is re-exported here.
"""

__version__ = "0.2.0"

# --- re-exports: each block is owned by its module -------------------------------------------

# gated_jax.shapes: convolution shape arithmetic
from gated_jax.shapes import ConvConfig as ConvConfig
from gated_jax.shapes import ConvExplanation as ConvExplanation
from gated_jax.shapes import ConvLayer as ConvLayer
from gated_jax.shapes import ConvTransposeArgs as ConvTransposeArgs
from gated_jax.shapes import ReceptiveField as ReceptiveField
from gated_jax.shapes import conv_output_shape as conv_output_shape
from gated_jax.shapes import conv_output_size as conv_output_size
from gated_jax.shapes import conv_transpose_output_shape as conv_transpose_output_shape
from gated_jax.shapes import explain_conv as explain_conv
from gated_jax.shapes import flax_conv_output_shape as flax_conv_output_shape
from gated_jax.shapes import inverse_conv_transpose as inverse_conv_transpose
from gated_jax.shapes import padding_for_output as padding_for_output
from gated_jax.shapes import padding_pairs as padding_pairs
from gated_jax.shapes import receptive_field as receptive_field
from gated_jax.shapes import receptive_field_of as receptive_field_of
from gated_jax.shapes import transpose_padding_for_output as transpose_padding_for_output

# gated_jax.ports: PyTorch, Keras and ONNX convolutions as lax calls, kernel layouts
from gated_jax.ports import KerasConvTranspose as KerasConvTranspose
from gated_jax.ports import OnnxConvTranspose as OnnxConvTranspose
from gated_jax.ports import PortedConv as PortedConv
from gated_jax.ports import PortedConvTranspose as PortedConvTranspose
from gated_jax.ports import TorchConv as TorchConv
from gated_jax.ports import TorchConvTranspose as TorchConvTranspose
from gated_jax.ports import keras_conv as keras_conv
from gated_jax.ports import keras_conv_transpose as keras_conv_transpose
from gated_jax.ports import kernel_from_keras as kernel_from_keras
from gated_jax.ports import kernel_from_torch as kernel_from_torch
from gated_jax.ports import kernel_to_keras as kernel_to_keras
from gated_jax.ports import kernel_to_torch as kernel_to_torch
from gated_jax.ports import onnx_conv as onnx_conv
from gated_jax.ports import onnx_conv_transpose as onnx_conv_transpose
from gated_jax.ports import torch_conv as torch_conv
from gated_jax.ports import torch_conv_transpose as torch_conv_transpose
from gated_jax.ports import torch_transpose_padding_for_output as torch_transpose_padding_for_output


# gated_jax.conv: closed-form convolution derivatives
from gated_jax.conv import conv1d as conv1d
from gated_jax.conv import conv_general_dilated as conv_general_dilated
from gated_jax.conv import conv_input_grad as conv_input_grad
from gated_jax.conv import conv_input_jacobian as conv_input_jacobian
from gated_jax.conv import conv_weight_grad as conv_weight_grad
from gated_jax.conv import conv_weight_jacobian as conv_weight_jacobian

# gated_jax.cell: the gated recurrence
from gated_jax.cell import DeerInfo as DeerInfo
from gated_jax.cell import GatedParams as GatedParams
from gated_jax.cell import cell_lyapunov_exponent as cell_lyapunov_exponent
from gated_jax.cell import deer_scan as deer_scan
from gated_jax.cell import gated_bptt as gated_bptt
from gated_jax.cell import gated_chunked as gated_chunked
from gated_jax.cell import gated_deer as gated_deer
from gated_jax.cell import gated_scan as gated_scan
from gated_jax.cell import gated_step as gated_step
from gated_jax.cell import gradient_flow as gradient_flow
from gated_jax.cell import init_gated_params as init_gated_params
from gated_jax.cell import jacobian_norm_bound as jacobian_norm_bound
from gated_jax.cell import jacobian_product as jacobian_product
from gated_jax.cell import lyapunov_exponent as lyapunov_exponent
from gated_jax.cell import sequence_parallel_scan as sequence_parallel_scan
from gated_jax.cell import state_jacobians as state_jacobians
from gated_jax.cell import step_jacobian as step_jacobian

# The layers above the core load flax, optax and matplotlib; they are imported on first use
# (PEP 562), so `import gated_jax` and `gated-jax shape` stay light. Each name's module:
_LAZY = {
    # gated_jax.nn / gated_jax.nnx: Flax modules, linen and NNX. Both define GatedCell
    # and GatedRNN, so those are reached through the submodules (gated_jax.nn.GatedRNN, ...).
    "nn": "gated_jax.nn",
    "nnx": "gated_jax.nnx",
    "from_gated_params": "gated_jax.nn",
    "to_gated_params": "gated_jax.nn",
    # gated_jax.experiments: gradient-flow and learning experiments
    "experiments": "gated_jax.experiments",
    "FlowConfig": "gated_jax.experiments",
    "counterexample_check": "gated_jax.experiments",
    "flow_sweep": "gated_jax.experiments",
    "learning_experiment": "gated_jax.experiments",
    "run_flow": "gated_jax.experiments",
    "worst_case_search": "gated_jax.experiments",
    # gated_jax.diagrams: the gated cell drawn unrolled in time
    "draw_unrolled_cell": "gated_jax.diagrams",
    # gated_jax.model_summary: per-layer shapes, parameters, FLOPs and receptive fields of a model
    "LayerRow": "gated_jax.model_summary",
    "ModelSummary": "gated_jax.model_summary",
    "summary": "gated_jax.model_summary",
}


def __getattr__(name: str):
    import importlib

    if name not in _LAZY:
        raise AttributeError(f"module 'gated_jax' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if module.__name__ == f"gated_jax.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [  # noqa: F822 (lazy names resolve through __getattr__)
    "__version__",
    # shapes
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
    # ports
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
    "torch_transpose_padding_for_output",
    # conv
    "conv1d",
    "conv_general_dilated",
    "conv_input_grad",
    "conv_input_jacobian",
    "conv_weight_grad",
    "conv_weight_jacobian",
    # cell
    "DeerInfo",
    "GatedParams",
    "cell_lyapunov_exponent",
    "deer_scan",
    "gated_bptt",
    "gated_chunked",
    "gated_deer",
    "gated_scan",
    "gated_step",
    "gradient_flow",
    "init_gated_params",
    "jacobian_norm_bound",
    "jacobian_product",
    "lyapunov_exponent",
    "sequence_parallel_scan",
    "state_jacobians",
    "step_jacobian",
    *_LAZY,
]
