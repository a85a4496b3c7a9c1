r"""Jacobian diagnostics of a trajectory: can the gated cell's gradients vanish or explode?

Along the trajectory ``z[0] = z0``, ``z[t] = zs[..., t-1, :]`` the one-step Jacobians are

.. math::

    J[t] = \frac{\partial z[t]}{\partial z[t-1]}
         = \operatorname{diag}(c[t]) + \operatorname{diag}(s[t]) W_z, \qquad
    s[t] = (z[t-1] - u[t]) \odot c[t] \odot (1 - c[t]),

and the sensitivity of a later state to an earlier one is their product,
``dz[e]/dz[k] = J[e] J[e-1] ... J[k+1]``. Every function here takes ``(params, xs, z0=None)``
with the batch conventions of :func:`gated_jax.cell.gated_scan` and runs the trajectory with
``backward="autodiff"``, so the diagnostics are differentiable in forward and reverse mode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gated_jax import linalg
from gated_jax._validate import fail
from gated_jax.cell import _checks
from gated_jax.cell import step as _step
from gated_jax.cell.params import GatedParams
from gated_jax.cell.scan import gated_scan

__all__ = ["gradient_flow", "jacobian_norm_bound", "jacobian_product", "state_jacobians"]


def _validated(params, xs, z0, *, jacobian_copies: int = 0):
    """Check and normalise the arguments (``z0`` made explicit, compute dtype)."""
    p, n, m = _checks.check_params(params)
    batch, T = _checks.check_xs(xs, n)
    if z0 is not None:
        _checks.check_z0(z0, batch, m)
    cdt = _checks.compute_dtype(*p, xs, z0)
    if jacobian_copies:
        _checks.check_jacobians_fit(xs, batch, T, m, cdt, jacobian_copies)
    p = jax.tree.map(lambda a: jnp.asarray(a, cdt), p)
    z0 = jnp.zeros(batch + (m,), cdt) if z0 is None else jnp.asarray(z0, cdt)
    return p, jnp.asarray(xs, cdt), jnp.broadcast_to(z0, batch + (m,))


def _factors(p: GatedParams, xs, z0):
    """``c[t]`` and ``s[t]`` along the trajectory, ``(..., T, m)`` each."""
    zs = gated_scan(p, xs, z0, backward="autodiff")
    zprev = jnp.concatenate([z0[..., None, :], zs], axis=-2)[..., :-1, :]
    _, c, _, s = _step.step_with_factors(p, zprev, xs)
    return c, s


@jax.jit
def _state_jacobians_jit(p, xs, z0):
    return _step.jacobian(p.w_z, *_factors(p, xs, z0))


def state_jacobians(params: GatedParams, xs: jax.Array, z0: jax.Array | None = None) -> jax.Array:
    r"""The one-step Jacobians ``J[1..T]`` along a trajectory, shape ``(..., T, m, m)``.

    ``out[..., t-1, :, :] = dz[t]/dz[t-1]`` at the states :func:`~gated_jax.cell.gated_scan`
    visits (module docstring for the formula).

    Args:
      params: :class:`~gated_jax.cell.GatedParams`.
      xs: inputs ``(..., T, n)``.
      z0: initial state ``(..., m)``; ``None`` means zeros.

    Returns:
      ``(..., T, m, m)``.

    Raises:
      ValueError: for bad shapes, or Jacobians too large for memory.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gated_jax.cell import GatedParams, state_jacobians
      >>> p = GatedParams(jnp.ones((1, 1)), jnp.full((1, 1), 0.5), jnp.full((1, 1), 1.5))
      >>> xs = jnp.array([[3.0], [-3.0], [3.0]])
      >>> state_jacobians(p, xs, jnp.array([-1.0]))[:, 0, 0]
      Array([-1.,  2., -1.], dtype=float32)
    """
    return _state_jacobians_jit(*_validated(params, xs, z0, jacobian_copies=1))


def _int_arg(name: str, v) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise fail(name, v, "an int")
    return int(v)


def jacobian_product(
    params: GatedParams,
    xs: jax.Array,
    z0: jax.Array | None = None,
    *,
    start: int = 0,
    end: int | None = None,
) -> jax.Array:
    r"""``dz[end]/dz[start] = J[end] J[end-1] ... J[start+1]``, shape ``(..., m, m)``.

    States are numbered ``z[0] = z0`` and ``z[t] = zs[..., t-1, :]``; ``start == end`` gives
    the identity.

    Args:
      params: :class:`~gated_jax.cell.GatedParams`.
      xs: inputs ``(..., T, n)``.
      z0: initial state ``(..., m)``; ``None`` means zeros.
      start: an int, ``0 <= start <= end``.
      end: an int ``<= T``; ``None`` means ``T``.

    Returns:
      ``(..., m, m)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gated_jax.cell import GatedParams, jacobian_product
      >>> p = GatedParams(jnp.ones((1, 1)), jnp.full((1, 1), 0.5), jnp.full((1, 1), 1.5))
      >>> xs = jnp.array([[3.0], [-3.0], [3.0], [-3.0]])
      >>> jacobian_product(p, xs, jnp.array([-1.0]))  # (-1 * 2)^2
      Array([[4.]], dtype=float32)

    References:
      The product of seed 1.2(c)'s sum.
    """
    p, xs, z0 = _validated(params, xs, z0, jacobian_copies=1)
    T = xs.shape[-2]
    start = _int_arg("start", start)
    end = T if end is None else _int_arg("end", end)
    if not 0 <= end <= T:
        raise fail("end", end, f"in [start, T] = [{start}, {T}]")
    if not 0 <= start <= end:
        raise fail("start", start, f"in [0, end] = [0, {end}]")
    return _product_jit(p, xs, z0, start, end)


def _eye_like(Js):
    m = Js.shape[-1]
    return jnp.broadcast_to(jnp.eye(m, dtype=Js.dtype), Js.shape[:-3] + (m, m))


@jax.jit
def _product_jit(p, xs, z0, start, end):
    Js = _state_jacobians_jit(p, xs, z0)

    def step(P, inp):
        J, t = inp
        # J[t+1] multiplies in when start < t + 1 <= end (dynamic bounds: one compilation)
        return jnp.where((start <= t) & (t < end), J @ P, P), None

    prod, _ = lax.scan(step, _eye_like(Js), (jnp.moveaxis(Js, -3, 0), jnp.arange(Js.shape[-3])))
    return prod


def gradient_flow(params: GatedParams, xs: jax.Array, z0: jax.Array | None = None) -> jax.Array:
    r"""``||dz[T]/dz[k]||_2`` for ``k = 0..T``: shape ``(..., T+1)``; the last entry is 1.

    How strongly the final state responds to each earlier state: the largest factor by which a
    gradient on ``z[T]`` can be scaled on its way back to ``z[k]``,

    .. math::

        g[k] = \sigma_{\max}\big(P[k]\big), \qquad P[T] = I, \quad P[k-1] = P[k] J[k],

    the products by :func:`gated_jax.linalg.reverse_products` (one ``m x m`` matmul per step),
    the norms from singular values.

    Args:
      params: :class:`~gated_jax.cell.GatedParams`.
      xs: inputs ``(..., T, n)``.
      z0: initial state ``(..., m)``; ``None`` means zeros.

    Returns:
      ``(..., T + 1)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gated_jax.cell import GatedParams, gradient_flow
      >>> p = GatedParams(jnp.ones((1, 1)), jnp.full((1, 1), 0.5), jnp.full((1, 1), 1.5))
      >>> xs = jnp.array([[3.0], [-3.0], [3.0], [-3.0]])
      >>> gradient_flow(p, xs, jnp.array([-1.0]))  # grows 2x every two steps
      Array([4., 4., 2., 2., 1.], dtype=float32)

    References:
      Seed 1.2(d) (can the gradients vanish or explode?) is answered by these numbers.
    """
    return _flow_jit(*_validated(params, xs, z0, jacobian_copies=2))


@jax.jit
def _flow_jit(p, xs, z0):
    prods = linalg.reverse_products(_state_jacobians_jit(p, xs, z0))
    return linalg.spectral_norms(prods, norm="svd")


def jacobian_norm_bound(
    params: GatedParams, xs: jax.Array, z0: jax.Array | None = None
) -> jax.Array:
    r"""Per-step upper bound on ``||J[t]||_2``, shape ``(..., T)``.

    By the triangle inequality and submultiplicativity,

    .. math::

        \|J[t]\|_2 \le \|\operatorname{diag}(c[t])\|_2 + \|\operatorname{diag}(s[t])\|_2 \|W_z\|_2
                   = \max_i c_i[t] + \max_i |s_i[t]| \, \|W_z\|_2 ,

    with ``c (1 - c) <= 1/4``. The first term is below 1, so ``||J|| <= 1`` whenever
    ``max|s| ||W_z|| <= 1 - max c``; a large ``||W_z||`` with states far from the candidate
    ``u`` makes it exceed 1, so the bound alone does not rule out exploding gradients. With
    ``w_z=None`` it is ``max c``, exact.

    Args:
      params: :class:`~gated_jax.cell.GatedParams`.
      xs: inputs ``(..., T, n)``.
      z0: initial state ``(..., m)``; ``None`` means zeros.

    Returns:
      ``(..., T)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gated_jax.cell import GatedParams, jacobian_norm_bound
      >>> p = GatedParams(jnp.ones((1, 1)), jnp.full((1, 1), 0.5), jnp.full((1, 1), 1.5))
      >>> jacobian_norm_bound(p, jnp.array([[3.0], [-3.0]]), jnp.array([-1.0]))
      Array([2., 2.], dtype=float32)
    """
    p, xs, z0 = _validated(params, xs, z0)
    return _bound_jit(p, xs, z0)


@jax.jit
def _bound_jit(p, xs, z0):
    c, s = _factors(p, xs, z0)
    if p.w_z is None:
        return jnp.max(c, axis=-1)
    wz_norm = jnp.linalg.matrix_norm(p.w_z.astype(c.dtype), ord=2)
    return jnp.max(c, axis=-1) + jnp.max(jnp.abs(s), axis=-1) * wz_norm
