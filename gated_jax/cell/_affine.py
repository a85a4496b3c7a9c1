r"""What every Newton solver over time shares: affine scans, the residual test, the budget.

Below :mod:`gated_jax.cell.parallel` (the gated cell's DEER, quasi-DEER and minGRU scan) and
:mod:`gated_jax.cell.generic` (DEER for any step function), so both judge convergence the
same way: by the per-step residual of the returned trajectory,

.. math::

    \max_t |z[t] - f(z[t-1], x[t])| \le \max(\mathrm{tol}, 32 \epsilon) \, \max(1, \max |z|),

never by the iteration count, with at most ``min(max_iters, T)`` Newton updates.

**The safe driver** (:func:`newton_window`) runs every Newton update over a window that starts at
the first step not yet verified: iteration ``k`` makes at least the first ``k`` steps exact, and
a verified step is frozen (its affine map replaced by the constant ``z[t]``, ``A[t] = 0``), so
nothing before the window is recomputed and no rounding from it is amplified. The first
unverified step ``s`` is taken exactly, ``z[s] = f(z[s-1])`` (Picard's update, ``A[s] = 0``), so
every update verifies at least one more step: ``T`` updates always suffice. The window is the
whole remaining sequence while Newton converges (the largest residual after ``k`` updates
within ``r[0] SHRINK^(k - GRACE)``) and :data:`SHORT_WINDOW` steps once it stalls (a positive
Lyapunov exponent: Newton's prefix then grows by a few steps per update, and a short window
keeps the work per update small). A solver's ``safeguard`` keeps each update finite and trusted (the
gated cell: the box every trajectory stays in; any step: a trust region around Picard's update).

References (the safe driver): X. Gonzalez, A. Warrington, J. T. H. Smith, S. W. Linderman,
"Towards scalable and stable parallelization of nonlinear RNNs" (ELK: damping, the Picard
update as its limit), NeurIPS 2024; the sliding window past the converged prefix of parallel
MCMC and fixed-point samplers (e.g. Y. Shih et al., "Parallel sampling of diffusion models",
NeurIPS 2023).

An affine scan solves ``z[t] = A[t] z[t-1] + b[t]`` by ``lax.associative_scan`` over the
associative composition ``(A_2, b_2) o (A_1, b_1) = (A_2 A_1, A_2 b_1 + b_2)`` in
``ceil(log2 T)`` levels; ``A`` comes in one of three forms: ``"diagonal"`` ``(..., m)``,
``"dense"`` ``(..., m, m)`` or ``"heads"`` ``(..., H, h, h)`` (block-diagonal).

References:
  E. Blelloch, "Prefix sums and their applications", 1990.
  Y. H. Lim, Q. Zhu, J. Selfridge, M. F. Kasim, "Parallelizing non-linear sequential models
  over the sequence length" (DEER), ICLR 2024.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gated_jax._validate import (
    array_shape,
    check_array,
    choice,
    fail,
    finite_float,
    positive_int,
)

__all__ = [
    "DEFAULT_MAX_ITERS",
    "EPS_FACTOR",
    "JACOBIANS",
    "DeerInfo",
    "DeerNotConverged",
    "affine_scan",
    "apply",
    "budget",
    "check_solver_options",
    "combine_diag",
    "combine_full",
    "concrete",
    "default_tol",
    "last_residual",
    "merge_heads",
    "residual",
    "residual_bound",
    "scan_levels",
    "shift",
    "solve_reverse_tm",
    "solve_tm",
    "split_heads",
    "transpose",
]

JACOBIANS = ("full", "diagonal")
"""The ``jacobian`` options of :func:`gated_deer`: DEER's full Jacobians, quasi-DEER's diagonal."""


class DeerInfo(NamedTuple):
    """What the Newton solver of :func:`gated_deer` did.

    Attributes:
      iterations: the number of Newton updates (affine scans) run, an int32 scalar; ``0`` when
        the initial guess already solved the recurrence, ``1`` for ``W_z = None``.
      residuals: ``(min(max_iters, T) + 1,)``: per pass ``k``, the largest per-step residual
        ``|z_k[t] - f(z_k[t-1], x[t])|`` of the iterate over the steps that pass examined (its
        window, from the first step not yet verified; ``k = 0`` the initial guess); NaN past
        ``iterations``. The residual, not the change between iterates, is what convergence is
        judged by: it is zero exactly on a trajectory of the cell.
      converged: a bool scalar: every step of the returned trajectory was verified within
        ``max(tol, 32 eps) * max(1, max |z|)`` (``eps`` the dtype's machine epsilon).
      sequential: a bool scalar: the returned trajectory is the sequential loop's, run because
        Newton did not converge (only with ``fallback=True``, as ``gated_scan`` does under
        ``jit``); the states are then exact and ``converged`` still says Newton did not get there.
      work: step evaluations, an int32 scalar: the window lengths of every pass summed (each
        pass evaluates the step and its Jacobian once per step of its window); the sequential
        loop's work is ``T``. ``None`` where a solver does not report it.
      peak: ``max |z|`` over the initial guess and every iterate (NaN if one was NaN): the
        evidence that no iterate overflowed. ``None`` where not reported.
      verified: an int32 scalar: the steps ``0 .. verified - 1`` are verified (``T`` when
        converged). ``None`` where not reported.
    """

    iterations: jax.Array
    residuals: jax.Array
    converged: jax.Array
    sequential: jax.Array
    work: jax.Array | None = None
    peak: jax.Array | None = None
    verified: jax.Array | None = None


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


def combine_diag(e1, e2):
    a1, b1 = e1
    a2, b2 = e2
    return a2 * a1, a2 * b1 + b2


def combine_full(e1, e2):
    a1, b1 = e1
    a2, b2 = e2
    return a2 @ a1, jnp.einsum("...ij,...j->...i", a2, b1) + b2


def split_heads(A, v, form: str):
    """``v`` ``(..., m)`` as ``(..., H, h)`` for a ``"heads"`` ``A`` (``(..., H, h, h)``)."""
    return jnp.reshape(v, v.shape[:-1] + A.shape[-3:-1]) if form == "heads" else v


def merge_heads(v, form: str):
    return jnp.reshape(v, v.shape[:-2] + (-1,)) if form == "heads" else v


def apply(A, z, form: str):
    """``A z`` for ``A`` of ``form``."""
    if form == "diagonal":
        return A * z
    return merge_heads(jnp.einsum("...ij,...j->...i", A, split_heads(A, z, form)), form)


def transpose(A, form: str):
    """``A^T`` of ``form`` (a diagonal ``A`` is its own transpose)."""
    return A if form == "diagonal" else jnp.swapaxes(A, -1, -2)


def solve_tm(A, b, z0, form: str):
    """``z[t] = A[t] z[t-1] + b[t]``, ``z[-1] = z0``, time on axis 0; returns ``z`` like ``b``."""
    if b.shape[0] == 0:
        return b
    b = b.at[0].add(apply(A[0], z0, form))
    fn = combine_diag if form == "diagonal" else combine_full
    return merge_heads(lax.associative_scan(fn, (A, split_heads(A, b, form)), axis=0)[1], form)


def solve_reverse_tm(A, b, form: str):
    """``z[t] = A[t] z[t+1] + b[t]``, ``z[T] = 0`` (the adjoint's direction), time on axis 0."""
    flip = lambda a: jnp.flip(a, axis=0)
    return flip(solve_tm(flip(A), flip(b), jnp.zeros_like(b[0]), form))


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
    z = solve_tm(
        jnp.moveaxis(jnp.asarray(A, dt), -2 if diagonal else -3, 0),
        jnp.moveaxis(jnp.asarray(b, dt), -2, 0),
        jnp.asarray(z0, dt),
        "diagonal" if diagonal else "dense",
    )
    return jnp.moveaxis(z, 0, -2)


def shift(zs, z0):
    """``zprev[t] = z[t-1]`` with ``zprev[0] = z0``."""
    return jnp.concatenate([z0[None], zs[:-1]], axis=0)


EPS_FACTOR = 32
"""The residual bound's floor, in machine epsilons of the dtype (see :class:`DeerInfo`)."""


def residual_bound(tol: float, dtype) -> float:
    """The per-step residual, relative to ``max(1, max |z|)``, below which a trajectory counts as
    solved: ``max(tol, 32 eps)``; a ``tol`` below the dtype's rounding cannot be certified."""
    return max(float(tol), EPS_FACTOR * float(jnp.finfo(dtype).eps))


def residual(zs, fz):
    """``(max_t |z[t] - f(z[t-1])|, max |z|)`` of one iterate (NaN-propagating)."""
    return jnp.max(jnp.abs(zs - fz)), jnp.max(jnp.abs(zs))


def default_tol(dtype) -> float:
    return 1e-12 if jnp.dtype(dtype) == jnp.dtype(jnp.float64) else 1e-5


DEFAULT_MAX_ITERS = 100
"""``max_iters=None`` means ``min(T, DEFAULT_MAX_ITERS)`` Newton updates."""


SHORT_WINDOW = 8
"""The short window of the default schedule (``window=None``), in steps."""


def windows(window: int | None, T: int) -> tuple[int, int]:
    """``(wide, short)`` window lengths: ``window=None`` gives ``(T, min(T, SHORT_WINDOW))``,
    the adaptive schedule; an int ``w >= 1`` one fixed window ``min(w, T)``."""
    window = positive_int("window", window, allow_none=True)
    if window is None:
        return max(1, T), max(1, min(T, SHORT_WINDOW))
    return (max(1, min(T, window)),) * 2


def check_solver_options(jacobian, tol, max_iters) -> tuple[str, float | None, int | None]:
    """Validate ``jacobian``, ``tol`` (a float > 0 or None) and ``max_iters`` (an int >= 1 or
    None)."""
    choice("jacobian", jacobian, JACOBIANS)
    tol = finite_float("tol", tol, minimum=0.0, strict=True, allow_none=True)
    max_iters = positive_int("max_iters", max_iters, allow_none=True)
    return jacobian, tol, max_iters


def last_residual(info: DeerInfo) -> str:
    """The last iterate's residual as text for an error message (``"(traced)"`` where it has
    no value: under an eager ``jax.grad`` the residuals are tracers with a value, under ``jit``
    they are not)."""
    try:
        return f"{float(info.residuals[int(info.iterations)]):.3g}"
    except jax.errors.ConcretizationTypeError:
        return "(traced)"


def concrete(x) -> bool | None:
    """``bool(x)`` when ``x`` has a value (eager evaluation), else ``None`` (under ``jit``)."""
    try:
        return bool(x)
    except jax.errors.ConcretizationTypeError:
        return None


def budget(max_iters: int | None, T: int) -> int:
    """The Newton updates allowed: ``max_iters`` (``None``: ``DEFAULT_MAX_ITERS``) capped at ``T``.

    Iteration ``k`` makes the first ``k`` steps exact, so ``T`` updates solve the recurrence in
    exact arithmetic; in floating point more cannot help (they re-amplify the same rounding on
    an expanding cell), and the cap keeps the residual buffer at ``T + 1`` entries."""
    return max(1, min(T, DEFAULT_MAX_ITERS if max_iters is None else max_iters))


# --------------------------------------------------------------------------------------------
# the safe Newton driver shared by both solvers: a window past the converged prefix, the first
# unverified step taken exactly (Picard), untrusted updates replaced by Picard's


def _per_step(x):
    """``max`` of ``|x|`` over every axis but time (axis 0); NaN-propagating."""
    return jnp.max(jnp.abs(x), axis=tuple(range(1, x.ndim))) if x.ndim > 1 else jnp.abs(x)


def _lead_mask(mask, like):
    """A ``(W,)`` bool mask reshaped to broadcast against ``like`` (time on axis 0)."""
    return jnp.reshape(mask, mask.shape + (1,) * (like.ndim - 1))


class _State(NamedTuple):
    k: jax.Array  # Newton updates taken
    zs: jax.Array  # the iterate, (T, ...)
    s: jax.Array  # the first step not yet verified (steps < s are final)
    res: jax.Array  # per pass: the largest residual over the window's unverified steps
    pmax: jax.Array  # max |z| over the verified prefix
    peak: jax.Array  # max |z| over every iterate
    work: jax.Array  # step evaluations (window lengths summed over passes)
    narrow: jax.Array  # the short window is in use (from the first wide pass that stalled)
    stop: jax.Array


SHRINK = 0.8
"""Wide passes go on while the largest residual after ``k`` updates is within
``r[0] SHRINK^(k - GRACE)`` (a fall by this factor per update on average, after ``GRACE``
updates of slack); the first wide pass above it hands over to the short window."""

GRACE = 2
"""Updates of slack before the wide passes must cut the residual (see :data:`SHRINK`)."""


class _Static(NamedTuple):
    form: str
    bound: float
    max_iters: int
    safe: bool


def _pass(st: _State, W: int, linearise, safeguard, z0, o: _Static) -> _State:
    """One pass over the window of ``W`` steps at the first unverified step: verify, then update
    (``o.safe=False``: plain Newton over the whole sequence, every step checked every pass)."""
    T = st.zs.shape[0]
    start = jnp.clip(st.s, 0, T - W)
    win = lax.dynamic_slice_in_dim(st.zs, start, W, axis=0)
    before = jnp.where(start == 0, z0, st.zs[jnp.maximum(start - 1, 0)])
    A, b, f = linearise(start, shift(win, before))
    t = start + jnp.arange(W)
    since = st.s if o.safe else jnp.zeros_like(st.s)  # steps before `since` are final
    r, size = _per_step(win - f), _per_step(win)
    # step t counts as solved against max(1, max |z| up to t): a scale the final trajectory has
    cmax = jnp.maximum(jnp.maximum(1.0, st.pmax), lax.cummax(size, axis=0))
    bad = (t >= since) & jnp.logical_not(r <= o.bound * cmax)
    first = jnp.where(jnp.any(bad), jnp.argmax(bad), W).astype(st.s.dtype)
    s = start + first
    pmax = jnp.maximum(st.pmax, jnp.max(jnp.where(t < s, size, 0.0))) if o.safe else st.pmax
    res = st.res.at[st.k].set(jnp.max(jnp.where(t >= since, r, 0.0)))
    stop = (s >= T) | (st.k >= o.max_iters)

    def update():
        if not o.safe:
            new = solve_tm(A, b, before, o.form)
            zs = lax.dynamic_update_slice_in_dim(st.zs, new, start, 0)
            return zs, jnp.maximum(st.peak, jnp.max(jnp.abs(new)))
        frozen, exact = _lead_mask(t < s, win), _lead_mask(t == s, win)
        # verified steps reproduce themselves (A = 0, b = z) and the first unverified one is
        # taken exactly, z[s] = f(z[s-1]) (A = 0, b = f): every update solves one more step
        Ak = jnp.where(_lead_mask(t <= s, A), jnp.zeros_like(A), A)
        bk = jnp.where(frozen, win, jnp.where(exact, f, b))
        new = jnp.where(frozen, win, safeguard(start, solve_tm(Ak, bk, before, o.form), f))
        zs = lax.dynamic_update_slice_in_dim(st.zs, new, start, 0)
        return zs, jnp.maximum(st.peak, jnp.max(jnp.abs(new)))

    zs, peak = lax.cond(stop, lambda: (st.zs, st.peak), update)
    k = st.k + jnp.where(stop, 0, 1)
    return st._replace(k=k, zs=zs, s=s, res=res, pmax=pmax, peak=peak, work=st.work + W, stop=stop)


def newton_window(
    linearise,
    safeguard,
    z0,
    init,
    form: str,
    bound: float,
    max_iters: int,
    windows: tuple[int, int],
    safe: bool = True,
):
    """Safe Newton over time on ``init`` ``(T, ...)``; returns ``(zs, DeerInfo)``.

    ``windows = (wide, short)``: passes run over ``wide`` steps until Newton stalls (the largest
    residual above the envelope of :data:`SHRINK` and :data:`GRACE`), then over ``short`` steps
    to the end (equal: one fixed window). ``linearise(start, zprev)`` gives ``(A, b, f)`` of
    the window's steps from ``start`` linearised at ``zprev`` ``(W, ...)``;
    ``safeguard(start, new, f)`` keeps an update finite and trusted. ``safe=False``: plain
    Newton (``windows`` must be ``(T, T)``).
    """
    wide, short = windows
    args = (linearise, safeguard, z0, _Static(form, bound, max_iters, safe))

    def body(st: _State) -> _State:
        if wide == short:
            return _pass(st, wide, *args)
        nxt = lax.cond(st.narrow, lambda: _pass(st, short, *args), lambda: _pass(st, wide, *args))
        # stalled: the largest residual above the envelope r[0] SHRINK^(k - GRACE)
        k = st.k
        envelope = nxt.res[0] * SHRINK ** (k - GRACE).astype(nxt.res.dtype)
        stalled = (k >= 1) & jnp.logical_not(nxt.res[k] <= envelope)
        return nxt._replace(narrow=st.narrow | stalled)

    zero, false = jnp.zeros((), jnp.int32), jnp.zeros((), bool)
    res0 = jnp.full((max_iters + 1,), jnp.nan, init.dtype)
    peak0 = jnp.max(jnp.abs(init))
    pmax0 = jnp.zeros((), init.dtype)
    st = _State(zero, init, zero, res0, pmax0, peak0, zero, false, false)
    st = lax.while_loop(lambda st: jnp.logical_not(st.stop), body, st)
    return st.zs, DeerInfo(st.k, st.res, st.s >= init.shape[0], false, st.work, st.peak, st.s)
