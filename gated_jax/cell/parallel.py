r"""The gated recurrence in parallel over time: affine scans, minGRU in one scan, DEER, quasi-DEER.

**Affine scans.** A linear recurrence ``z[t] = A[t] z[t-1] + b[t]`` is the composition of the
affine maps ``e[t] = (A[t], b[t])``, and composition is associative,

.. math::

    (A_2, b_2) \circ (A_1, b_1) = (A_2 A_1, \; A_2 b_1 + b_2),

so all ``T`` states are prefix compositions, computed by ``lax.associative_scan`` in
``ceil(log2 T)`` levels (depth) and ``O(T)`` compositions (work). :func:`affine_scan` solves it
for diagonal ``A`` (``(..., T, m)``, elementwise products) and for full ``A``
(``(..., T, m, m)``, matrix products).

**minGRU is one scan.** With ``W_z = None`` the gate ``c[t] = sigma(W_c x[t] + b_c)`` does not
depend on the state, so ``z[t] = c[t] z[t-1] + (1 - c[t]) u[t]`` is affine with
``A[t] = diag(c[t])``, ``b[t] = (1 - c[t]) u[t]``: one diagonal affine scan, exact.

**DEER and quasi-DEER.** With ``W_z`` the step ``z[t] = f(z[t-1], x[t])`` is nonlinear. Newton's
method over the whole sequence linearises every step at the current guess ``z_k``,

.. math::

    z_{k+1}[t] = J_k[t] \, z_{k+1}[t-1] + \big(f(z_k[t-1], x[t]) - J_k[t] \, z_k[t-1]\big),

an affine recurrence solved by one affine scan per iteration. ``jacobian="full"`` (DEER) uses
the closed-form ``J[t] = diag(c) + diag(s) W_z``, ``s = (z[t-1] - u[t]) c (1 - c)``: quadratic
convergence near the solution, ``O(T m^3)`` work and ``O(T m^2)`` memory per iteration.
``jacobian="diagonal"`` (quasi-DEER) keeps its diagonal ``c + s \odot diag(W_z)``: ``O(T m)``
per iteration, more iterations. With any approximate Jacobian iteration ``k`` reproduces the
first ``k`` steps exactly (step ``t`` only needs step ``t-1`` exact), so both are exact after at
most ``T`` iterations in exact arithmetic; the number they need in practice is governed by the
largest Lyapunov exponent of the trajectory (:func:`gated_jax.cell.lyapunov_exponent`): small
when it is negative (gradients vanish), up to ``T`` when it is positive (gradients explode).

**Exact Newton on structured cells.** ``J = diag(c) + diag(s) W_z`` has ``W_z``'s structure.
With a diagonal ``w_z`` ``(m,)`` it is exactly diagonal, ``J = diag(c + s w_z)``: DEER then runs
the diagonal affine scan, ``O(T m)`` per iteration, and keeps Newton's quadratic convergence
(quasi-DEER's diagonal IS the exact Jacobian; both options give the same program). With heads
``(H, h, h)`` it is block-diagonal, ``J_k = diag(c_k) + diag(s_k) w_z[k]``: the affine scan
composes ``(T, B, H, h, h)`` blocks, ``O(T m h^2)`` work and ``O(T m h)`` memory per iteration
instead of ``O(T m^3)`` and ``O(T m^2)``. The implicit-differentiation backward pass uses the
same structure for ``J^T``.

The backends of :func:`~gated_jax.cell.gated_scan` here are :func:`mingru_scan`,
:func:`deer` and :func:`quasi_deer`, each ``backend(ops, opts)`` like the sequential ones.

**Gradients** are exact for the sequential recurrence, by implicit differentiation at the fixed
point (never through the Newton iterations): the converged trajectory ``z*`` solves
``z[t] = f(z[t-1], x[t])``, so its cotangent is the closed-form BPTT adjoint
``delta[t] = g[t] + J[t+1]^T delta[t+1]`` at ``z*``: a linear recurrence in reverse time, solved
by one reverse affine scan over ``J^T`` in its structure (full DEER; for ``W_z = None`` and a
diagonal ``w_z``, with either option, a diagonal scan), or by the sequential closed-form
adjoint loop (quasi-DEER on dense or head cells, to keep its ``O(T m)`` memory), then every
weight gradient as one large matmul over all ``T B`` steps.

References:
  E. Blelloch, "Prefix sums and their applications", 1990.
  L. Feng, F. Tung, M. O. Ahmed, Y. Bengio, H. Hajimirsadeghi, "Were RNNs All We Needed?", 2024.
  Y. H. Lim, Q. Zhu, J. Selfridge, M. F. Kasim, "Parallelizing non-linear sequential models
  over the sequence length" (DEER), ICLR 2024.
  X. Gonzalez, A. Warrington, J. T. H. Smith, S. W. Linderman, "Towards scalable and stable
  parallelization of nonlinear RNNs" (quasi-DEER), NeurIPS 2024.
  X. Gonzalez, L. Kozachkov, D. M. Zoltowski, K. L. Clarkson, S. W. Linderman, "Predictability
  enables parallelization of nonlinear state space models", NeurIPS 2025.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gated_jax._validate import (
    array_shape,
    boolean,
    check_array,
    check_jacobians_fit,
    choice,
    fail,
    finite_float,
    positive_int,
)
from gated_jax.cell import step as _step
from gated_jax.cell._core import (
    Operands,
    ScanOptions,
    adjoint,
    input_grads,
    param_grads,
    prepare,
    run,
)
from gated_jax.cell.diagnostics import lyapunov_exponent as lyapunov_exponent  # its old home
from gated_jax.cell.params import GatedParams

__all__ = [
    "JACOBIANS",
    "DeerInfo",
    "DeerNotConverged",
    "affine_scan",
    "gated_deer",
    "lyapunov_exponent",
    "scan_levels",
]

JACOBIANS = ("full", "diagonal")
"""The ``jacobian`` options of :func:`gated_deer`: DEER's full Jacobians, quasi-DEER's diagonal."""


class DeerInfo(NamedTuple):
    """What the Newton solver of :func:`gated_deer` did.

    Attributes:
      iterations: the number of Newton updates (affine scans) run, an int32 scalar; ``0`` when
        the initial guess already solved the recurrence, ``1`` for ``W_z = None``.
      residuals: ``(min(max_iters, T) + 1,)``: the per-step residual of each iterate,
        ``max_t |z_k[t] - f(z_k[t-1], x[t])|`` (``k = 0`` the initial guess); NaN past
        ``iterations``. The residual, not the change between iterates, is what convergence is
        judged by: it is zero exactly on a trajectory of the cell.
      converged: a bool scalar: the returned trajectory's residual is within
        ``max(tol, 32 eps) * max(1, max |z|)`` (``eps`` the dtype's machine epsilon).
      sequential: a bool scalar: the returned trajectory is the sequential loop's, run because
        Newton did not converge (only with ``fallback=True``, as ``gated_scan`` does under
        ``jit``); the states are then exact and ``converged`` still says Newton did not get there.
    """

    iterations: jax.Array
    residuals: jax.Array
    converged: jax.Array
    sequential: jax.Array


class DeerNotConverged(RuntimeError):
    """:func:`~gated_jax.cell.gated_scan` with a parallel method did not converge (eagerly)."""


def scan_levels(T: int) -> int:
    """Sequential levels of an associative scan over ``T`` elements: ``ceil(log2 T)`` (0 for T<=1).

    Examples:
      >>> from gated_jax.cell.parallel import scan_levels
      >>> scan_levels(1), scan_levels(256), scan_levels(4096), scan_levels(1000)
      (0, 8, 12, 10)
    """
    return (positive_int("T", T) - 1).bit_length()


# --------------------------------------------------------------------------------------------
# affine scans, time-major (time on axis 0)


def _combine_diag(e1, e2):
    a1, b1 = e1
    a2, b2 = e2
    return a2 * a1, a2 * b1 + b2


def _combine_full(e1, e2):
    a1, b1 = e1
    a2, b2 = e2
    return a2 @ a1, jnp.einsum("...ij,...j->...i", a2, b1) + b2


# The form of a (linearised) step's A[t]: "diagonal" (..., m), "dense" (..., m, m) or "heads"
# (..., H, h, h), the block-diagonal Jacobian of a cell with H heads: its scan runs the dense
# combine on (..., H, h) vectors, O(m h^2) per composition instead of O(m^3).


def _form(w_z, jacobian: str) -> str:
    """The form of ``A`` in Newton's linearisation: the exact Jacobian's structure
    (``jacobian="full"``; a diagonal ``w_z`` gives an exactly diagonal ``J``), or its diagonal
    (``"diagonal"``, quasi-DEER)."""
    kind = _step.recurrent_kind(w_z)
    if jacobian == "diagonal" or kind in (None, "diagonal"):
        return "diagonal"
    return str(kind)


def _split(A, v, form: str):
    """``v`` ``(..., m)`` as ``(..., H, h)`` for a ``"heads"`` ``A`` (``(..., H, h, h)``)."""
    return jnp.reshape(v, v.shape[:-1] + A.shape[-3:-1]) if form == "heads" else v


def _merge(v, form: str):
    return jnp.reshape(v, v.shape[:-2] + (-1,)) if form == "heads" else v


def _apply(A, z, form: str):
    """``A z`` for ``A`` of ``form``."""
    if form == "diagonal":
        return A * z
    return _merge(jnp.einsum("...ij,...j->...i", A, _split(A, z, form)), form)


def _transpose(A, form: str):
    """``A^T`` of ``form`` (a diagonal ``A`` is its own transpose)."""
    return A if form == "diagonal" else jnp.swapaxes(A, -1, -2)


def _solve_tm(A, b, z0, form: str):
    """``z[t] = A[t] z[t-1] + b[t]``, ``z[-1] = z0``, time on axis 0; returns ``z`` like ``b``."""
    if b.shape[0] == 0:
        return b
    b = b.at[0].add(_apply(A[0], z0, form))
    fn = _combine_diag if form == "diagonal" else _combine_full
    return _merge(lax.associative_scan(fn, (A, _split(A, b, form)), axis=0)[1], form)


def _solve_reverse_tm(A, b, form: str):
    """``z[t] = A[t] z[t+1] + b[t]``, ``z[T] = 0`` (the adjoint's direction), time on axis 0."""
    flip = lambda a: jnp.flip(a, axis=0)
    return flip(_solve_tm(flip(A), flip(b), jnp.zeros_like(b[0]), form))


def affine_scan(A: jax.Array, b: jax.Array, z0: jax.Array | None = None) -> jax.Array:
    r"""All states of the linear recurrence ``z[t] = A[t] z[t-1] + b[t]`` by one associative scan.

    .. math::

        z[t] = A[t] A[t-1] \cdots A[0] \, z_0 + \sum_{k \le t} A[t] \cdots A[k+1] \, b[k]

    computed as prefix compositions of the affine maps ``(A[t], b[t])`` in ``ceil(log2 T)``
    levels.

    Args:
      A: ``(..., T, m)`` (diagonal ``A[t]``, elementwise) or ``(..., T, m, m)`` (full).
      b: ``(..., T, m)``.
      z0: ``(..., m)``, the state before the first step; ``None`` means zeros.

    Returns:
      ``z`` of the shape of ``b`` (``z[..., t, :]`` after step ``t``).

    Raises:
      ValueError: naming the argument, for shapes that do not fit together.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gated_jax.cell.parallel import affine_scan
      >>> affine_scan(jnp.full((4, 1), 0.5), jnp.ones((4, 1)), jnp.array([8.0]))[:, 0]
      Array([5.   , 3.5  , 2.75 , 2.375], dtype=float32)
    """
    check_array("A", A)
    check_array("b", b)
    sb, sa = array_shape(b), array_shape(A)
    if len(sb) < 2:
        raise fail("b", b, "of shape (..., T, m)")
    if sa == sb:
        diagonal = True
    elif sa == sb + (sb[-1],):
        diagonal = False
    else:
        raise fail("A", A, f"of shape {sb} (diagonal) or {sb + (sb[-1],)} (full), for `b` {sb}")
    dt = jnp.result_type(A, b, jnp.float32) if z0 is None else jnp.result_type(A, b, z0)
    if z0 is not None:
        check_array("z0", z0)
        if array_shape(z0) != sb[:-2] + sb[-1:]:
            raise fail("z0", z0, f"of shape {sb[:-2] + sb[-1:]}")
    return _affine_scan_jit(A, b, z0, diagonal, jnp.dtype(dt))


# Validated in Python above, then ONE compiled program (one compilation per shape, not one per
# operation of the log2(T) levels when called outside a jit).
@jax.jit(static_argnums=(3, 4))
def _affine_scan_jit(A, b, z0, diagonal: bool, dt):
    if z0 is None:
        z0 = jnp.zeros(b.shape[:-2] + b.shape[-1:], dt)
    z = _solve_tm(
        jnp.moveaxis(jnp.asarray(A, dt), -2 if diagonal else -3, 0),
        jnp.moveaxis(jnp.asarray(b, dt), -2, 0),
        jnp.asarray(z0, dt),
        "diagonal" if diagonal else "dense",
    )
    return jnp.moveaxis(z, 0, -2)


# --------------------------------------------------------------------------------------------
# the solver on flat operands: params, a, u (T, B, m) time-major, z0 (B, m), mask (T, B)


def _shift(zs, z0):
    """``zprev[t] = z[t-1]`` with ``zprev[0] = z0``."""
    return jnp.concatenate([z0[None], zs[:-1]], axis=0)


def _linearised(p: GatedParams, zprev, a, u, mask, jacobian: str):
    """``(A, b, f)`` of the Newton step at ``zprev``: ``A = J`` in its structure (or its
    diagonal), ``b = f - A z`` and the step itself, ``f = f(z[t-1], x[t])``."""
    fz, c = _step.update(p.w_z, zprev, a, u, mask)
    s = _step.jacobian_factor(zprev, u, c)
    form = _form(p.w_z, jacobian)
    if form == "diagonal":  # c + s diag(W_z): exact for a diagonal w_z, quasi-DEER otherwise
        d = _step.recurrent_diagonal(p.w_z)
        A = c + s * jnp.reshape(d, (1,) * (s.ndim - 1) + d.shape)
    else:  # the exact Jacobian, dense or per head
        A = _step.jacobian_blocks(p.w_z, c, s)
    return A, fz - _apply(A, zprev, form), fz


def _mingru(p: GatedParams, a, u, z0, mask):
    """The minGRU trajectory (``W_z = None``): one diagonal affine scan, exact."""
    c = _step.gate(None, None, a, mask)
    return _solve_tm(c, (1 - c) * u, z0, "diagonal")


EPS_FACTOR = 32
"""The residual bound's floor, in machine epsilons of the dtype (see :class:`DeerInfo`)."""


def residual_bound(tol: float, dtype) -> float:
    """The per-step residual, relative to ``max(1, max |z|)``, below which a trajectory counts as
    solved: ``max(tol, 32 eps)``; a ``tol`` below the dtype's rounding cannot be certified."""
    return max(float(tol), EPS_FACTOR * float(jnp.finfo(dtype).eps))


def _residual(zs, fz):
    """``(max_t |z[t] - f(z[t-1])|, max |z|)`` of one iterate (NaN-propagating)."""
    return jnp.max(jnp.abs(zs - fz)), jnp.max(jnp.abs(zs))


def _newton(p: GatedParams, a, u, z0, mask, init, jacobian: str, tol: float, max_iters: int):
    """Newton (or quasi-Newton) iterations of affine scans; returns ``(zs, DeerInfo)``.

    Each pass first measures the per-step residual of the current iterate (the linearisation
    evaluates ``f`` along it anyway) and stops there when it is within the bound; otherwise it
    takes one Newton update. At most ``max_iters`` updates are taken, so the last iterate's
    residual is always measured: a trajectory is never reported solved on the iteration count.
    """
    bound = residual_bound(tol, init.dtype)
    false = jnp.zeros((), bool)
    if p.w_z is None:
        zs = _mingru(p, a, u, z0, mask)
        fz, _ = _step.update(None, _shift(zs, z0), a, u, mask)
        r0, _ = _residual(init, _step.update(None, _shift(init, z0), a, u, mask)[0])
        r1, _ = _residual(zs, fz)
        res = jnp.full((max_iters + 1,), jnp.nan, zs.dtype).at[0].set(r0).at[1].set(r1)
        # one affine scan is exact (no iteration can amplify rounding): always converged
        return zs, DeerInfo(jnp.ones((), jnp.int32), res, jnp.ones((), bool), false)
    form = _form(p.w_z, jacobian)

    def body(state):
        k, zs, res, _, _ = state
        A, b, fz = _linearised(p, _shift(zs, z0), a, u, mask, jacobian)
        r, scale = _residual(zs, fz)
        ok = jnp.isfinite(r) & (r <= bound * jnp.maximum(1.0, scale))
        stop = ok | (k >= max_iters)
        new = lax.cond(stop, lambda: zs, lambda: _solve_tm(A, b, z0, form))
        return k + jnp.where(stop, 0, 1), new, res.at[k].set(r), ok, stop

    def cond(state):
        return jnp.logical_not(state[4])

    res0 = jnp.full((max_iters + 1,), jnp.nan, init.dtype)
    state = (jnp.zeros((), jnp.int32), init, res0, false, false)
    k, zs, res, ok, _ = lax.while_loop(cond, body, state)
    return zs, DeerInfo(k, res, ok, false)


def _solve(p, xs_tm, z0, mask, init, jacobian, tol, max_iters, fallback):
    a, u = _step.projections(p, xs_tm)
    zs, info = _newton(p, a, u, z0, mask, init, jacobian, tol, max_iters)
    if fallback and p.w_z is not None:
        # never a wrong trajectory: without convergence, run the sequential loop instead
        zs = lax.cond(
            info.converged,
            lambda: zs,
            lambda: run(p, xs_tm, z0, mask, False, 1)[1],
        )
        info = info._replace(sequential=jnp.logical_not(info.converged))
    return zs, info


def _fixed_point_adjoint(p: GatedParams, zs, xs_tm, z0, mask, g, jacobian: str):
    """Implicit differentiation at the fixed point ``zs``: the closed-form BPTT adjoint."""
    zprev = _shift(zs, z0)
    a, u = _step.projections(p, xs_tm)
    c = _step.gate(p.w_z, zprev, a, mask)
    s = _step.jacobian_factor(zprev, u, c)
    form = _form(p.w_z, jacobian)
    if jacobian == "full" or _step.recurrent_kind(p.w_z) in (None, "diagonal"):
        # delta[t] = g[t] + J[t+1]^T delta[t+1]: one reverse scan over the transposed Jacobians
        # in their structure (diagonal for minGRU and a diagonal w_z, blocks for heads)
        JT = _transpose(_step.jacobian_blocks(p.w_z, c[1:], s[1:]), form)
        nxt = jnp.concatenate([JT, jnp.zeros((1,) + JT.shape[1:], JT.dtype)], axis=0)
        delta = _solve_reverse_tm(nxt, g, form)
    else:
        # quasi-DEER keeps O(T m) memory: the sequential closed-form adjoint loop
        dz0, (pbar, ubar) = adjoint(p.w_z, g, c, zprev, zs, jnp.zeros_like(z0), False, 1)
        delta = None
    if delta is not None:
        pbar, ubar = s * delta, (1 - c) * delta
        # dl/dz0 = J[0]^T delta[0]
        dz0 = _step.transpose_step(p.w_z, c[0], s[0], delta[0])[0]
    dp = param_grads(p, xs_tm, zprev, pbar, ubar)
    return dp, input_grads(p, pbar, ubar), dz0


# --------------------------------------------------------------------------------------------
# the differentiable core: the solve as a custom VJP whose backward pass is the adjoint at the
# fixed point (never the Newton iterations)


def _solve_core(p, xs_tm, z0, mask, init, jacobian, tol, max_iters, fallback):
    return _solve(p, xs_tm, z0, mask, init, jacobian, tol, max_iters, fallback)


_core_vjp = jax.custom_vjp(_solve_core, nondiff_argnums=(5, 6, 7, 8))


def _core_fwd(p, xs_tm, z0, mask, init, jacobian, tol, max_iters, fallback):
    zs, info = _solve(p, xs_tm, z0, mask, init, jacobian, tol, max_iters, fallback)
    return (zs, info), (p, xs_tm, z0, mask, zs)


def _core_bwd(jacobian, tol, max_iters, fallback, res, cts):
    p, xs_tm, z0, mask, zs = res
    dp, dxs, dz0 = _fixed_point_adjoint(p, zs, xs_tm, z0, mask, cts[0], jacobian)
    return dp, dxs, dz0, None, None


_core_vjp.defvjp(_core_fwd, _core_bwd)


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8))
def _solve_jit(p, xs_tm, z0, mask, init, jacobian, tol, max_iters, fallback):
    return _core_vjp(p, xs_tm, z0, mask, init, jacobian, tol, max_iters, fallback)


def _default_tol(dtype) -> float:
    return 1e-12 if jnp.dtype(dtype) == jnp.dtype(jnp.float64) else 1e-5


DEFAULT_MAX_ITERS = 100
"""``max_iters=None`` means ``min(T, DEFAULT_MAX_ITERS)`` Newton updates."""


def check_solver_options(jacobian, tol, max_iters) -> tuple[str, float | None, int | None]:
    """Validate ``jacobian``, ``tol`` (a float > 0 or None) and ``max_iters`` (an int >= 1 or
    None)."""
    choice("jacobian", jacobian, JACOBIANS)
    tol = finite_float("tol", tol, minimum=0.0, strict=True, allow_none=True)
    max_iters = positive_int("max_iters", max_iters, allow_none=True)
    return jacobian, tol, max_iters


def _check_full_fits(ops: Operands, xs, jacobian: str) -> None:
    w_z = ops.params.w_z
    form = _form(w_z, jacobian)
    if w_z is not None and form != "diagonal":
        # the Jacobians (dense, or H blocks of h x h) and the scan's intermediate compositions
        width = ops.m if form == "dense" else int(w_z.shape[-1])
        check_jacobians_fit(xs, ops.batch, ops.T, ops.m, ops.xs.dtype, copies=3, width=width)


def _time_major(ops: Operands, reverse: bool):
    xs_tm, mask = jnp.swapaxes(ops.xs, 0, 1), ops.mask
    if reverse:  # reverse time = the forward recurrence on flipped inputs
        xs_tm = jnp.flip(xs_tm, 0)
        mask = None if mask is None else jnp.flip(mask, 0)
    return xs_tm, mask


def _concrete(x) -> bool | None:
    """``bool(x)`` when ``x`` has a value (eager evaluation), else ``None`` (under ``jit``)."""
    try:
        return bool(x)
    except jax.errors.ConcretizationTypeError:
        return None


def _not_converged(info: DeerInfo, jacobian: str, tol: float, max_iters: int, T: int, dtype):
    try:  # under an eager jax.grad the residuals are tracers (with a value); the flag is not
        residual = f"{float(info.residuals[int(info.iterations)]):.3g}"
    except jax.errors.ConcretizationTypeError:
        residual = "(traced)"
    return DeerNotConverged(
        f"gated_scan(method={'deer' if jacobian == 'full' else 'quasi_deer'!r}) did not "
        f"converge in `max_iters` (={max_iters}) iterations: the last iterate's per-step "
        f"residual is {residual}, above `tol` (={tol:g}) relative to "
        f"max(1, max|z|) (floor {residual_bound(0.0, dtype):.2g} for {jnp.dtype(dtype).name}). "
        f"Raise max_iters (at most T = {T} are used), or use method='sequential': on an "
        "expanding cell (positive Lyapunov exponent) Newton amplifies rounding error. Under "
        "jax.jit the sequential loop is run instead (gated_deer(..., fallback=True) reports it)."
    )


def _budget(max_iters: int | None, T: int) -> int:
    """The Newton updates allowed: ``max_iters`` (``None``: ``DEFAULT_MAX_ITERS``) capped at ``T``.

    Iteration ``k`` makes the first ``k`` steps exact, so ``T`` updates solve the recurrence in
    exact arithmetic; in floating point more cannot help (they re-amplify the same rounding on
    an expanding cell), and the cap keeps the residual buffer at ``T + 1`` entries."""
    return max(1, min(T, DEFAULT_MAX_ITERS if max_iters is None else max_iters))


def _scan_backend(ops: Operands, opts: ScanOptions, jacobian: str) -> jax.Array:
    """Newton over the whole sequence with ``jacobian``'s Jacobians, zero initial guess.

    Eagerly, a solve that did not converge raises :class:`DeerNotConverged`; under ``jit`` (when
    convergence is not known while tracing) the compiled program runs the sequential loop
    instead whenever the Newton iterations did not converge.
    """
    T, B, m = ops.T, ops.xs.shape[0], ops.m
    if T == 0:
        return jnp.zeros((B, 0, m), ops.z0.dtype) if opts.return_sequence else ops.z0
    _check_full_fits(ops, ops.xs, jacobian)
    tol = _default_tol(ops.xs.dtype) if opts.tol is None else opts.tol
    max_iters = _budget(opts.max_iters, T)
    xs_tm, mask = _time_major(ops, opts.reverse)
    init = jnp.zeros((T, B, m), ops.xs.dtype)
    zs, info = _solve_jit(ops.params, xs_tm, ops.z0, mask, init, jacobian, tol, max_iters, True)
    if _concrete(info.converged) is False:
        raise _not_converged(info, jacobian, tol, max_iters, T, ops.xs.dtype)
    if not opts.return_sequence:
        return zs[-1]  # the last step run (the first input when reversed)
    return jnp.swapaxes(jnp.flip(zs, 0) if opts.reverse else zs, 0, 1)


# --------------------------------------------------------------------------------------------
# the backends of gated_scan: backend(ops, opts) -> states (B, T, m), or the final state (B, m)


def deer(ops: Operands, opts: ScanOptions) -> jax.Array:
    """``method="deer"``: Newton with the exact Jacobians in ``w_z``'s structure: dense,
    ``O(T m^3)`` work and ``O(T m^2)`` memory per iteration; heads ``(H, h, h)``, ``O(T m h^2)``
    and ``O(T m h)``; diagonal, ``O(T m)``; gradients by one reverse affine scan over ``J^T``
    in the same structure."""
    return _scan_backend(ops, opts, "full")


def quasi_deer(ops: Operands, opts: ScanOptions) -> jax.Array:
    """``method="quasi_deer"``: Newton with the Jacobians' diagonals, ``O(T m)`` per iteration;
    gradients by the sequential closed-form adjoint loop (``O(T m)`` memory)."""
    return _scan_backend(ops, opts, "diagonal")


def mingru_scan(ops: Operands, opts: ScanOptions) -> jax.Array:
    """A parallel method with ``w_z=None`` (minGRU): the recurrence is affine,
    ``z[t] = c[t] z[t-1] + (1 - c[t]) u[t]``, so one diagonal affine scan gives the exact
    trajectory (no Newton iterations; either Jacobian option gives the same program) and one
    reverse diagonal scan its adjoint."""
    return _scan_backend(ops, opts, "full")


def _initial_guess(ops: Operands, init) -> jax.Array:
    """``init`` ``(..., T, m)`` checked and made time-major ``(T, B, m)``; ``None``: zeros."""
    T, B, m = ops.T, ops.xs.shape[0], ops.m
    if init is None:
        return jnp.zeros((T, B, m), ops.xs.dtype)
    check_array("init", init)
    if array_shape(init) != ops.batch + (T, m):
        raise fail("init", init, f"of the shape of the states, {ops.batch + (T, m)}")
    return jnp.swapaxes(jnp.reshape(jnp.asarray(init, ops.xs.dtype), (B, T, m)), 0, 1)


def gated_deer(
    params: GatedParams,
    xs: jax.Array,
    z0: jax.Array | None = None,
    *,
    jacobian: str = "full",
    tol: float | None = None,
    max_iters: int | None = None,
    init: jax.Array | None = None,
    fallback: bool = False,
) -> tuple[jax.Array, DeerInfo]:
    r"""Solve the gated recurrence over the whole sequence by Newton's method (DEER).

    Each iteration linearises every step at the current trajectory ``z_k`` and solves the
    resulting affine recurrence with one associative scan (:func:`affine_scan`):

    .. math::

        z_{k+1}[t] = A_k[t] \, z_{k+1}[t-1] + f(z_k[t-1], x[t]) - A_k[t] \, z_k[t-1],

    with ``A = J = diag(c) + diag(s) W_z`` (``jacobian="full"``, DEER) or its diagonal
    ``c + s diag(W_z)`` (``"diagonal"``, quasi-DEER). ``J`` has ``W_z``'s structure, and
    ``"full"`` uses it exactly: a diagonal ``w_z`` ``(m,)`` gives the diagonal
    ``J = diag(c + s w_z)`` (``O(T m)`` per iteration, quadratic convergence; ``"diagonal"`` is
    then the same exact Newton), heads ``(H, h, h)`` give ``H`` blocks of ``h x h``
    (``O(T m h^2)`` per iteration). Convergence is judged by the residual
    alone: iterations stop when the current trajectory satisfies the recurrence step by step,

    .. math::

        \max_t |z_k[t] - f(z_k[t-1], x[t])| \le \max(\mathrm{tol}, 32 \epsilon) \,
        \max(1, \max_t |z_k[t]|)

    (``epsilon`` the dtype's machine epsilon), or after ``max_iters`` updates, and ``converged``
    is that test on the returned trajectory, never the iteration count: ``T`` iterations are
    exact in exact arithmetic, but on an expanding cell each one multiplies rounding error, and
    such a result is reported unconverged. With ``W_z = None`` (minGRU) the recurrence is affine
    and one scan gives the exact trajectory.

    Gradients (``jax.grad``, ``jax.vjp``) are those of the sequential recurrence at the
    returned trajectory, by implicit differentiation (module docstring): exact when it
    converged.

    Args:
      params: :class:`~gated_jax.cell.GatedParams`.
      xs: inputs ``(..., T, n)``.
      z0: initial state ``(..., m)``; ``None`` means zeros.
      jacobian: ``"full"`` (DEER) or ``"diagonal"`` (quasi-DEER).
      tol: convergence tolerance, a float > 0; ``None``: ``1e-12`` in float64, ``1e-5``
        otherwise.
      max_iters: the most Newton updates, an int >= 1; ``None``: 100. At most ``T`` are run
        (iteration ``k`` fixes step ``k``, so ``T`` solve the recurrence in exact arithmetic and
        more cannot help in floating point).
      init: the initial guess ``(..., T, m)``; ``None`` means zeros. In a training loop the
        previous step's trajectory is a good guess when the parameters move little.
      fallback: when Newton does not converge, return the sequential loop's trajectory instead
        of the last iterate (``info.sequential`` says it happened); what ``gated_scan`` does
        under ``jit``. A strict bool.

    Returns:
      ``(zs, info)``: ``zs`` ``(..., T, m)`` (the last iterate when unconverged, unless
      ``fallback``: check ``info.converged``) and a :class:`DeerInfo`.

    Raises:
      ValueError: naming the argument, for bad shapes or options, or full Jacobians that cannot
        fit in memory.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gated_jax.cell import gated_deer, gated_scan, init_gated_params
      >>> p = init_gated_params(jax.random.key(0), 3, 4)
      >>> p = p._replace(w_z=0.5 * p.w_z)
      >>> xs = jax.random.normal(jax.random.key(1), (2, 16, 3))
      >>> zs, info = gated_deer(p, xs)
      >>> bool(info.converged), bool(jnp.max(jnp.abs(zs - gated_scan(p, xs))) < 1e-5)
      (True, True)
      >>> _, info = gated_deer(p._replace(w_z=None), xs)  # minGRU: one exact scan
      >>> int(info.iterations)
      1
      >>> d = init_gated_params(jax.random.key(0), 3, 4, recurrent_gate="diagonal")
      >>> zs, info = gated_deer(d, xs)  # exact diagonal Newton, O(T m) per iteration
      >>> bool(info.converged), bool(jnp.max(jnp.abs(zs - gated_scan(d, xs))) < 1e-5)
      (True, True)

    References:
      Y. H. Lim, Q. Zhu, J. Selfridge, M. F. Kasim, "Parallelizing non-linear sequential
      models over the sequence length" (DEER), ICLR 2024. X. Gonzalez, A. Warrington,
      J. T. H. Smith, S. W. Linderman, "Towards scalable and stable parallelization of
      nonlinear RNNs" (quasi-DEER), NeurIPS 2024.
    """
    jacobian, tol, max_iters = check_solver_options(jacobian, tol, max_iters)
    fallback = boolean("fallback", fallback)
    ops = prepare(params, xs, z0, None)
    T, B, m = ops.T, ops.xs.shape[0], ops.m
    _check_full_fits(ops, xs, jacobian)
    tol = _default_tol(ops.xs.dtype) if tol is None else tol
    max_iters = _budget(max_iters, T)
    init_tm = _initial_guess(ops, init)
    if T == 0:
        zs = jnp.zeros((B, 0, m), ops.xs.dtype)
        res = jnp.full((max_iters + 1,), jnp.nan)
        info = DeerInfo(jnp.zeros((), jnp.int32), res, jnp.array(True), jnp.array(False))
    else:
        xs_tm, mask = _time_major(ops, False)
        zs_tm, info = _solve_jit(
            ops.params, xs_tm, ops.z0, mask, init_tm, jacobian, tol, max_iters, fallback
        )
        zs = jnp.swapaxes(zs_tm, 0, 1)
    return jnp.reshape(zs, ops.batch + (T, m)).astype(ops.out_dtype), info
