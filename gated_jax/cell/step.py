r"""One step of the gated cell: the only place its equations are written.

.. math::

    a = W_c x + b_c, \quad u = W_x x + b_x, \quad
    c = \sigma(a + W_z z_{prev}), \quad
    z = c \odot z_{prev} + (1 - c) \odot u,

and its one-step Jacobian and the transpose of that Jacobian,

.. math::

    J = \frac{\partial z}{\partial z_{prev}} = \operatorname{diag}(c) + \operatorname{diag}(s) W_z,
    \qquad s = (z_{prev} - u) \odot c \odot (1 - c).

The building blocks (:func:`projections`, :func:`update`, :func:`jacobian`,
:func:`transpose_step`) are unvalidated array functions on any leading batch dims; the scan,
the Jacobian diagnostics, the experiments and the diagrams all evaluate the cell through them.
``w_z=None`` (the minGRU cell) drops the recurrent term: ``c = sigma(a)`` and ``J = diag(c)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gated_jax._validate import check_step_operands, compute_dtype, output_dtype
from gated_jax.cell.params import GatedParams, check_params

__all__ = [
    "gated_step",
    "step_jacobian",
    "gate_activation",
    "mix",
    "gate",
    "projections",
    "gate_input",
    "update",
    "jacobian_factor",
    "jacobian_factor_from_states",
    "jacobian",
    "transpose_step",
    "step_with_factors",
]


def _bias(a, b):
    """``a + b`` for a bias ``b`` of shape ``(m,)`` (explicit broadcast: no rank promotion)."""
    return a if b is None else a + jnp.reshape(b, (1,) * (a.ndim - 1) + b.shape)


gate_activation = jax.nn.sigmoid
"""The gate's nonlinearity, ``sigma(t) = 1 / (1 + e^{-t})``."""


def mix(c, z_prev, u):
    """The convex mix ``c z_prev + (1 - c) u``: each unit between ``z_prev`` and ``u``.

    Computed as ``u + c (z_prev - u)``: one multiply fewer per unit in the sequential loop
    (``c = 1`` gives ``z_prev`` to rounding; :func:`update` holds masked steps exactly).
    """
    return u + c * (z_prev - u)


def projections(params: GatedParams, x):
    """The input terms ``(a, u) = (W_c x + b_c, W_x x + b_x)`` for ``x`` of shape ``(..., n)``.

    One einsum each, so the scan can hoist them over all steps at once.
    """
    u = jnp.einsum("...n,mn->...m", x, params.w_x)
    return gate_input(params, x), _bias(u, params.b_x)


def gate_input(params: GatedParams, x):
    """The gate's input term ``a = W_c x + b_c`` alone (a backward pass that recomputes the
    gate from stored states needs no ``u``)."""
    return _bias(jnp.einsum("...n,mn->...m", x, params.w_c), params.b_c)


def gate(w_z, z_prev, a, mask=None, *, transposed: bool = False):
    """``c = sigma(a + W_z z_prev)``; where ``mask`` is False, ``c = 1`` (an identity step).

    A masked step has ``c = 1``, so ``z = z_prev`` and, since ``c (1 - c) = 0`` and
    ``1 - c = 0``, no gradient reaches the weights, ``x`` or the gate.
    ``transposed=True``: ``w_z`` holds ``W_z^T`` (a loop transposes the matrix once, outside
    its body, so that each step's matmul reads it in row-major order).
    """
    if w_z is None:
        pre = a
    elif transposed:
        pre = a + jnp.einsum("...k,km->...m", z_prev, w_z)
    else:
        pre = a + jnp.einsum("...k,mk->...m", z_prev, w_z)
    c = gate_activation(pre)
    return c if mask is None else jnp.where(mask[..., None], c, jnp.ones_like(c))


def update(w_z, z_prev, a, u, mask=None, *, transposed: bool = False):
    """One step from its input terms: returns ``(z, c)``; where ``mask`` is False, ``z`` is
    ``z_prev`` exactly and ``c = 1`` (``transposed``: as for :func:`gate`)."""
    c = gate(w_z, z_prev, a, mask, transposed=transposed)
    z = mix(c, z_prev, u)
    return (z if mask is None else jnp.where(mask[..., None], z, z_prev)), c


def jacobian_factor(z_prev, u, c):
    """``s = (z_prev - u) c (1 - c)``, so that ``J = diag(c) + diag(s) W_z``."""
    return (z_prev - u) * (c * (1 - c))


def jacobian_factor_from_states(z_prev, z, c):
    """The same ``s`` from the states on both sides of the step: ``s = c (z_prev - z)``.

    Since ``z_prev - z = (1 - c)(z_prev - u)``, this equals :func:`jacobian_factor` without
    ``u``: a backward pass that has the states and the gate needs neither ``u`` nor ``s``.
    A masked step (``c = 1``, ``z = z_prev``) gives ``s = 0`` exactly.
    """
    return c * (z_prev - z)


def jacobian(w_z, c, s):
    """``J = diag(c) + diag(s) W_z`` as dense ``(..., m, m)`` matrices (``diag(c)`` without
    ``W_z``)."""
    m = c.shape[-1]
    lead = (1,) * (c.ndim - 1)
    J = c[..., :, None] * jnp.eye(m, dtype=c.dtype).reshape(lead + (m, m))
    return J if w_z is None else J + s[..., :, None] * w_z.reshape(lead + (m, m))


def transpose_step(w_z, c, s, delta):
    """The step's reverse-mode map: ``(J^T delta, pbar, ubar)``.

    ``J^T delta = c delta + W_z^T (s delta)``; ``pbar = s delta`` is the gradient at the gate
    pre-activation and ``ubar = (1 - c) delta`` the gradient at the candidate ``u``.
    """
    pbar = s * delta
    r = c * delta
    if w_z is not None:
        r = r + jnp.einsum("...m,mk->...k", pbar, w_z)
    return r, pbar, (1 - c) * delta


def step_with_factors(params: GatedParams, z_prev, x):
    """One step and its Jacobian factors, unvalidated: ``(z, c, u, s)``."""
    a, u = projections(params, x)
    z, c = update(params.w_z, z_prev, a, u)
    return z, c, u, jacobian_factor(z_prev, u, c)


def _promote(p: GatedParams, z_prev, x):
    dt = compute_dtype(*p, z_prev, x)
    out = output_dtype(*p, z_prev, x)
    cast = lambda a: None if a is None else jnp.asarray(a, dt)
    params: GatedParams = jax.tree.map(cast, p)
    return params, cast(z_prev), cast(x), out


def _validated_step(params, z_prev, x_t) -> tuple[GatedParams, tuple[int, ...]]:
    p, n, m = check_params(params)
    return p, check_step_operands(z_prev, x_t, n, m)


# The public one-step functions validate in Python, then run as ONE compiled program (one
# dispatch per call, one compilation per shape) instead of op by op.
@jax.jit(static_argnums=(3, 4))
def _step_jit(p: GatedParams, z_prev, x_t, batch: tuple[int, ...], want_jacobian: bool):
    m, n = p.w_x.shape
    z_prev = jnp.broadcast_to(z_prev, batch + (m,))
    x_t = jnp.broadcast_to(x_t, batch + (n,))
    p, z_prev, x_t, out = _promote(p, z_prev, x_t)
    z, c, _, s = step_with_factors(p, z_prev, x_t)
    return (jacobian(p.w_z, c, s) if want_jacobian else z).astype(out)


def gated_step(params: GatedParams, z_prev: jax.Array, x_t: jax.Array) -> jax.Array:
    r"""One step of the cell.

    .. math::

        c = \sigma(W_c x_t + W_z z_{prev} + b_c), \qquad
        z_t = c \odot z_{prev} + (1 - c) \odot (W_x x_t + b_x).

    Args:
      params: :class:`GatedParams` (``w_z=None``: the gate sees the input only).
      z_prev: the state before the step, ``(..., m)``.
      x_t: the input, ``(..., n)``; its batch dims broadcast with ``z_prev``'s.

    Returns:
      ``z_t`` of the broadcast batch shape ``(..., m)`` in the promoted floating dtype
      (half-precision operands are computed in float32 and cast back).

    Raises:
      ValueError: naming the argument, for wrong shapes or mismatched params.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gated_jax.cell import GatedParams, gated_step
      >>> p = GatedParams(jnp.ones((2, 1)), jnp.zeros((2, 1)), jnp.zeros((2, 2)))
      >>> gated_step(p, jnp.array([1.0, -1.0]), jnp.array([3.0]))  # c = 1/2
      Array([2., 1.], dtype=float32)

    References:
      With ``w_z=None`` this is the minGRU step: L. Feng, F. Tung, M. O. Ahmed, Y. Bengio,
      H. Hajimirsadeghi, "Were RNNs All We Needed?", 2024.
    """
    p, batch = _validated_step(params, z_prev, x_t)
    return _step_jit(p, z_prev, x_t, batch, False)


def step_jacobian(params: GatedParams, z_prev: jax.Array, x_t: jax.Array) -> jax.Array:
    r"""The one-step Jacobian ``dz_t / dz_prev``, ``(..., m, m)``.

    .. math::

        J = \operatorname{diag}(c) + \operatorname{diag}\big((z_{prev} - u) \odot c \odot
        (1 - c)\big) W_z, \qquad u = W_x x_t + b_x.

    Row ``i`` is ``dz_t[i] / dz_prev``: ``z_t[i]`` depends on ``z_prev[i]`` directly through
    ``c[i] z_prev[i]`` and on every ``z_prev[j]`` through the gate,
    ``dc[i]/dz_prev[j] = c[i] (1 - c[i]) W_z[i, j]``, times ``dz_t[i]/dc[i] = z_prev[i] - u[i]``.
    With ``w_z=None``, ``J = diag(c)``.

    Args:
      params: :class:`GatedParams`.
      z_prev: ``(..., m)``.
      x_t: ``(..., n)``, batch dims broadcasting with ``z_prev``'s.

    Returns:
      ``(..., m, m)`` in the promoted floating dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gated_jax.cell import GatedParams, step_jacobian
      >>> one = lambda v: jnp.full((1, 1), v)
      >>> p = GatedParams(one(1.0), one(0.5), one(1.5))  # the exploding counterexample
      >>> step_jacobian(p, jnp.array([-1.0]), jnp.array([3.0]))
      Array([[-1.]], dtype=float32)
    """
    p, batch = _validated_step(params, z_prev, x_t)
    return _step_jit(p, z_prev, x_t, batch, True)
