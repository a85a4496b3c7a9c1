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

**Structured recurrent gates.** ``W_z`` is ``None``, dense ``(m, m)``, diagonal ``(m,)``
(``W_z z = w_z * z``: each unit gates on its own past) or block-diagonal ``(H, h, h)`` with
``H h = m`` heads (``(W_z z)[k h:(k+1) h] = w_z[k] @ z[k h:(k+1) h]``). Its structure is read
from its rank (:func:`recurrent_kind`) and every operation on it is written here once:
:func:`recurrent_matvec` (``W_z z``), :func:`recurrent_rmatvec` (``W_z^T v``),
:func:`recurrent_grad` (``sum pbar zprev^T`` in ``w_z``'s shape), :func:`recurrent_dense`,
:func:`recurrent_norm`, :func:`recurrent_diagonal`, and the step Jacobian in the same structure,
:func:`jacobian_blocks` (``c + s w_z`` for diagonal ``W_z``, ``diag(c_k) + diag(s_k) w_z[k]``
per head): the dense Jacobian (:func:`jacobian`) is built from it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gated_jax._validate import check_step_operands, compute_dtype, output_dtype
from gated_jax.cell.params import GatedParams, check_params

__all__ = [
    "RECURRENT_KINDS",
    "recurrent_kind",
    "recurrent_matvec",
    "recurrent_rmatvec",
    "recurrent_grad",
    "recurrent_dense",
    "recurrent_norm",
    "recurrent_diagonal",
    "loop_weights",
    "jacobian_blocks",
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


# --------------------------------------------------------------------------------------------
# the recurrent weights' structure: every operation on W_z, written once

RECURRENT_KINDS = ("dense", "diagonal", "heads")
"""The structures of a non-``None`` ``W_z``: ``(m, m)``, ``(m,)``, ``(H, h, h)``."""


def recurrent_kind(w_z) -> str | None:
    """``None`` (minGRU), ``"dense"`` ``(m, m)``, ``"diagonal"`` ``(m,)`` or ``"heads"``
    ``(H, h, h)``: read from the rank (static, so it works on tracers)."""
    if w_z is None:
        return None
    return {2: "dense", 1: "diagonal", 3: "heads"}[jnp.ndim(w_z)]


def _heads(v, w_z):
    """``(..., m)`` -> ``(..., H, h)`` for ``w_z`` of shape ``(H, h, h)``."""
    return jnp.reshape(v, v.shape[:-1] + w_z.shape[:2])


def _merge(v):
    """``(..., H, h)`` -> ``(..., H h)``."""
    return jnp.reshape(v, v.shape[:-2] + (v.shape[-2] * v.shape[-1],))


def _lead(w, ndim: int):
    """``w`` with leading unit dims up to rank ``ndim`` (explicit broadcast: no rank promotion)."""
    return jnp.reshape(w, (1,) * (ndim - w.ndim) + w.shape)


def recurrent_matvec(w_z, z, *, transposed: bool = False):
    """``W_z z`` for ``z`` of shape ``(..., m)`` in ``w_z``'s structure (``transposed``: ``w_z``
    holds :func:`loop_weights`' form, the matrix (or each head) transposed once outside a loop)."""
    kind = recurrent_kind(w_z)
    if kind == "diagonal":
        return _lead(w_z, z.ndim) * z
    if kind == "heads":
        spec = "...gk,gkm->...gm" if transposed else "...gk,gmk->...gm"
        return _merge(jnp.einsum(spec, _heads(z, w_z), w_z))
    return jnp.einsum("...k,km->...m" if transposed else "...k,mk->...m", z, w_z)


def recurrent_rmatvec(w_z, v):
    """``W_z^T v`` for ``v`` of shape ``(..., m)``: the transpose of :func:`recurrent_matvec`."""
    kind = recurrent_kind(w_z)
    if kind == "diagonal":
        return _lead(w_z, v.ndim) * v
    if kind == "heads":
        return _merge(jnp.einsum("...gm,gmk->...gk", _heads(v, w_z), w_z))
    return jnp.einsum("...m,mk->...k", v, w_z)


def loop_weights(w_z):
    """The form of ``w_z`` a sequential loop reads with ``transposed=True``: ``W_z^T`` (dense),
    each head transposed (heads), ``w_z`` itself (diagonal, ``None``)."""
    kind = recurrent_kind(w_z)
    if kind == "dense":
        return w_z.T
    return jnp.swapaxes(w_z, -1, -2) if kind == "heads" else w_z


def recurrent_grad(w_z, pbar, zprev):
    """``dl/dW_z = sum pbar zprev^T`` over every leading dim, in ``w_z``'s structure: the full
    outer-product sum ``(m, m)`` as one 2-D matmul (dense), its diagonal ``sum pbar * zprev``
    (diagonal), its diagonal blocks ``(H, h, h)`` (heads)."""
    kind = recurrent_kind(w_z)
    if kind == "diagonal":
        return jnp.sum(jnp.reshape(pbar * zprev, (-1, pbar.shape[-1])), axis=0)
    if kind == "heads":
        H, h = w_z.shape[:2]
        return jnp.einsum("rgm,rgk->gmk", pbar.reshape(-1, H, h), zprev.reshape(-1, H, h))
    return jnp.reshape(pbar, (-1, pbar.shape[-1])).T @ jnp.reshape(zprev, (-1, zprev.shape[-1]))


def recurrent_dense(w_z):
    """``W_z`` as its dense ``(m, m)`` matrix (``None`` stays ``None``)."""
    kind = recurrent_kind(w_z)
    if kind == "diagonal":
        return jnp.diag(w_z)
    if kind == "heads":
        H, h = w_z.shape[:2]
        eye = jnp.eye(H, dtype=w_z.dtype)
        return jnp.reshape(jnp.einsum("gk,gij->gikj", eye, w_z), (H * h, H * h))
    return w_z


def recurrent_norm(w_z):
    """``||W_z||_2`` from the structure: ``max |w_z|`` (diagonal), ``max_k ||w_z[k]||_2``
    (heads), the spectral norm (dense)."""
    kind = recurrent_kind(w_z)
    if kind == "diagonal":
        return jnp.max(jnp.abs(w_z))
    if kind == "heads":
        return jnp.max(jnp.linalg.matrix_norm(w_z, ord=2))
    return jnp.linalg.matrix_norm(w_z, ord=2)


def recurrent_diagonal(w_z):
    """The diagonal of ``W_z``, ``(m,)``."""
    kind = recurrent_kind(w_z)
    if kind == "diagonal":
        return w_z
    return jnp.reshape(jnp.diagonal(w_z, axis1=-2, axis2=-1), (-1,))


def jacobian_blocks(w_z, c, s):
    """``J = diag(c) + diag(s) W_z`` in ``w_z``'s structure: ``c`` (``None``), ``c + s w_z``
    ``(..., m)`` (diagonal: ``J`` is exactly diagonal), ``diag(c_k) + diag(s_k) w_z[k]``
    ``(..., H, h, h)`` (heads), or the dense ``(..., m, m)``."""
    kind = recurrent_kind(w_z)
    if kind is None:
        return c
    if kind == "diagonal":
        return c + s * _lead(w_z, s.ndim)
    if kind == "heads":
        c, s = _heads(c, w_z), _heads(s, w_z)
    eye = jnp.eye(c.shape[-1], dtype=c.dtype)
    return c[..., :, None] * _lead(eye, c.ndim + 1) + s[..., :, None] * _lead(w_z, c.ndim + 1)


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
    ``transposed=True``: ``w_z`` holds :func:`loop_weights` (a loop transposes the matrix once,
    outside its body, so that each step's matmul reads it in row-major order).
    """
    pre = a if w_z is None else a + recurrent_matvec(w_z, z_prev, transposed=transposed)
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
    """``J = diag(c) + diag(s) W_z`` as dense ``(..., m, m)`` matrices, built from
    :func:`jacobian_blocks` (``diag(c)`` without ``W_z``)."""
    J = jacobian_blocks(w_z, c, s)
    kind = recurrent_kind(w_z)
    if kind == "dense":
        return J
    m = c.shape[-1]
    eye = jnp.eye(m, dtype=c.dtype)
    if kind != "heads":  # diagonal J
        return J[..., :, None] * _lead(eye, J.ndim + 1)
    H = J.shape[-3]
    blocks = jnp.einsum("...gij,gk->...gikj", J, jnp.eye(H, dtype=J.dtype))
    return jnp.reshape(blocks, blocks.shape[:-4] + (m, m))


def transpose_step(w_z, c, s, delta):
    """The step's reverse-mode map: ``(J^T delta, pbar, ubar)``.

    ``J^T delta = c delta + W_z^T (s delta)``; ``pbar = s delta`` is the gradient at the gate
    pre-activation and ``ubar = (1 - c) delta`` the gradient at the candidate ``u``.
    """
    pbar = s * delta
    r = c * delta
    if w_z is not None:
        r = r + recurrent_rmatvec(w_z, pbar)
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
      params: :class:`GatedParams` (``w_z=None``: the gate sees the input only; ``w_z`` of
        shape ``(m,)`` or ``(H, h, h)``: a diagonal or per-head recurrent gate).
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
    With ``w_z=None``, ``J = diag(c)``; with a diagonal ``w_z`` ``(m,)`` it is the diagonal
    ``diag(c + s w_z)``, with heads ``(H, h, h)`` block-diagonal (``diag(c_k) + diag(s_k)
    w_z[k]`` on head ``k``'s block), returned as the dense matrix.

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
