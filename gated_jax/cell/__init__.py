r"""The gated recurrence: one step, the sequence scan and its closed-form BPTT, Jacobians.

With ``x[t]`` in ``R^n``, ``z[t]`` in ``R^m``, ``W_x, W_c`` in ``R^{m x n}`` and ``W_z`` in
``R^{m x m}``:

.. math::

    c[t] = \sigma(W_c x[t] + W_z z[t-1] + b_c), \qquad
    z[t] = c[t] \odot z[t-1] + (1 - c[t]) \odot (W_x x[t] + b_x),

with one-step Jacobian, for ``u[t] = W_x x[t] + b_x``,

.. math::

    J[t] = \frac{\partial z[t]}{\partial z[t-1]}
         = \operatorname{diag}(c[t])
         + \operatorname{diag}\big((z[t-1] - u[t]) \odot c[t] \odot (1 - c[t])\big) W_z .

``W_z`` may also be structured (:class:`GatedParams`): diagonal, ``w_z`` of shape ``(m,)``
(``W_z z = w_z * z``), or block-diagonal with ``H`` heads, ``(H, h, h)`` with ``H h = m``;
``J[t]`` then has the same structure, and every function here accepts all four forms
(``None``, dense, diagonal, heads). With a structured ``W_z`` ``method="deer"`` is exact Newton
at ``O(T m)`` (diagonal) or ``O(T m h^2)`` (heads) per iteration.

Arrays are batch-first: ``xs`` is ``(..., T, n)`` and states are ``(..., T, m)``; weights act
as ``x @ W.T``. Gradients have the shape of their parameter (``dl/dW_x`` is ``(m, n)``).

Modules, one concept each, each importing only the ones above it:

* :mod:`~gated_jax.cell.params`: :class:`GatedParams`, :func:`init_gated_params`;
* :mod:`~gated_jax.cell.step`: the step equation (the only place it is written), its
  Jacobian and its transpose: :func:`gated_step`, :func:`step_jacobian`;
* ``gated_jax.cell._core``: the sequential primitives every solver shares (validation to flat
  operands, the blocked forward loop, the adjoint recurrence, the weight and input gradients);
* :mod:`~gated_jax.cell.diagnostics`: :func:`state_jacobians`, :func:`jacobian_product`,
  :func:`gradient_flow`, :func:`jacobian_norm_bound`, :func:`lyapunov_exponent`;
* :mod:`~gated_jax.cell.sequential`: the sequential backends (stored states, ``remat``, final
  state) and the closed-form :func:`gated_bptt`;
* :mod:`~gated_jax.cell.parallel`: the recurrence in parallel over time, :func:`affine_scan`,
  :func:`gated_deer` (DEER, quasi-DEER; minGRU in one scan);
* :mod:`~gated_jax.cell.chunked`: :func:`gated_chunked`, the chunked hybrid (sequential
  chunks in parallel, Newton on the chunk starts);
* :mod:`~gated_jax.cell.sharded`: :func:`sequence_parallel_scan`, the time axis sharded over
  the devices of a mesh axis;
* :mod:`~gated_jax.cell.generic`: :func:`deer_scan`, DEER for any step function on pytree
  carries (autodiff Jacobians, implicit-differentiation gradients), and
  :func:`cell_lyapunov_exponent`, its largest Lyapunov exponent from JVPs;
* :mod:`~gated_jax.cell.scan`: :func:`gated_scan`, one dispatch over every backend.

References:
  With ``W_z = 0`` the cell is minGRU: L. Feng, F. Tung, M. O. Ahmed, Y. Bengio,
  H. Hajimirsadeghi, "Were RNNs All We Needed?", 2024.
"""

from gated_jax.cell.chunked import gated_chunked as gated_chunked
from gated_jax.cell.diagnostics import gradient_flow as gradient_flow
from gated_jax.cell.diagnostics import jacobian_norm_bound as jacobian_norm_bound
from gated_jax.cell.diagnostics import jacobian_product as jacobian_product
from gated_jax.cell.diagnostics import lyapunov_exponent as lyapunov_exponent
from gated_jax.cell.diagnostics import state_jacobians as state_jacobians
from gated_jax.cell.generic import cell_lyapunov_exponent as cell_lyapunov_exponent
from gated_jax.cell.generic import deer_scan as deer_scan
from gated_jax.cell.parallel import DeerInfo as DeerInfo
from gated_jax.cell.parallel import DeerNotConverged as DeerNotConverged
from gated_jax.cell.parallel import affine_scan as affine_scan
from gated_jax.cell.parallel import gated_deer as gated_deer
from gated_jax.cell.params import GatedParams as GatedParams
from gated_jax.cell.params import init_gated_params as init_gated_params
from gated_jax.cell.scan import BACKWARDS as BACKWARDS
from gated_jax.cell.scan import METHODS as METHODS
from gated_jax.cell.scan import gated_bptt as gated_bptt
from gated_jax.cell.scan import gated_scan as gated_scan
from gated_jax.cell.scan import resolve_backward as resolve_backward
from gated_jax.cell.scan import resolve_method as resolve_method
from gated_jax.cell.sharded import sequence_parallel_scan as sequence_parallel_scan
from gated_jax.cell.step import gated_step as gated_step
from gated_jax.cell.step import step_jacobian as step_jacobian

__all__ = [
    "BACKWARDS",
    "METHODS",
    "DeerInfo",
    "DeerNotConverged",
    "GatedParams",
    "affine_scan",
    "cell_lyapunov_exponent",
    "deer_scan",
    "gated_deer",
    "gated_bptt",
    "gated_chunked",
    "gated_scan",
    "gated_step",
    "gradient_flow",
    "init_gated_params",
    "jacobian_norm_bound",
    "jacobian_product",
    "lyapunov_exponent",
    "resolve_backward",
    "resolve_method",
    "sequence_parallel_scan",
    "state_jacobians",
    "step_jacobian",
]
