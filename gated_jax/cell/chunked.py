r"""The chunked hybrid (multiple shooting): sequential inside chunks, parallel over chunks.

Time is cut into ``C = ceil(T / L)`` chunks of ``L`` steps. Given a guess ``s_k`` of the state
before chunk ``k`` (``s_0 = z0``, exact), every chunk runs the recurrence sequentially from its
own start, all chunks at once (the chunk axis is a batch axis of the loop). Chunk ``k`` is the
map ``e_k = F_k(s_k)`` from its start to its last state, and the trajectory is a trajectory of
the cell exactly when the boundaries match, ``s_{k+1} = F_k(s_k)``: only ``C - 1`` states are
unknown. Newton's method on them linearises each chunk map at the current guess,

.. math::

    s^{new}_{k+1} = F_k(s_k) + G_k \, (s^{new}_k - s_k), \qquad
    G_k = \frac{\partial F_k}{\partial s_k} = J[kL + L - 1] \cdots J[kL + 1] \, J[kL],

an affine recurrence over the ``C`` chunks, solved by one affine scan
(:func:`~gated_jax.cell.parallel.affine_scan`'s combine) in ``ceil(log2 C)`` levels. The chunk
Jacobian product ``G_k`` is carried along the chunk's own loop, ``P <- J[t] P`` with
``J[t] P = c P + s (W_z P)``, in ``w_z``'s structure: elementwise for a diagonal ``w_z`` and
for minGRU (``(m,)``), per head for ``(H, h, h)`` (``H`` blocks of ``h x h``), dense
``(m, m)`` otherwise. As for DEER, update ``k`` makes the first ``k`` chunk starts exact, so
``C - 1`` updates solve the recurrence in exact arithmetic; on contractive cells a few do.

**Convergence** is judged as for :func:`~gated_jax.cell.gated_deer`, by the per-step residual
of the trajectory, ``max_t |z[t] - f(z[t-1], x[t])| <= max(tol, 32 eps) max(1, max |z|)``.
Inside a chunk every step is the cell's own step (the loop that produced it), so only the
first step of each chunk can miss: each iteration measures
``|f(s_k, x[kL]) - f(e_{k-1}, x[kL])|`` over the chunk starts, and the returned states are
measured the same way (:class:`~gated_jax.cell.DeerInfo`). Without convergence, under
``fallback``, the starts are recomputed by the sequential loop (chunk after chunk, storing only
the ``C`` starts) and the states from them: the sequential trajectory. With ``W_z = None``
(minGRU) every chunk map is affine, ``F_k(s) = G_k s + F_k(0)``: one pass from the zero guess
gives the chunk summaries ``(G_k, F_k(0))``, one update composes them into the exact starts,
and one pass from those gives the states: exact, no iteration.

**Cost** per iteration (``B`` sequences): work ``O(T B m)`` (minGRU, diagonal), ``O(T B m h^2)``
(heads), ``O(T B m^3)`` (dense: the chunk products are matrix products), plus the boundary
solve ``O(C B m)`` / ``O(C B m h^2)`` / ``O(C B m^3)``; depth ``L + ceil(log2 C)`` steps.
With ``k`` updates: ``k + 1`` chunk passes with Jacobian products and one pass storing the
states, so work ``(k + 2)`` times that of a pass and depth ``(k + 2) L + k log2 C`` (minGRU:
two passes, depth ``2 L + log2 C``). Memory: the states, a chunk-layout copy of the inputs and
``C B`` Jacobian products (``m``, ``m h`` or ``m^2`` entries each); the input projections are
computed inside the loops, never stored for all ``T`` steps. The default
``L = ceil(sqrt(T))`` balances the depth of a pass against the worst-case number of
iterations (``C - 1``).

**Gradients** are exact for the sequential recurrence, by implicit differentiation at the
returned trajectory, with a chunked adjoint: each chunk runs the closed-form reverse adjoint
``delta[t] = g[t] + J[t+1]^T delta[t+1]`` from a zero incoming gradient (``r_k``, what its own
outputs send to its start), the total gradient at each chunk start solves the reverse affine
recurrence ``R_k = r_k + G_k^T R_{k+1}`` (``R_C = 0``), and a second chunk pass from the
incoming ``R_{k+1}`` gives every step's gate and candidate gradients, then the weight
gradients as one large matmul: depth ``3 L + log2 C``.

The same chunk functions run one chunk per device in
:func:`gated_jax.cell.sharded.sequence_parallel_scan`: every function here takes a
:class:`Chunks` that says how a chunk sees the others (here: all chunks are a batch axis of one
array; there: an all-gather over the mesh axis).

References:
  A. Bellen, M. Zennaro, "Parallel algorithms for initial-value problems for difference and
  differential equations", J. Comput. Appl. Math. 25, 1989 (multiple shooting for recurrences).
  J.-L. Lions, Y. Maday, G. Turinici, "A parareal in time discretization of PDEs", 2001.
  Y. H. Lim, Q. Zhu, J. Selfridge, M. F. Kasim, "Parallelizing non-linear sequential models
  over the sequence length" (DEER), ICLR 2024.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gated_jax._validate import boolean, check_jacobians_fit, fail, positive_int
from gated_jax.cell import step as _step
from gated_jax.cell._affine import (
    DeerInfo,
    DeerNotConverged,
    apply,
    budget,
    check_solver_options,
    concrete,
    default_tol,
    last_residual,
    residual_bound,
    solve_reverse_tm,
    solve_tm,
    split_heads,
    transpose,
)
from gated_jax.cell._core import (
    Operands,
    ScanOptions,
    add_params,
    input_grads,
    param_grads,
    prepare,
    time_major,
)
from gated_jax.cell.params import GatedParams

__all__ = ["Chunks", "chunk_length", "chunked", "gated_chunked"]


def chunk_length(T: int, chunk: int | None = None) -> int:
    """The chunk length ``L``: ``chunk`` (capped at ``T``), or by default ``ceil(sqrt(T))``,
    which balances a pass's depth ``L`` against the ``C - 1 ~ T / L`` updates that are the
    worst case (at least 1).

    Examples:
      >>> from gated_jax.cell.chunked import chunk_length
      >>> chunk_length(4096), chunk_length(1000), chunk_length(1000, 300), chunk_length(5, 8)
      (64, 32, 300, 5)
    """
    if chunk is None:
        return max(1, math.isqrt(max(T - 1, 0)) + 1) if T > 1 else 1
    return max(1, min(int(chunk), T))


def structure(w_z) -> str:
    """The form of a chunk's Jacobian product: ``"diagonal"`` (minGRU, diagonal ``w_z``),
    ``"heads"`` or ``"dense"`` (:mod:`gated_jax.cell._affine`'s forms)."""
    kind = _step.recurrent_kind(w_z)
    return "diagonal" if kind in (None, "diagonal") else str(kind)


class Chunks(NamedTuple):
    """How the chunk held here sees the others. Arrays of one chunk have the chunk's own
    leading dims; ``gather`` stacks a value of every chunk on a new axis 0 (the same on every
    chunk), ``local`` picks this chunk's entry of such a stack, ``total`` sums a value over all
    chunks. :data:`ALL` holds every chunk as axis 0 of its batch dims (one device);
    :func:`gated_jax.cell.sharded.sequence_parallel_scan` holds one chunk per device."""

    gather: Callable
    local: Callable
    total: Callable


def _same(x):
    return x


ALL = Chunks(_same, _same, _same)
"""Every chunk here, as the leading batch axis of the time-major ``(L, C, B, .)`` arrays."""


# --------------------------------------------------------------------------------------------
# one chunk: time-major arrays (L, *batch, m), its start state (*batch, m)


def _identity(form: str, w_z, like):
    """The identity Jacobian product in ``form``, with ``like``'s leading dims."""
    lead = like.shape[:-1]
    if form == "diagonal":
        return jnp.ones_like(like)
    if form == "dense":
        eye = jnp.eye(like.shape[-1], dtype=like.dtype)
        return jnp.broadcast_to(eye, lead + eye.shape)
    H, h = w_z.shape[:2]
    return jnp.broadcast_to(jnp.eye(h, dtype=like.dtype), lead + (H, h, h))


def jac_times(w_z, c, s, P, form: str):
    """``J P`` for the step Jacobian ``J = diag(c) + diag(s) W_z`` and ``P`` in ``form``:
    ``J P = c P + s (W_z P)``, one ``(m, m) x (m, m)`` product per sequence (dense), per head
    (heads), elementwise (diagonal)."""
    if form == "diagonal":
        return _step.jacobian_blocks(w_z, c, s) * P
    if form == "dense":
        WP = jnp.einsum("ij,...jk->...ik", w_z, P)
        return c[..., :, None] * P + s[..., :, None] * WP
    ch, sh = split_heads(P, c, form), split_heads(P, s, form)
    WP = jnp.einsum("gij,...gjk->...gik", w_z, P)
    return ch[..., :, None] * P + sh[..., :, None] * WP


def chunk_map(p: GatedParams, x, mask, start, form: str):
    """One pass of a chunk from ``start`` with its Jacobian product: ``(e, G, zmax)``, the
    last state, ``G = J[L-1] ... J[0]`` in ``form`` and ``max |z|`` over the chunk's states.
    The input projections are computed in the step (no ``T``-step array besides ``x``)."""

    def body(carry, inp):
        z, P, zmax = carry
        xt, mt = inp
        at, ut = _step.projections(p, xt)
        z_new, c = _step.update(p.w_z, z, at, ut, mt)
        P = jac_times(p.w_z, c, _step.jacobian_factor(z, ut, c), P, form)
        return (z_new, P, jnp.maximum(zmax, jnp.max(jnp.abs(z_new)))), None

    zero = jnp.zeros((), start.dtype)
    (e, G, zmax), _ = lax.scan(body, (start, _identity(form, p.w_z, start), zero), (x, mask))
    return e, G, zmax


def chunk_states(p: GatedParams, x, mask, start):
    """The chunk's states ``(L, *batch, m)`` from ``start``: the cell's own loop."""

    def body(z, inp):
        xt, mt = inp
        at, ut = _step.projections(p, xt)
        z, _ = _step.update(p.w_z, z, at, ut, mt)
        return z, z

    return lax.scan(body, start, (x, mask))[1]


# --------------------------------------------------------------------------------------------
# the boundaries: stacks over the chunks (C, *batch, .)


def first_steps(p: GatedParams, x, mask, comm: Chunks):
    """Every chunk's first-step input terms, stacked: ``(a0, u0, mask0)``."""
    a0, u0 = _step.projections(p, comm.gather(x[0]))
    return a0, u0, None if mask is None else comm.gather(mask[0])


def boundary_residual(p: GatedParams, heads, S, E):
    """``max_{k >= 1} |f(s_k, x[kL]) - f(e_{k-1}, x[kL])|``: the per-step residual at each
    chunk's first step (every other step is the cell's own), for starts ``S`` and ends ``E``."""
    if S.shape[0] == 1:
        return jnp.zeros((), S.dtype)
    a0, u0, m0 = heads
    m1 = None if m0 is None else m0[1:]
    f = lambda z: _step.update(p.w_z, z, a0[1:], u0[1:], m1)[0]
    return jnp.max(jnp.abs(f(S[1:]) - f(E[:-1])))


def newton_starts(z0, S, E, G, form: str):
    """One Newton update of the chunk starts: ``s_0 = z0``,
    ``s_{k+1} = e_k + G_k (s_k^{new} - s_k)``, by one affine scan over the chunks."""
    if S.shape[0] == 1:
        return z0[None]
    rest = solve_tm(G[:-1], E[:-1] - apply(G[:-1], S[:-1], form), z0, form)
    return jnp.concatenate([z0[None], rest], axis=0)


def previous_firsts(z0, last, comm: Chunks):
    """The state before each chunk's first step in the trajectory: ``z0`` for chunk 0, the
    previous chunk's last state otherwise (this chunk's entry)."""
    lasts = comm.gather(last)
    return comm.local(jnp.concatenate([z0[None], lasts[:-1]], axis=0))


def newton(p, x, mask, z0, S0, comm: Chunks, bound: float, max_iters: int):
    """Newton on the chunk starts ``S0`` ``(C, *batch, m)`` (the same on every chunk) until the
    boundary residual is within ``bound * max(1, max |z|)`` or after ``max_iters`` updates;
    stops early on a non-finite residual. Returns ``(k, S, residuals, ok)``, ``ok`` the last
    iterate's test. With ``W_z = None``
    every chunk map is affine and one update from any guess is exact."""
    form = structure(p.w_z)
    heads = first_steps(p, x, mask, comm)
    res0 = jnp.full((max_iters + 1,), jnp.nan, S0.dtype)

    def measure(S):
        e, G, zmax = chunk_map(p, x, mask, comm.local(S), form)
        E, G, zmax = comm.gather(e), comm.gather(G), jnp.max(comm.gather(zmax))
        return E, G, zmax, boundary_residual(p, heads, S, E)

    if p.w_z is None:  # affine chunk maps: one update from any guess is exact
        E, G, _, r = measure(S0)
        S = newton_starts(z0, S0, E, G, form)
        return jnp.ones((), jnp.int32), S, res0.at[0].set(r), jnp.ones((), bool)

    def body(state):
        k, S, res, _, _ = state
        E, G, zmax, r = measure(S)
        ok = jnp.isfinite(r) & (r <= bound * jnp.maximum(1.0, zmax))
        stop = ok | (k >= max_iters) | jnp.logical_not(jnp.isfinite(r))
        new = lax.cond(stop, lambda: S, lambda: newton_starts(z0, S, E, G, form))
        return k + jnp.where(stop, 0, 1), new, res.at[k].set(r), ok, stop

    false = jnp.zeros((), bool)
    state = (jnp.zeros((), jnp.int32), S0, res0, false, false)
    k, S, res, ok, _ = lax.while_loop(lambda s: jnp.logical_not(s[4]), body, state)
    return k, S, res, ok


def solve(p, x, mask, z0, S0, comm: Chunks, tol: float, max_iters: int, exact_starts=None):
    """The chunked solve of one chunk's time-major inputs ``x`` ``(L, *batch, n)``:
    ``(zs, starts, DeerInfo)``. ``exact_starts``: ``S -> `` the exact starts by a sequential
    route, run (a ``lax.cond`` on the starts alone) when Newton did not converge.

    ``residuals[k]`` (``k = iterations``) is the returned trajectory's own per-step residual:
    inside a chunk every step is the cell's step (the loop that produced it), so it is measured
    at the chunk starts, on the returned states; ``converged`` is its test and Newton's.
    Earlier entries are the iterates' boundary residuals."""
    bound = residual_bound(tol, z0.dtype)
    if p.w_z is None:  # minGRU: one update from the zero guess, exact
        S0 = jnp.zeros_like(S0).at[0].set(z0)
    k, S, res, ok = newton(p, x, mask, z0, S0, comm, bound, max_iters)
    if exact_starts is not None:
        S = lax.cond(ok, lambda: S, lambda: exact_starts(S))
    zs = chunk_states(p, x, mask, comm.local(S))
    r = boundary_residual(p, first_steps(p, x, mask, comm), S, comm.gather(zs[-1]))
    scale = jnp.max(comm.gather(jnp.max(jnp.abs(zs))))
    good = jnp.isfinite(r) & (r <= bound * jnp.maximum(1.0, scale))
    seq = jnp.logical_not(ok) if exact_starts is not None else jnp.zeros((), bool)
    return zs, S, DeerInfo(k, res.at[k].set(r), ok & good, seq)


def chunk_end(p: GatedParams, x, mask, start):
    """The chunk's last state from ``start`` (the loop, nothing stored)."""

    def body(z, inp):
        xt, mt = inp
        at, ut = _step.projections(p, xt)
        return _step.update(p.w_z, z, at, ut, mt)[0], None

    return lax.scan(body, start, (x, mask))[0]


def sequential_starts(p: GatedParams, x, mask, z0):
    """The exact chunk starts ``(C, B, m)`` of the one-device layout ``(L, C, B, .)``: the
    chunks one after another, each from the previous one's last state (work ``T``, depth
    ``T``: the sequential loop, storing only the ``C`` starts)."""

    def one(z, inp):
        xk, mk = inp
        return chunk_end(p, xk, mk, z), z

    per_chunk = (jnp.swapaxes(x, 0, 1), None if mask is None else jnp.swapaxes(mask, 0, 1))
    return lax.scan(one, z0, per_chunk)[1]


def adjoint_pass(p: GatedParams, x, mask, zs, first, g, r0, grads: bool):
    """The closed-form reverse adjoint over one chunk, ``delta[t] = g[t] + J[t+1]^T
    delta[t+1]`` from the incoming ``r0`` (the gradient at the chunk's last state from later
    steps), recomputing each step's gate from the states and inputs. Returns ``(r, dp, dx)``:
    the gradient at the chunk's start and, with ``grads``, the weight gradients accumulated
    step by step and ``dl/dx`` per step (nothing ``T`` steps long is stored besides ``dx``)."""
    zp_all = jnp.concatenate([first[None], zs], axis=0)
    acc0 = jax.tree.map(jnp.zeros_like, p) if grads else None
    three = lambda v: jnp.reshape(v, (1, -1, v.shape[-1]))  # (1, steps, .) for param_grads

    def body(carry, inp):
        r, acc = carry
        xt, mt, zp, zt, gt = inp
        at, ut = _step.projections(p, xt)
        c = _step.gate(p.w_z, zp, at, mt)
        s = _step.jacobian_factor_from_states(zp, zt, c)
        r, pbar, ubar = _step.transpose_step(p.w_z, c, s, gt + r)
        if not grads:
            return (r, acc), None
        acc = add_params(acc, param_grads(p, three(xt), three(zp), three(pbar), three(ubar)))
        return (r, acc), input_grads(p, pbar, ubar)

    inputs = (x, mask, zp_all[:-1], zs, g)
    (r, dp), dx = lax.scan(body, (r0, acc0), inputs, reverse=True)
    return r, dp, dx


def backward(p, xs, mask, zs, z0, g, comm: Chunks):
    """The chunked adjoint at the trajectory ``zs`` for the cotangents ``g`` (one chunk's
    time-major arrays): ``(dparams, dxs, dz0)``, ``dparams`` already summed over chunks."""
    form = structure(p.w_z)
    first = previous_firsts(z0, zs[-1], comm)
    _, G, _ = chunk_map(p, xs, mask, first, form)
    r_local, _, _ = adjoint_pass(p, xs, mask, zs, first, g, jnp.zeros_like(first), False)
    # R_k = r_k + G_k^T R_{k+1}, R_C = 0: the total gradient at every chunk start
    R = solve_reverse_tm(transpose(comm.gather(G), form), comm.gather(r_local), form)
    incoming = comm.local(jnp.concatenate([R[1:], jnp.zeros_like(R[:1])], axis=0))
    _, dp, dx = adjoint_pass(p, xs, mask, zs, first, g, incoming, True)
    return jax.tree.map(comm.total, dp), dx, R[0]


# --------------------------------------------------------------------------------------------
# one device: every chunk as a batch axis


def to_chunks(v, L: int, fill):
    """Time-major ``(T, B, .)`` to ``(L, C, B, .)``, padding the last chunk with ``fill``."""
    T = v.shape[0]
    C = -(-T // L)
    pad = jnp.full((C * L - T,) + v.shape[1:], fill, v.dtype)
    v = jnp.concatenate([v, pad], axis=0) if C * L > T else v
    return jnp.swapaxes(jnp.reshape(v, (C, L) + v.shape[1:]), 0, 1)


def from_chunks(v, T: int):
    """``(L, C, B, .)`` back to time-major ``(T, B, .)``."""
    v = jnp.swapaxes(v, 0, 1)
    return jnp.reshape(v, (-1,) + v.shape[2:])[:T]


def _chunked_operands(xs_tm, mask, L: int):
    """``(xs, mask)`` in the chunk layout; padded steps are masked (identity) steps."""
    T, B = xs_tm.shape[:2]
    if mask is None and T % L:
        mask = jnp.ones((T, B), bool)
    return to_chunks(xs_tm, L, 0), None if mask is None else to_chunks(mask, L, False)


def _solve(p, xs_tm, z0, mask, init, L, tol, max_iters, fallback):
    T = xs_tm.shape[0]
    xc, cm = _chunked_operands(xs_tm, mask, L)
    S0 = jnp.concatenate([z0[None], init[L - 1 : T - 1 : L]], axis=0)
    # never a wrong trajectory: without convergence, the starts by the sequential loop
    exact = (lambda S: sequential_starts(p, xc, cm, z0)) if fallback else None
    zs, _, info = solve(p, xc, cm, z0, S0, ALL, tol, max_iters, exact)
    return from_chunks(zs, T), info


def _solve_fwd(p, xs_tm, z0, mask, init, L, tol, max_iters, fallback):
    zs, info = _solve(p, xs_tm, z0, mask, init, L, tol, max_iters, fallback)
    return (zs, info), (p, xs_tm, z0, mask, zs)


def _solve_bwd(L, tol, max_iters, fallback, res, cts):
    p, xs_tm, z0, mask, zs = res
    T = xs_tm.shape[0]
    xc, cm = _chunked_operands(xs_tm, mask, L)
    # padded steps come after every real one, so no cotangent reaches them: zero states do
    dp, dx, dz0 = backward(p, xc, cm, to_chunks(zs, L, 0), z0, to_chunks(cts[0], L, 0), ALL)
    return dp, from_chunks(dx, T), dz0, None, None


_solve_vjp = jax.custom_vjp(_solve, nondiff_argnums=(5, 6, 7, 8))
_solve_vjp.defvjp(_solve_fwd, _solve_bwd)


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8))
def _solve_jit(p, xs_tm, z0, mask, init, L, tol, max_iters, fallback):
    return _solve_vjp(p, xs_tm, z0, mask, init, L, tol, max_iters, fallback)


def _check_fits(ops: Operands, xs, C: int) -> None:
    """The ``C B`` chunk Jacobian products (and their copies in the scan) must fit."""
    w_z, form = ops.params.w_z, structure(ops.params.w_z)
    if w_z is not None and form != "diagonal":
        width = ops.m if form == "dense" else int(w_z.shape[-1])
        check_jacobians_fit(xs, ops.batch, C, ops.m, ops.xs.dtype, copies=4, width=width)


def _not_converged(info: DeerInfo, L: int, tol: float, max_iters: int, dtype):
    residual = last_residual(info)
    return DeerNotConverged(
        f"gated_scan(method='chunked', chunk={L}) did not converge in `max_iters` "
        f"(={max_iters}) updates of the chunk starts: the trajectory's per-step residual is "
        f"{residual}, above `tol` (={tol:g}) relative to max(1, max|z|) (floor "
        f"{residual_bound(0.0, dtype):.2g} for {jnp.dtype(dtype).name}). Raise max_iters (at "
        "most T / chunk - 1 are used), take longer chunks, or use method='sequential'. Under "
        "jax.jit the sequential loop is run instead (gated_chunked(..., fallback=True) "
        "reports it)."
    )


def chunked(ops: Operands, opts: ScanOptions, chunk: int | None = None) -> jax.Array:
    """The ``"chunked"`` backend of :func:`~gated_jax.cell.gated_scan` (module docstring):
    chunks of ``chunk`` steps (``None``: :func:`chunk_length`), zero initial guess.

    Work per iteration ``O(T B m)`` (minGRU, diagonal), ``O(T B m h^2)`` (heads) or
    ``O(T B m^3)`` (dense), depth ``L + log2(T / L)``; ``k`` updates cost ``k + 2`` chunk
    passes. Eagerly, a solve that did not converge raises :class:`DeerNotConverged`; under
    ``jit`` the compiled program runs the sequential loop instead.
    """
    T, B, m = ops.T, ops.xs.shape[0], ops.m
    if T == 0:
        return jnp.zeros((B, 0, m), ops.z0.dtype) if opts.return_sequence else ops.z0
    L = chunk_length(T, chunk)
    C = -(-T // L)
    _check_fits(ops, ops.xs, C)
    tol = default_tol(ops.xs.dtype) if opts.tol is None else opts.tol
    max_iters = budget(opts.max_iters, max(1, C - 1))
    xs_tm, mask = time_major(ops, opts.reverse)
    init = jnp.zeros((T, B, m), ops.xs.dtype)
    zs, info = _solve_jit(ops.params, xs_tm, ops.z0, mask, init, L, tol, max_iters, True)
    if concrete(info.converged) is False:
        raise _not_converged(info, L, tol, max_iters, ops.xs.dtype)
    if not opts.return_sequence:
        return zs[-1]
    zs = jnp.flip(zs, 0) if opts.reverse else zs
    return jnp.swapaxes(zs, 0, 1)


def gated_chunked(
    params: GatedParams,
    xs: jax.Array,
    z0: jax.Array | None = None,
    *,
    chunk: int | None = None,
    tol: float | None = None,
    max_iters: int | None = None,
    init: jax.Array | None = None,
    fallback: bool = False,
) -> tuple[jax.Array, DeerInfo]:
    r"""Solve the gated recurrence by the chunked hybrid (multiple shooting).

    Sequential inside chunks of ``L`` steps, all chunks at once, Newton on the ``C - 1``
    unknown chunk starts (module :mod:`gated_jax.cell.chunked`):

    .. math::

        s^{new}_{k+1} = F_k(s_k) + G_k (s^{new}_k - s_k), \qquad
        G_k = J[kL + L - 1] \cdots J[kL],

    until the trajectory's per-step residual is within
    ``max(tol, 32 eps) * max(1, max |z|)``, as for :func:`~gated_jax.cell.gated_deer`. Per
    update: work ``O(T m)`` (minGRU, diagonal ``w_z``), ``O(T m h^2)`` (heads) or
    ``O(T m^3)`` (dense) per sequence, depth ``L + ceil(log2 C)``; memory ``O(T m)`` plus
    ``C`` chunk Jacobian products. minGRU (``W_z = None``) is exact after one update (a pass
    for the chunk summaries, one for the states). Gradients are those of the sequential
    recurrence at the returned trajectory (implicit differentiation, a chunked adjoint).

    Args:
      params: :class:`~gated_jax.cell.GatedParams` (``w_z`` ``None``, ``(m,)``, ``(H, h, h)``
        or ``(m, m)``).
      xs: inputs ``(..., T, n)``.
      z0: initial state ``(..., m)``; ``None`` means zeros.
      chunk: the chunk length ``L``, an int >= 1 (capped at ``T``); ``None``:
        ``ceil(sqrt(T))`` (:func:`chunk_length`).
      tol: convergence tolerance, a float > 0; ``None``: ``1e-12`` in float64, ``1e-5``
        otherwise.
      max_iters: the most updates of the chunk starts, an int >= 1; ``None``: 100. At most
        ``C - 1`` are run (update ``k`` makes chunk ``k``'s start exact).
      init: an initial guess of the trajectory ``(..., T, m)`` (only the states before each
        chunk are read); ``None`` means zeros.
      fallback: without convergence, return the sequential loop's trajectory
        (``info.sequential``); a strict bool.

    Returns:
      ``(zs, info)``: ``zs`` ``(..., T, m)`` and a :class:`~gated_jax.cell.DeerInfo` whose
      ``iterations`` counts the updates of the chunk starts.

    Raises:
      ValueError: naming the argument, for bad shapes or options.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gated_jax.cell import gated_chunked, gated_scan, init_gated_params
      >>> p = init_gated_params(jax.random.key(0), 3, 4, recurrent_gate="diagonal")
      >>> xs = jax.random.normal(jax.random.key(1), (2, 50, 3))
      >>> zs, info = gated_chunked(p, xs, chunk=8)  # 7 chunks, Newton on 6 starts
      >>> bool(info.converged), bool(jnp.max(jnp.abs(zs - gated_scan(p, xs))) < 1e-5)
      (True, True)
    """
    _, tol, max_iters = check_solver_options("full", tol, max_iters)
    fallback = boolean("fallback", fallback)
    chunk = positive_int("chunk", chunk, allow_none=True)
    ops = prepare(params, xs, z0, None)
    T, B, m = ops.T, ops.xs.shape[0], ops.m
    L = chunk_length(T, chunk)
    C = -(-T // L) if T else 0
    _check_fits(ops, xs, C)
    tol = default_tol(ops.xs.dtype) if tol is None else tol
    max_iters = budget(max_iters, max(1, C - 1))
    if T == 0:
        res = jnp.full((max_iters + 1,), jnp.nan)
        info = DeerInfo(jnp.zeros((), jnp.int32), res, jnp.array(True), jnp.array(False))
        return jnp.zeros(ops.batch + (0, m), ops.out_dtype), info
    if init is None:
        init_tm = jnp.zeros((T, B, m), ops.xs.dtype)
    else:
        want = ops.batch + (T, m)
        if tuple(jnp.shape(init)) != want:
            raise fail("init", init, f"of shape {want}")
        init_tm = jnp.swapaxes(jnp.reshape(jnp.asarray(init, ops.xs.dtype), (B, T, m)), 0, 1)
    xs_tm, mask = time_major(ops, False)
    zs, info = _solve_jit(ops.params, xs_tm, ops.z0, mask, init_tm, L, tol, max_iters, fallback)
    zs = jnp.swapaxes(zs, 0, 1)
    return jnp.reshape(zs, ops.batch + (T, m)).astype(ops.out_dtype), info
