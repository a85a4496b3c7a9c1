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

**A solver that never diverges.** Plain Newton over the whole sequence, on a cell with a
positive Lyapunov exponent, passes through iterates far outside any trajectory (``1e13`` and
more in float32) because each update composes the expanding Jacobians of the whole sequence.
The default solver (``safeguard=True``) runs the safe driver of
:func:`gated_jax.cell._affine.newton_window`: each update covers a window from the first
unverified step (verified steps frozen, the first unverified step taken exactly, so every update
verifies at least one more step and ``T`` updates always converge), wide while Newton converges
and 8 steps once it stalls, and every update is projected on the box every trajectory of the
convex mix stays in,

.. math::

    \min\big(z_0, \min_{t' \le t} u[t']\big) \le z[t] \le \max\big(z_0, \max_{t' \le t} u[t']\big)

(per unit; ``z[t]`` is between ``z[t-1]`` and ``u[t]``), with a non-finite value replaced by the
step's own value ``f(z_k[t-1], x[t])``. The projection never moves a trajectory of the cell, so
the verified prefix and Newton's convergence near the solution are kept, and no iterate leaves
the box: no overflow and no NaN, in float32 as in float64. ``DeerInfo.work`` counts the step
evaluations (``T`` for the sequential loop) and ``DeerInfo.peak`` the largest ``|z|`` of any
iterate.

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

import jax
import jax.numpy as jnp
from jax import lax

from gated_jax._validate import (
    array_shape,
    boolean,
    check_array,
    check_jacobians_fit,
    fail,
)
from gated_jax.cell import step as _step
from gated_jax.cell._affine import (
    DEFAULT_MAX_ITERS,
    EPS_FACTOR,
    JACOBIANS,
    DeerInfo,
    DeerNotConverged,
    affine_scan,
    apply,
    budget,
    check_solver_options,
    concrete,
    default_tol,
    last_residual,
    newton_window,
    residual,
    residual_bound,
    scan_levels,
    shift,
    solve_reverse_tm,
    solve_tm,
    transpose,
    windows,
)
from gated_jax.cell._core import (
    Operands,
    ScanOptions,
    adjoint,
    input_grads,
    param_grads,
    prepare,
    run,
    time_major,
)
from gated_jax.cell.diagnostics import lyapunov_exponent as lyapunov_exponent  # its old home
from gated_jax.cell.params import GatedParams

__all__ = [
    "DEFAULT_MAX_ITERS",
    "EPS_FACTOR",
    "JACOBIANS",
    "DeerInfo",
    "DeerNotConverged",
    "affine_scan",
    "check_solver_options",
    "gated_deer",
    "lyapunov_exponent",
    "residual_bound",
    "scan_levels",
]

# --------------------------------------------------------------------------------------------
# affine scans, time-major (time on axis 0)


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


# --------------------------------------------------------------------------------------------
# the solver on flat operands: params, a, u (T, B, m) time-major, z0 (B, m), mask (T, B)


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
    return A, fz - apply(A, zprev, form), fz


def _mingru(p: GatedParams, a, u, z0, mask):
    """The minGRU trajectory (``W_z = None``): one diagonal affine scan, exact."""
    c = _step.gate(None, None, a, mask)
    return solve_tm(c, (1 - c) * u, z0, "diagonal")


def _box(u, z0, mask):
    """``(lo, hi)`` ``(T, B, m)``: every trajectory of the convex mix stays in
    ``min(z0, u[:t+1]) <= z[t] <= max(z0, u[:t+1])`` (a masked step holds ``z``, inside)."""
    lo = jnp.minimum(lax.cummin(u, axis=0), z0[None])
    hi = jnp.maximum(lax.cummax(u, axis=0), z0[None])
    return lo, hi


def _newton(
    p: GatedParams,
    a,
    u,
    z0,
    mask,
    init,
    jacobian: str,
    tol: float,
    max_iters: int,
    window: tuple[int, int, bool],
):
    """Safe Newton (or quasi-Newton) iterations of affine scans over a window past the verified
    prefix (:func:`gated_jax.cell._affine.newton_window`); returns ``(zs, DeerInfo)``.

    Each pass measures the per-step residual of the current iterate over the window, moves the
    window to the first step outside the bound, and stops when every step is within it;
    otherwise it takes one Newton update of the window, projected on the box every trajectory
    of the cell stays in (:func:`_box`), non-finite values replaced by the step itself.
    """
    bound = residual_bound(tol, init.dtype)
    false = jnp.zeros((), bool)
    if p.w_z is None:
        zs = _mingru(p, a, u, z0, mask)
        fz, _ = _step.update(None, shift(zs, z0), a, u, mask)
        r0, _ = residual(init, _step.update(None, shift(init, z0), a, u, mask)[0])
        r1, _ = residual(zs, fz)
        res = jnp.full((max_iters + 1,), jnp.nan, zs.dtype).at[0].set(r0).at[1].set(r1)
        T = zs.shape[0]
        one = jnp.ones((), jnp.int32)
        peak = jnp.max(jnp.abs(zs))
        # one affine scan is exact (no iteration can amplify rounding): always converged
        info = DeerInfo(one, res, jnp.ones((), bool), false, T * one, peak, T * one)
        return zs, info
    form = _form(p.w_z, jacobian)
    lo, hi = _box(u, z0, mask)

    def cut(x, start, W):
        return None if x is None else lax.dynamic_slice_in_dim(x, start, W, 0)

    def linearise(start, zprev):
        W = zprev.shape[0]
        return _linearised(
            p, zprev, cut(a, start, W), cut(u, start, W), cut(mask, start, W), jacobian
        )

    def safeguard(start, new, fz):
        W = new.shape[0]
        new = jnp.where(jnp.isfinite(new), new, fz)
        return jnp.clip(new, cut(lo, start, W), cut(hi, start, W))

    wide, short, safe = window
    if not safe:
        safeguard = lambda start, new, fz: new
    return newton_window(
        linearise, safeguard, z0, init, form, bound, max_iters, (wide, short), safe
    )


def _solve(p, xs_tm, z0, mask, init, jacobian, tol, max_iters, fallback, window):
    a, u = _step.projections(p, xs_tm)
    zs, info = _newton(p, a, u, z0, mask, init, jacobian, tol, max_iters, window)
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
    zprev = shift(zs, z0)
    a, u = _step.projections(p, xs_tm)
    c = _step.gate(p.w_z, zprev, a, mask)
    s = _step.jacobian_factor(zprev, u, c)
    form = _form(p.w_z, jacobian)
    if jacobian == "full" or _step.recurrent_kind(p.w_z) in (None, "diagonal"):
        # delta[t] = g[t] + J[t+1]^T delta[t+1]: one reverse scan over the transposed Jacobians
        # in their structure (diagonal for minGRU and a diagonal w_z, blocks for heads)
        JT = transpose(_step.jacobian_blocks(p.w_z, c[1:], s[1:]), form)
        nxt = jnp.concatenate([JT, jnp.zeros((1,) + JT.shape[1:], JT.dtype)], axis=0)
        delta = solve_reverse_tm(nxt, g, form)
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


def _solve_core(p, xs_tm, z0, mask, init, jacobian, tol, max_iters, fallback, window):
    return _solve(p, xs_tm, z0, mask, init, jacobian, tol, max_iters, fallback, window)


_core_vjp = jax.custom_vjp(_solve_core, nondiff_argnums=(5, 6, 7, 8, 9))


def _core_fwd(p, xs_tm, z0, mask, init, jacobian, tol, max_iters, fallback, window):
    zs, info = _solve(p, xs_tm, z0, mask, init, jacobian, tol, max_iters, fallback, window)
    return (zs, info), (p, xs_tm, z0, mask, zs)


def _core_bwd(jacobian, tol, max_iters, fallback, window, res, cts):
    p, xs_tm, z0, mask, zs = res
    dp, dxs, dz0 = _fixed_point_adjoint(p, zs, xs_tm, z0, mask, cts[0], jacobian)
    return dp, dxs, dz0, None, None


_core_vjp.defvjp(_core_fwd, _core_bwd)


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8, 9))
def _solve_jit(p, xs_tm, z0, mask, init, jacobian, tol, max_iters, fallback, window):
    return _core_vjp(p, xs_tm, z0, mask, init, jacobian, tol, max_iters, fallback, window)


def _check_full_fits(ops: Operands, xs, jacobian: str) -> None:
    w_z = ops.params.w_z
    form = _form(w_z, jacobian)
    if w_z is not None and form != "diagonal":
        # the Jacobians (dense, or H blocks of h x h) and the scan's intermediate compositions
        width = ops.m if form == "dense" else int(w_z.shape[-1])
        check_jacobians_fit(xs, ops.batch, ops.T, ops.m, ops.xs.dtype, copies=3, width=width)


def _not_converged(info: DeerInfo, jacobian: str, tol: float, max_iters: int, T: int, dtype):
    residual = last_residual(info)
    return DeerNotConverged(
        f"gated_scan(method={'deer' if jacobian == 'full' else 'quasi_deer'!r}) did not "
        f"converge in `max_iters` (={max_iters}) iterations: the last iterate's per-step "
        f"residual is {residual}, above `tol` (={tol:g}) relative to "
        f"max(1, max|z|) (floor {residual_bound(0.0, dtype):.2g} for {jnp.dtype(dtype).name}). "
        f"Raise max_iters (T = {T} always converge), or use method='sequential': on an "
        "expanding cell (positive Lyapunov exponent) Newton verifies a few steps per update. Under "
        "jax.jit the sequential loop is run instead (gated_deer(..., fallback=True) reports it)."
    )


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
    tol = default_tol(ops.xs.dtype) if opts.tol is None else opts.tol
    max_iters = budget(opts.max_iters, T)
    xs_tm, mask = time_major(ops, opts.reverse)
    init = jnp.zeros((T, B, m), ops.xs.dtype)
    window = windows(None, T) + (True,)
    zs, info = _solve_jit(
        ops.params, xs_tm, ops.z0, mask, init, jacobian, tol, max_iters, True, window
    )
    if concrete(info.converged) is False:
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
    window: int | None = None,
    safeguard: bool = True,
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
    (``O(T m h^2)`` per iteration). By default each update covers a window past the verified
    prefix and is projected on the box every trajectory of the cell stays in, so no iterate
    overflows and ``T`` updates always converge (module docstring, "A solver that never
    diverges"). Convergence is judged by the residual
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
      max_iters: the most Newton updates, an int >= 1; ``None``: 100. At most ``T`` are run:
        each update of the default solver verifies at least one more step, so ``max_iters=T``
        always converges (on an expanding cell in about ``T / 2`` updates of 8 steps).
      init: the initial guess ``(..., T, m)``; ``None`` means zeros. **Warm starts:** in a
        training loop, pass the previous step's trajectory (``jax.lax.stop_gradient`` of the
        states it returned, for the same inputs): when the parameters move little it is close
        to the new solution and Newton needs fewer updates (a guess only changes the cost,
        never the answer's check). Steps past the window keep the guess until the window
        reaches them.
      fallback: when Newton does not converge, return the sequential loop's trajectory instead
        of the last iterate (``info.sequential`` says it happened); what ``gated_scan`` does
        under ``jit``. A strict bool.
      window: the longest window of a Newton update, an int >= 1 (capped at ``T``): one fixed
        window; ``None`` (default): the whole remaining sequence while Newton converges, then 8
        steps once it stalls (module docstring).
      safeguard: ``True`` (default): the safe solver (windows past the verified prefix, the
        first unverified step exact, updates projected on the cell's box); ``False``: plain
        (undamped) Newton over the whole sequence, as published, for comparison. A strict
        bool.

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
      >>> bool(info.converged), bool(jnp.max(jnp.abs(zs - gated_scan(p, xs))) < 1e-4)
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
    tol = default_tol(ops.xs.dtype) if tol is None else tol
    max_iters = budget(max_iters, T)
    safeguard = boolean("safeguard", safeguard)
    wide_short = windows(window, T)  # validated either way
    schedule = (wide_short if safeguard else (max(T, 1),) * 2) + (safeguard,)
    init_tm = _initial_guess(ops, init)
    if T == 0:
        zs = jnp.zeros((B, 0, m), ops.xs.dtype)
        res = jnp.full((max_iters + 1,), jnp.nan)
        info = DeerInfo(jnp.zeros((), jnp.int32), res, jnp.array(True), jnp.array(False))
    else:
        xs_tm, mask = time_major(ops, False)
        zs_tm, info = _solve_jit(
            ops.params, xs_tm, ops.z0, mask, init_tm, jacobian, tol, max_iters, fallback, schedule
        )
        zs = jnp.swapaxes(zs_tm, 0, 1)
    return jnp.reshape(zs, ops.batch + (T, m)).astype(ops.out_dtype), info
