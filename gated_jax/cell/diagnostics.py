r"""Jacobian diagnostics of a trajectory: do the gated cell's gradients vanish or explode?

Along the trajectory ``z[0] = z0``, ``z[t] = zs[..., t-1, :]`` the one-step Jacobians are

.. math::

    J[t] = \frac{\partial z[t]}{\partial z[t-1]}
         = \operatorname{diag}(c[t]) + \operatorname{diag}(s[t]) W_z, \qquad
    s[t] = (z[t-1] - u[t]) \odot c[t] \odot (1 - c[t]),

and the sensitivity of a later state to an earlier one is their product,
``dz[e]/dz[k] = J[e] J[e-1] ... J[k+1]``. Every function here takes ``(params, xs, z0=None)``
with the batch conventions of :func:`gated_jax.cell.gated_scan` and runs the trajectory by the
sequential forward loop (the states ``gated_scan(..., backward="autodiff")`` returns), so the
diagnostics are differentiable in forward and reverse mode. :func:`lyapunov_exponent` condenses
the products into one growth rate per step.

References:
  Y. Bengio, P. Simard, P. Frasconi, "Learning long-term dependencies with gradient descent is
  difficult", IEEE Trans. Neural Networks 5(2), 1994. R. Pascanu, T. Mikolov, Y. Bengio, "On
  the difficulty of training recurrent neural networks", ICML 2013.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gated_jax import linalg
from gated_jax._validate import (
    check_jacobians_fit,
    check_xs,
    check_z0,
    compute_dtype,
    fail,
    integer,
)
from gated_jax.cell import step as _step
from gated_jax.cell._core import trajectory
from gated_jax.cell.params import GatedParams, check_params

__all__ = [
    "gradient_flow",
    "jacobian_norm_bound",
    "jacobian_product",
    "lyapunov_exponent",
    "state_jacobians",
]


def _validated(params, xs, z0, *, jacobian_copies: int = 0):
    """Check and normalise the arguments (``z0`` made explicit, compute dtype)."""
    p, n, m = check_params(params)
    batch, T = check_xs(xs, n)
    if z0 is not None:
        check_z0(z0, batch, m)
    cdt = compute_dtype(*p, xs, z0)
    if jacobian_copies:
        check_jacobians_fit(xs, batch, T, m, cdt, jacobian_copies)
    p = jax.tree.map(lambda a: jnp.asarray(a, cdt), p)
    z0 = jnp.zeros(batch + (m,), cdt) if z0 is None else jnp.asarray(z0, cdt)
    return p, jnp.asarray(xs, cdt), jnp.broadcast_to(z0, batch + (m,))


def _factors(p: GatedParams, xs, z0):
    """``c[t]`` and ``s[t]`` along the trajectory, ``(..., T, m)`` each."""
    zs = trajectory(p, xs, z0)
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
      The products of the BPTT sum (:func:`gated_jax.cell.gated_bptt`): P. J. Werbos,
      "Backpropagation through time: what it does and how to do it", Proc. IEEE 78(10), 1990.
    """
    p, xs, z0 = _validated(params, xs, z0, jacobian_copies=1)
    T = xs.shape[-2]
    start = integer("start", start)
    end = T if end is None else integer("end", end)
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
      Vanishing and exploding gradients: Bengio, Simard, Frasconi, 1994; Pascanu, Mikolov,
      Bengio, ICML 2013 (module docstring).
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
    ``w_z=None`` it is ``max c``, exact. ``||W_z||_2`` is computed from the structure: ``max |w_z|``
    for a diagonal ``w_z`` ``(m,)``, ``max_k ||w_z[k]||_2`` for heads ``(H, h, h)``; for a
    diagonal ``w_z`` the bound is attained when one unit has both the largest ``c`` and ``|s|``.

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
    wz_norm = _step.recurrent_norm(p.w_z.astype(c.dtype))
    return jnp.max(c, axis=-1) + jnp.max(jnp.abs(s), axis=-1) * wz_norm


# --------------------------------------------------------------------------------------------
# the largest Lyapunov exponent


def lyapunov_direction(m: int, dtype):
    """The starting direction of :func:`lyapunov_exponent`: a fixed generic unit vector of
    ``R^m`` (normal draws of a seeded generator, normalised)."""
    v = np.random.default_rng(0).normal(size=m)
    return jnp.asarray(v / np.linalg.norm(v), dtype)


@jax.jit
def _lle_jit(p, xs, z0):
    c, s = _factors(p, xs, z0)  # (..., T, m)
    c, s = jnp.moveaxis(c, -2, 0), jnp.moveaxis(s, -2, 0)
    v0 = jnp.broadcast_to(lyapunov_direction(c.shape[-1], c.dtype), c.shape[1:])

    def step(carry, inp):
        v, total = carry
        ct, st = inp
        w = ct * v
        if p.w_z is not None:
            w = w + st * _step.recurrent_matvec(p.w_z, v)
        norm = jnp.linalg.norm(w, axis=-1)
        return (w / norm[..., None], total + jnp.log(norm)), None

    (_, total), _ = lax.scan(step, (v0, jnp.zeros(c.shape[1:-1], c.dtype)), (c, s))
    return total / c.shape[0]


def lyapunov_exponent(params: GatedParams, xs: jax.Array, z0: jax.Array | None = None) -> jax.Array:
    r"""The largest Lyapunov exponent of the trajectory, per step: ``(...,)``.

    Benettin's method (QR with one column): a unit vector ``v`` is pushed through the
    closed-form Jacobians ``J[t] = diag(c[t]) + diag(s[t]) W_z`` and renormalised every step,

    .. math::

        \lambda = \frac{1}{T} \sum_{t=1}^{T} \log \| J[t] v[t-1] \|, \qquad
        v[t] = \frac{J[t] v[t-1]}{\| J[t] v[t-1] \|},

    which equals ``log ||J[T] ... J[1] v[0]|| / T`` without ever forming the product (no
    overflow), and tends to the growth rate of ``||dz[T]/dz[0]||_2`` for a generic ``v[0]`` (a
    fixed seeded direction here). ``lambda < 0``: perturbations (and gradients) shrink, and
    DEER converges in few iterations; ``lambda > 0``: they grow, and it needs up to ``T``.
    With ``W_z = None``, ``J[t] = diag(c[t])``.

    Args:
      params: :class:`~gated_jax.cell.GatedParams`.
      xs: inputs ``(..., T, n)`` with ``T >= 1``.
      z0: initial state ``(..., m)``; ``None`` means zeros.

    Returns:
      ``(...,)``, the exponent per step (nats).

    Raises:
      ValueError: for bad shapes or ``T = 0``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gated_jax.cell import GatedParams, lyapunov_exponent
      >>> p = GatedParams(jnp.ones((1, 1)), jnp.full((1, 1), 0.5), jnp.full((1, 1), 1.5))
      >>> xs = jnp.array([[3.0], [-3.0]] * 8)  # |J| alternates 1, 2: log(2) / 2 per step
      >>> round(float(lyapunov_exponent(p, xs, jnp.array([-1.0]))), 4)
      0.3466

    References:
      G. Benettin, L. Galgani, A. Giorgilli, J.-M. Strelcyn, "Lyapunov characteristic exponents
      for smooth dynamical systems", Meccanica 15, 1980. X. Gonzalez, L. Kozachkov,
      D. M. Zoltowski, K. L. Clarkson, S. W. Linderman, "Predictability enables parallelization
      of nonlinear state space models", NeurIPS 2025.
    """
    p, xs_v, z0_v = _validated(params, xs, z0)
    if xs_v.shape[-2] == 0:
        raise fail("xs", xs, "of shape (..., T, n) with T >= 1")
    return _lle_jit(p, xs_v, z0_v)
