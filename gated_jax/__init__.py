"""gated_jax: exact, fast and inspectable mechanics of convolutional and recurrent networks.

Layers, imports flowing one way:

* pure core: :mod:`gated_jax.shapes` (convolution shape arithmetic),
  :mod:`gated_jax.conv` (closed-form convolution derivatives),
  :mod:`gated_jax.cell` (the gated recurrence, its BPTT and Jacobians);
* Flax modules: :mod:`gated_jax.nn` (linen), :mod:`gated_jax.nnx` (NNX);
* :mod:`gated_jax.experiments` (gradient-flow sweeps and learning experiments);
* :mod:`gated_jax.verification`, :mod:`gated_jax.bench`, :mod:`gated_jax.report`,
  :mod:`gated_jax.cli` (the ``gated-jax`` command line).

Every public function of the core is re-exported here.
"""

__version__ = "0.1.0"

# --- re-exports: each block is owned by its module -------------------------------------------

# gated_jax.shapes: convolution shape arithmetic
from gated_jax.shapes import ConvExplanation as ConvExplanation
from gated_jax.shapes import ConvLayer as ConvLayer
from gated_jax.shapes import ReceptiveField as ReceptiveField
from gated_jax.shapes import conv_output_shape as conv_output_shape
from gated_jax.shapes import conv_output_size as conv_output_size
from gated_jax.shapes import conv_transpose_output_shape as conv_transpose_output_shape
from gated_jax.shapes import explain_conv as explain_conv
from gated_jax.shapes import flax_conv_output_shape as flax_conv_output_shape
from gated_jax.shapes import padding_pairs as padding_pairs
from gated_jax.shapes import receptive_field as receptive_field

# gated_jax.conv: closed-form convolution derivatives (issue 3)
from gated_jax.conv import conv1d as conv1d
from gated_jax.conv import conv_general_dilated as conv_general_dilated
from gated_jax.conv import conv_input_grad as conv_input_grad
from gated_jax.conv import conv_input_jacobian as conv_input_jacobian
from gated_jax.conv import conv_weight_grad as conv_weight_grad
from gated_jax.conv import conv_weight_jacobian as conv_weight_jacobian
