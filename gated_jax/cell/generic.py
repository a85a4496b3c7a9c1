r"""DEER for any step function: Newton over time with autodiff Jacobians, implicit gradients.

:func:`deer_scan` solves ``carry[t] = step(carry[t-1], xs[t])`` for every ``t`` at once, with
the conventions of ``jax.lax.scan`` (``xs`` a pytree whose leaves have time on axis 0,
``step(carry, x) -> carry``, the carry any pytree of arrays). The carry is flattened to one
vector ``c`` of ``d`` numbers (``jax.flatten_util.ravel_pytree``) and Newton's method over the
whole sequence linearises every step at the current guess ``c_k``,

.. math::

    c_{k+1}[t] = A_k[t] \, c_{k+1}[t-1] + \big(f(c_k[t-1], x[t]) - A_k[t] \, c_k[t-1]\big),

an affine recurrence solved by one associative scan per iteration
(:func:`gated_jax.cell.affine_scan`). The Jacobians come from JAX's autodiff, not from a
formula:

- ``jacobian="full"`` (DEER): ``A[t] = J[t] = df/dc`` at ``(c_k[t-1], x[t])``, all ``T`` of
  them at once by ``jax.vmap`` over time of ``jax.jacfwd`` (``d`` JVPs per step, ``(T, d, d)``
  memory, matrix products in the scan): Newton's quadratic convergence near the solution.
- ``jacobian="diagonal"`` (quasi-DEER): ``A[t] = diag(J[t])``, the **exact** diagonal,
  computed by ``d`` JVPs with the one-hot basis vectors (column ``i``'s ``i``-th entry; the
  JVPs run through ``lax.map`` in batches of up to 32 so memory stays ``O(32 T d)``, not
  ``O(T d^2)``). Where the cell's Jacobian is elementwise (a diagonal recurrence) this is
  Newton's method itself; otherwise it is a quasi-Newton method that still makes step ``k``
  exact after ``k`` iterations, so it converges in at most ``T``, and in few when the
  off-diagonal coupling is weak (it is not a stochastic estimate). Its cost per iteration is
  ``d`` JVPs like ``"full"``; what it saves is the ``O(T d^2)`` memory and the ``O(T d^3)``
  matrix products of the scan.

Convergence is judged exactly as :func:`gated_jax.cell.gated_deer` judges it: by the per-step
residual of the iterate, ``max_t |c[t] - f(c[t-1], x[t])| <= max(tol, 32 eps) max(1, max|c|)``
(:func:`gated_jax.cell.parallel.residual_bound`), at most ``min(max_iters, T)`` Newton updates,
reported in a :class:`~gated_jax.cell.DeerInfo`.

**Safety.** The Newton loop is the safe driver of :func:`gated_jax.cell.gated_deer`
(:func:`gated_jax.cell._affine.newton_window`): each update covers a window from the first
unverified step (verified steps frozen, the first unverified step taken exactly, so ``T``
updates always converge), wide while Newton converges and short once it stalls, and a Newton
value is kept only where it is finite and within the trust region
``|c_{k+1}[t] - f(c_k[t-1], x[t])| <= TRUST max(1, max |f|)`` around the step's own (Picard)
value, which is taken elsewhere: no iterate overflows (``DeerInfo.peak``), whatever the step.

**Gradients** are those of the sequential recurrence, by implicit differentiation at the
returned trajectory (never through the Newton iterations). With ``g[t]`` the cotangent of
``carry[t]``, the adjoint recurrence

.. math::

    \lambda[t] = g[t] + J[t+1]^\top \lambda[t+1], \qquad \lambda[T-1] = g[T-1],

is solved by one reverse affine scan over the transposed autodiff Jacobians (``"full"``) or by
a sequential reverse loop of VJPs (``"diagonal"``, keeping ``O(T d)`` memory); then one VJP of
the step, ``jax.vmap``-ed over time at ``(c[t-1], x[t])`` and pulled back with ``lambda``, gives
the cotangents of ``xs``, of ``init_carry`` (``J[0]^T lambda[0]``) and of every array ``step``
closes over (hoisted by ``jax.closure_convert``, as ``jax.lax.custom_root`` asks of its
functions), so ``jax.grad`` with respect to parameters captured by ``step`` works.

References:
  Y. H. Lim, Q. Zhu, J. Selfridge, M. F. Kasim, "Parallelizing non-linear sequential models
  over the sequence length" (DEER), ICLR 2024.
  X. Gonzalez, A. Warrington, J. T. H. Smith, S. W. Linderman, "Towards scalable and stable
  parallelization of nonlinear RNNs" (quasi-DEER), NeurIPS 2024.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from gated_jax._validate import boolean, fail, positive_int
from gated_jax.cell._affine import (
    DeerInfo,
    budget,
    check_solver_options,
    default_tol,
    newton_window,
    residual_bound,
    shift,
    solve_reverse_tm,
    windows,
)
from gated_jax.cell.diagnostics import lyapunov_direction

__all__ = ["DIAGONAL_BATCH", "TRUST", "cell_lyapunov_exponent", "deer_scan"]

DIAGONAL_BATCH = 32
"""One-hot JVPs evaluated together when ``jacobian="diagonal"`` computes the exact diagonal."""


class _Options(NamedTuple):
    jacobian: str
    tol: float
    max_iters: int
    fallback: bool
    window: int | None = None


# --------------------------------------------------------------------------------------------
# the flat problem: fn(consts, c (d,), x) -> (d,), all arrays closed over by the user's step
# hoisted into consts (a list), xs a pytree with time on axis 0, carries (T, d)


def _map_f(fn, consts, cprev, xs):
    """``f(c[t-1], x[t])`` for every ``t``: ``(T, d)``."""
    return jax.vmap(lambda c, x: fn(consts, c, x))(cprev, xs)


def _full_jacobians(fn, consts, cprev, xs):
    """``(J, f)``: ``(T, d, d)`` Jacobians ``df/dc`` by ``vmap(jacfwd)`` and ``f`` ``(T, d)``."""

    def one(c, x):
        out = fn(consts, c, x)
        return out, out

    return jax.vmap(jax.jacfwd(one, has_aux=True))(cprev, xs)


def _diagonal_jacobians(fn, consts, cprev, xs):
    """``(diag J, f)``: the exact diagonals ``(T, d)`` by ``d`` one-hot JVPs, and ``f``."""
    d = cprev.shape[-1]
    f_all = _map_f(fn, consts, cprev, xs)
    f_t = lambda c, x: fn(consts, c, x)

    def column(i):
        e = jnp.zeros((d,), cprev.dtype).at[i].set(1)
        tangent = jnp.broadcast_to(e, cprev.shape)
        _, jv = jax.vmap(lambda c, x, v: jax.jvp(lambda cc: f_t(cc, x), (c,), (v,)))(
            cprev, xs, tangent
        )
        return jv[:, i]

    if d <= DIAGONAL_BATCH:  # all at once, no loop to compile
        return jax.vmap(column, out_axes=1)(jnp.arange(d)), f_all
    return lax.map(column, jnp.arange(d), batch_size=DIAGONAL_BATCH).T, f_all


def _linearised(fn, consts, cprev, xs, jacobian: str):
    """``(A, b, f)`` of the Newton step at ``cprev``: ``b = f - A c[t-1]``."""
    if jacobian == "full":
        A, f = _full_jacobians(fn, consts, cprev, xs)
        return A, f - jnp.einsum("tij,tj->ti", A, cprev), f
    A, f = _diagonal_jacobians(fn, consts, cprev, xs)
    return A, f - A * cprev, f


TRUST = 4.0
"""A Newton value is kept where it is finite and within ``TRUST max(1, max |f|)`` of the step's
own value ``f(c_k[t-1], x[t])`` over its window; elsewhere the step's value is taken."""


def _newton(fn, consts, c0, xs, init, opts: _Options):
    """Safe Newton (or quasi-Newton) iterations judged by the per-step residual; ``(cs,
    DeerInfo)``.

    The same driver as :func:`gated_jax.cell.gated_deer`'s
    (:func:`gated_jax.cell._affine.newton_window`): a window past the verified prefix, wide
    while Newton converges and short once it stalls, the first unverified step taken exactly;
    an update is kept only where it is finite and within the trust region :data:`TRUST`, the
    step's own (Picard) value taken elsewhere, so no iterate overflows.
    """
    bound = residual_bound(opts.tol, init.dtype)
    form = "diagonal" if opts.jacobian == "diagonal" else "dense"

    def cut(start, W):
        return jax.tree.map(lambda a: lax.dynamic_slice_in_dim(a, start, W, 0), xs)

    def linearise(start, cprev):
        return _linearised(fn, consts, cprev, cut(start, cprev.shape[0]), opts.jacobian)

    def safeguard(start, new, f):
        radius = TRUST * jnp.maximum(1.0, jnp.max(jnp.abs(f)))
        return jnp.where(jnp.isfinite(new) & (jnp.abs(new - f) <= radius), new, f)

    win = windows(opts.window, init.shape[0])
    return newton_window(linearise, safeguard, c0, init, form, bound, opts.max_iters, win)


def _sequential(fn, consts, c0, xs):
    """The reference: ``lax.scan`` of the step, ``(T, d)``."""
    return lax.scan(lambda c, x: (fn(consts, c, x),) * 2, c0, xs)[1]


def _solve(fn, consts, c0, xs, init, opts: _Options):
    cs, info = _newton(fn, consts, c0, xs, init, opts)
    if opts.fallback:
        cs = lax.cond(info.converged, lambda: cs, lambda: _sequential(fn, consts, c0, xs))
        info = info._replace(sequential=jnp.logical_not(info.converged))
    return cs, info


# --------------------------------------------------------------------------------------------
# implicit differentiation at the fixed point


def _adjoint_full(fn, consts, cs, c0, xs, g):
    """``lambda`` by one reverse affine scan over the transposed autodiff Jacobians."""
    JT = jnp.swapaxes(_full_jacobians(fn, consts, shift(cs, c0)[1:], _tail(xs))[0], -1, -2)
    nxt = jnp.concatenate([JT, jnp.zeros_like(JT[:1])], axis=0)
    return solve_reverse_tm(nxt, g, "dense")


def _adjoint_loop(fn, consts, cs, c0, xs, g):
    """``lambda`` by a sequential reverse loop of VJPs (``O(T d)`` memory)."""
    cprev = shift(cs, c0)

    def back(carry, inp):
        c, x, gt = inp
        lam = gt + carry  # carry = J[t+1]^T lambda[t+1]
        _, vjp = jax.vjp(lambda cc: fn(consts, cc, x), c)
        return vjp(lam)[0], lam

    _, lam = lax.scan(back, jnp.zeros_like(c0), (cprev, xs, g), reverse=True)
    return lam


def _tail(xs):
    return jax.tree.map(lambda a: a[1:], xs)


def _fixed_point_vjp(fn, consts, cs, c0, xs, g, jacobian: str):
    """The cotangents of ``(consts, c0, xs)`` of the sequential recurrence at ``cs``."""
    adjoint = _adjoint_full if jacobian == "full" else _adjoint_loop
    lam = adjoint(fn, consts, cs, c0, xs, g)
    _, vjp = jax.vjp(lambda k, cp, x: _map_f(fn, k, cp, x), consts, shift(cs, c0), xs)
    dconsts, dcprev, dxs = vjp(lam)
    return dconsts, dcprev[0], dxs


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 5))
def _core(fn, consts, c0, xs, init, opts: _Options):
    return _solve(fn, consts, c0, xs, init, opts)


def _core_fwd(fn, consts, c0, xs, init, opts: _Options):
    cs, info = _solve(fn, consts, c0, xs, init, opts)
    return (cs, info), (consts, c0, xs, init, cs)


def _core_bwd(fn, opts: _Options, res, cts):
    consts, c0, xs, init, cs = res
    dconsts, dc0, dxs = _fixed_point_vjp(fn, consts, cs, c0, xs, cts[0], opts.jacobian)
    return dconsts, dc0, dxs, jnp.zeros_like(init)


_core.defvjp(_core_fwd, _core_bwd)


# --------------------------------------------------------------------------------------------
# the public function: pytrees in and out, validation


def _time_length(xs) -> int:
    leaves = jax.tree.leaves(xs)
    if not leaves:
        raise fail("xs", xs, "a pytree with at least one array (time on axis 0)")
    lengths = {int(jnp.shape(a)[0]) if jnp.ndim(a) else -1 for a in leaves}
    if len(lengths) != 1 or -1 in lengths:
        raise fail("xs", xs, "a pytree of arrays sharing their leading (time) axis")
    return lengths.pop()


def _flat_step(step: Callable, unravel: Callable, c_flat, x0):
    """``step`` on flat carries, its closed-over arrays hoisted: ``(fn(consts, c, x), consts)``."""
    out = jax.eval_shape(lambda c, x: step(unravel(c), x), c_flat, x0)
    want = jax.eval_shape(unravel, c_flat)
    shapes = lambda t: (jax.tree.structure(t), [a.shape for a in jax.tree.leaves(t)])
    if shapes(out) != shapes(want):
        raise fail("step", step, f"a function (carry, x) -> carry of the carry's structure {want}")

    def flat(c, x):
        return ravel_pytree(step(unravel(c), x))[0].astype(c_flat.dtype)

    converted, consts = jax.closure_convert(flat, c_flat, x0)
    return (lambda k, c, x: converted(c, x, *k)), list(consts)


def _flat_carry(init_carry) -> tuple[jax.Array, Callable]:
    """``ravel_pytree(init_carry)``: one float vector of ``d >= 1`` numbers and its inverse."""
    try:
        c0, unravel = ravel_pytree(init_carry)
    except (TypeError, ValueError):
        c0 = None
    if c0 is None or not jnp.issubdtype(c0.dtype, jnp.inexact) or c0.size == 0:
        raise fail("init_carry", init_carry, "a pytree of float arrays with at least one number")
    return c0, unravel


def _stacked_guess(init, unravel, c_flat, T: int):
    """``init`` (carries stacked on axis 0, the output's structure) as ``(T, d)``; zeros."""
    if init is None:
        return jnp.zeros((T,) + c_flat.shape, c_flat.dtype)
    want = jax.eval_shape(unravel, c_flat)
    try:
        flat = jax.vmap(lambda c: ravel_pytree(c)[0])(init)
        same = str(jax.tree.structure(init)) == str(jax.tree.structure(want))
        ok = same and flat.shape[0] == T
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise fail("init", init, f"the carries stacked on a leading time axis of {T}")
    return flat.astype(c_flat.dtype)


def deer_scan(
    step: Callable[[Any, Any], Any],
    init_carry: Any,
    xs: Any,
    *,
    jacobian: str = "full",
    tol: float | None = None,
    max_iters: int | None = None,
    init: Any = None,
    fallback: bool = False,
    window: int | None = None,
) -> tuple[Any, DeerInfo]:
    r"""All carries of ``carry[t] = step(carry[t-1], xs[t])`` by Newton's method over time (DEER).

    The generic counterpart of :func:`gated_jax.cell.gated_deer`: any ``step`` on any pytree
    carry, with Jacobians from autodiff (module :mod:`gated_jax.cell.generic`). It returns what
    ``jax.lax.scan(lambda c, x: (step(c, x),) * 2, init_carry, xs)[1]`` returns, computed in
    ``O(log T)`` depth per iteration: Newton iterations of affine scans,

    .. math::

        c_{k+1}[t] = J_k[t] \, c_{k+1}[t-1] + f(c_k[t-1], x[t]) - J_k[t] \, c_k[t-1],

    stopped when the per-step residual
    ``max_t |c[t] - f(c[t-1], x[t])| <= max(tol, 32 eps) max(1, max |c|)``, after at most
    ``min(max_iters, T)`` updates. Gradients (``jax.grad``, ``jax.vjp``, with respect to
    ``init_carry``, ``xs`` and any array ``step`` closes over) are those of the sequential scan,
    by implicit differentiation at the returned trajectory: exact when it converged (reverse
    mode: ``jax.jvp`` / ``jacfwd`` through the solver are not defined, as for any
    ``jax.custom_vjp``).

    Args:
      step: ``step(carry, x) -> carry``, a pure JAX function (``lax.scan``'s body without the
        output); it may close over arrays (parameters), which receive gradients.
      init_carry: the carry before the first step, a pytree of float arrays (flattened to one
        vector of ``d`` numbers in the common dtype).
      xs: the inputs, a pytree whose leaves have time on axis 0 (``T`` steps).
      jacobian: ``"full"`` (DEER: ``(T, d, d)`` autodiff Jacobians) or ``"diagonal"``
        (quasi-DEER: their exact diagonals by ``d`` one-hot JVPs, ``O(T d)`` memory).
      tol: convergence tolerance > 0; ``None``: ``1e-12`` in float64, ``1e-5`` otherwise.
      max_iters: the most Newton updates, an int >= 1; ``None``: 100 (at most ``T`` are run).
      init: the initial guess, carries stacked on a leading time axis (the structure of the
        result); ``None``: zeros.
      fallback: when Newton does not converge, return ``lax.scan``'s trajectory instead
        (``info.sequential`` says so); a strict bool. Under ``jax.vmap`` the choice is per
        example, a ``select``: the sequential scan is then always computed (decide once for
        the batch outside the ``vmap`` instead, as :class:`gated_jax.nn.ParallelRNN` does).
      window: ``None`` (default): the adaptive window of :func:`gated_jax.cell.gated_deer`
        (wide while Newton converges, 8 steps past the verified prefix once it stalls: bounded
        work on expanding cells, but many short updates on cells near ``lambda = 0``); an int
        ``w >= 1``: one fixed window of ``min(w, T)`` steps (``window=T``: every update over the
        whole unverified suffix, plain DEER's depth, with the trust region kept).

    Returns:
      ``(carries, info)``: the carries after each step, ``init_carry``'s structure with a
      leading time axis ``T`` (the last iterate when unconverged, unless ``fallback``: check
      ``info.converged``), and a :class:`~gated_jax.cell.DeerInfo`.

    Raises:
      ValueError: naming the argument, for a bad option, ``xs`` leaves of different lengths,
        a ``step`` whose output is not a carry, or an ``init`` of the wrong shape.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gated_jax import deer_scan
      >>> jax.config.update("jax_enable_x64", True)
      >>> W = 0.5 * jax.random.normal(jax.random.key(0), (3, 3)) / 3
      >>> step = lambda h, x: jnp.tanh(W @ h + x)
      >>> xs = jax.random.normal(jax.random.key(1), (32, 3))
      >>> hs, info = deer_scan(step, jnp.zeros(3), xs)
      >>> ref = jax.lax.scan(lambda h, x: (step(h, x),) * 2, jnp.zeros(3), xs)[1]
      >>> bool(info.converged), bool(jnp.max(jnp.abs(hs - ref)) < 1e-12)
      (True, True)
      >>> jax.config.update("jax_enable_x64", False)

    References:
      Y. H. Lim, Q. Zhu, J. Selfridge, M. F. Kasim, "Parallelizing non-linear sequential
      models over the sequence length" (DEER), ICLR 2024. X. Gonzalez, A. Warrington,
      J. T. H. Smith, S. W. Linderman, "Towards scalable and stable parallelization of
      nonlinear RNNs" (quasi-DEER), NeurIPS 2024.
    """
    jacobian, tol, max_iters = check_solver_options(jacobian, tol, max_iters)
    fallback = boolean("fallback", fallback)
    window = positive_int("window", window, allow_none=True)
    if not callable(step):
        raise fail("step", step, "a function (carry, x) -> carry")
    T = _time_length(xs)
    c0, unravel = _flat_carry(init_carry)
    tol = default_tol(c0.dtype) if tol is None else tol
    max_iters = budget(max_iters, max(T, 1))
    guess = _stacked_guess(init, unravel, c0, T)
    if T == 0:
        res = jnp.full((max_iters + 1,), jnp.nan, c0.dtype)
        info = DeerInfo(jnp.zeros((), jnp.int32), res, jnp.array(True), jnp.array(False))
        return jax.vmap(unravel)(guess), info
    fn, consts = _flat_step(step, unravel, c0, jax.tree.map(lambda a: a[0], xs))
    opts = _Options(jacobian, float(tol), max_iters, fallback, window)
    cs, info = _core(fn, consts, c0, xs, guess, opts)
    return jax.vmap(unravel)(cs), info


# --------------------------------------------------------------------------------------------
# the largest Lyapunov exponent of any step function, from JVPs along its trajectory


def _lle_scan(flat: Callable, c0, v0, xs):
    """``sum_t log ||J[t] v[t-1]||`` along the trajectory from ``c0``; one JVP per step."""

    def body(state, x):
        c, v, total = state
        c_new, w = jax.jvp(lambda cc: flat(cc, x), (c,), (v,))
        norm = jnp.linalg.norm(w)
        v_new = jnp.where(norm > 0, w / jnp.where(norm > 0, norm, 1), v)
        return (c_new, v_new, total + jnp.log(norm)), None

    (_, _, total), _ = lax.scan(body, (c0, v0, jnp.zeros((), c0.dtype)), xs)
    return total


def _start_direction(direction, unravel, c0):
    """The tangent at ``t = 0``, a unit vector of ``R^d``: ``direction`` (the carry's structure)
    flattened and normalised, or the seeded ``lyapunov_direction`` of the closed form."""
    if direction is None:
        return lyapunov_direction(c0.shape[0], c0.dtype)
    want = jax.eval_shape(unravel, c0)
    try:
        v, _ = ravel_pytree(direction)
        same = str(jax.tree.structure(direction)) == str(jax.tree.structure(want))
        ok = same and v.shape == c0.shape
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise fail("direction", direction, f"a pytree of the carry's structure {want}")
    v = v.astype(c0.dtype)
    norm = jnp.linalg.norm(v)
    if not isinstance(norm, jax.core.Tracer) and not float(norm) > 0:
        raise fail("direction", direction, "a nonzero tangent")
    return v / norm


def cell_lyapunov_exponent(
    step: Callable[[Any, Any], Any], init_carry: Any, xs: Any, *, direction: Any = None
) -> jax.Array:
    r"""The largest Lyapunov exponent, per step, of ``carry[t] = step(carry[t-1], xs[t])``.

    The generic counterpart of :func:`gated_jax.cell.lyapunov_exponent`: any step function on
    any pytree carry (a Flax cell, an LSTM's ``(c, h)`` tuple), with the Jacobians never
    formed. Benettin's method with one tangent: the carry is flattened to ``c`` in ``R^d``
    (``ravel_pytree``), a unit tangent ``v`` is pushed along the trajectory by one
    Jacobian-vector product of the step per time step (``jax.jvp``, ``J[t] = df/dc`` at
    ``(c[t-1], x[t])``) and renormalised,

    .. math::

        \lambda = \frac{1}{T} \sum_{t=1}^{T} \log \| J[t] v[t-1] \|_2, \qquad
        v[t] = \frac{J[t] v[t-1]}{\| J[t] v[t-1] \|_2},

    which is ``log ||J[T] ... J[1] v[0]|| / T`` without forming the product (no overflow):
    the growth rate of perturbations of the carry along this trajectory. For a generic
    ``v[0]`` it tends to the largest exponent as ``T`` grows; the default ``v[0]`` is the
    seeded direction :func:`gated_jax.cell.lyapunov_exponent` starts from, so on the gated
    cell the two agree to rounding. For a linear step ``c -> A c + x`` it is
    ``log ||A^T v[0]|| / T``, which tends to ``log`` of ``A``'s spectral radius.
    ``lambda < 0``: the cell forgets (perturbations and gradients shrink) and DEER
    (:func:`deer_scan`, :class:`gated_jax.nn.ParallelRNN`) converges in few iterations;
    ``lambda > 0``: they grow, and Newton needs up to ``T`` iterations. Cost: ``T`` sequential
    JVPs of the step (about twice the forward scan), ``O(d)`` memory.

    Args:
      step: ``step(carry, x) -> carry``, a pure JAX function (as for :func:`deer_scan`);
        for a Flax cell ``lambda c, x: cell.apply(variables, c, x)[0]``.
      init_carry: the carry before the first step, a pytree of float arrays (unbatched: for
        a batch, ``jax.vmap`` this function).
      xs: the inputs, a pytree whose leaves have time on axis 0 (``T >= 1`` steps).
      direction: the tangent at ``t = 0``, a pytree of the carry's structure (normalised
        here); ``None``: a fixed seeded unit vector.

    Returns:
      A scalar, the exponent per step in nats (``-inf`` if the tangent is annihilated).

    Raises:
      ValueError: naming the argument, for ``T = 0``, ``xs`` leaves of different lengths, a
        ``step`` whose output is not a carry, or a ``direction`` of another structure or zero.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gated_jax import cell_lyapunov_exponent
      >>> A = jnp.array([[0.0, -0.8], [0.8, 0.0]])  # a rotation scaled by 0.8: ||A v|| = 0.8
      >>> lam = cell_lyapunov_exponent(lambda h, x: A @ h + x, jnp.zeros(2), jnp.ones((16, 2)))
      >>> bool(jnp.abs(lam - jnp.log(0.8)) < 1e-5)
      True

    References:
      G. Benettin, L. Galgani, A. Giorgilli, J.-M. Strelcyn, "Lyapunov characteristic
      exponents for smooth dynamical systems", Meccanica 15, 1980. X. Gonzalez et al.,
      "Predictability enables parallelization of nonlinear state space models", NeurIPS 2025.
    """
    if not callable(step):
        raise fail("step", step, "a function (carry, x) -> carry")
    T = _time_length(xs)
    if T == 0:
        raise fail("xs", xs, "a pytree of arrays with T >= 1 steps on axis 0")
    c0, unravel = _flat_carry(init_carry)
    x0 = jax.tree.map(lambda a: a[0], xs)
    _flat_step(step, unravel, c0, x0)  # the output is a carry of the input's structure

    def flat(c, x):
        return ravel_pytree(step(unravel(c), x))[0].astype(c0.dtype)

    v0 = _start_direction(direction, unravel, c0)
    return _lle_scan(flat, c0, v0, xs) / T
