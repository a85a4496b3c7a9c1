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
