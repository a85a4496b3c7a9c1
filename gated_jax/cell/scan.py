r"""The gated cell over a sequence: :func:`gated_scan` and its closed-form BPTT, :func:`gated_bptt`.

Layout. :func:`gated_scan` validates once (:func:`_prepare` turns the user's arguments into
flat operands, :class:`Operands`), resolves its ``method`` once (:func:`resolve_method`) and
calls one backend from :data:`BACKENDS`. Every backend has the same signature,
``backend(ops, options)``, returning the states batch-first ``(B, T, m)``, or the final state
``(B, m)`` when ``options.return_sequence`` is ``False``; a time-parallel solver is one more
entry of that table. The step equation itself lives in :mod:`gated_jax.cell.step`; this module
only arranges its calls in time.

The sequential backend cuts time into blocks, a nested ``lax.scan`` over blocks, so that every
temporary is block-sized. Per block, the input projections are two einsums outside the step
loop, which does one ``(B, m) x (m, m)`` matmul per step. The backward pass is the closed form
of :func:`gated_bptt`, registered with ``jax.custom_vjp``: per block, a reverse-time loop with
one matmul per step, then the block's weight gradients as ``(m, K B) x (K B, n)`` matmuls. By
default the forward pass keeps only the states (its output): per block, the backward pass
recomputes the gate ``c`` from them with one large matmul, and its loop forms
``s = c (z[t-1] - z[t])``. ``remat`` and the final-state path keep only each block's start
state and recompute the block's forward loop.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gated_jax._validate import boolean, check_fits_in_memory, choice, fail, positive_int
from gated_jax.cell import _checks
from gated_jax.cell import step as _step
from gated_jax.cell.params import GatedParams

__all__ = ["BACKWARDS", "METHODS", "gated_bptt", "gated_scan", "resolve_method"]

BACKWARDS = ("closed_form", "autodiff")
"""The ``backward`` options of :func:`gated_scan`."""

METHODS = ("sequential", "deer", "quasi_deer", "auto")
"""The ``method`` options of :func:`gated_scan` (``"auto"`` is resolved by
:func:`resolve_method`; ``"deer"``/``"quasi_deer"`` are :mod:`gated_jax.cell.parallel`)."""

PARALLEL_METHODS = {"deer": "full", "quasi_deer": "diagonal"}
"""The time-parallel methods and the Jacobian each uses (:func:`gated_jax.cell.gated_deer`)."""


class Operands(NamedTuple):
    """Validated, flat operands in the compute dtype, and what restores the user's shapes.

    ``xs`` is ``(B, T, n)`` batch-first, ``z0`` ``(B, m)``, ``mask`` ``(T, B)`` bool (``False``
    past a sequence's length) or ``None``.
    """

    params: GatedParams
    xs: jax.Array
    z0: jax.Array
    mask: jax.Array | None
    batch: tuple[int, ...]
    T: int
    m: int
    out_dtype: jnp.dtype


class ScanOptions(NamedTuple):
    """The static options every backend receives."""

    reverse: bool
    unroll: int
    remat: bool | int
    backward: str
    return_sequence: bool = True
    tol: float | None = None
    max_iters: int | None = None


def resolve_method(method: str, platform: str | None = None) -> str:
    """The backend that ``method`` names on ``platform`` (default: JAX's default backend).

    ``"auto"`` is resolved here, once, to the fastest backend measured for the platform. On
    CPU the sequential loop beats the time-parallel methods at every measured size (the
    parallel ones do ``O(log T)`` times more work, and a CPU has no idle width for the scan's
    parallelism to fill; ``gated_jax.lab.parallel``'s benchmark has the figures), so ``"auto"``
    is ``"sequential"`` there. No accelerator measurement backs another choice yet, so it is
    ``"sequential"`` on every platform.

    Examples:
      >>> from gated_jax.cell import resolve_method
      >>> resolve_method("auto", "cpu")
      'sequential'
    """
    choice("method", method, METHODS)
    return "sequential" if method == "auto" else method


# --------------------------------------------------------------------------------------------
# the sequential backend. Shapes: xs (B, T, n) and zs (B, T, m) batch-first, as the user holds
# them; every loop works on time-major pieces (K, B, .) of one segment or block, so no T-step
# transposed copy of xs or zs is ever made. mask (T, B) bool or None.


def _tm(a):
    """Batch-first ``(B, K, .)`` <-> time-major ``(K, B, .)``."""
    return None if a is None else jnp.swapaxes(a, 0, 1)


def _run(p: GatedParams, x_tm, z0, mask, reverse: bool, unroll: int, out: str = "states"):
    """The forward loop over time-major ``x_tm``: its two projections hoisted, then one
    ``(B, m) x (m, m)`` matmul per step (:func:`gated_jax.cell.step.update`).

    Returns ``(last, ys)``: the state after the loop and, per step, ``out="states"``: ``z[t]``;
    ``"gates"``: ``(z[t], c[t])``; ``"none"``: nothing (``ys`` is ``None``).
    """
    a_c, u = _step.projections(p, x_tm)
    w_zt = None if p.w_z is None else p.w_z.T

    def step(z, inp):
        a, uu, mk = inp
        z_new, c = _step.update(w_zt, z, a, uu, mk, transposed=True)
        return z_new, {"states": z_new, "gates": (z_new, c), "none": None}[out]

    return lax.scan(step, z0, (a_c, u, mask), reverse=reverse, unroll=unroll)


def _prev(zk, z_in, reverse: bool):
    """``zprev[t] = z[t-1]`` of a time-major piece ``zk`` whose run starts from ``z_in``."""
    parts = [zk[1:], z_in[None]] if reverse else [z_in[None], zk[:-1]]
    return jnp.concatenate(parts, axis=0)


def _adjoint(w_z, g, c, zprev, z, r0, reverse: bool, unroll: int):
    """Reverse-time adjoint over one time-major piece: ``delta[t] = g[t] + r[t]``,
    ``r[t-1] = J[t]^T delta[t]``, one ``(B, m) x (m, m)`` matmul per step
    (:func:`gated_jax.cell.step.transpose_step`). ``g=None`` means no loss on these states.

    ``J[t]``'s factor ``s[t]`` is formed in the step from the states and the gate
    (:func:`gated_jax.cell.step.jacobian_factor_from_states`), so no ``u`` or ``s`` is kept.
    Returns ``(r_first, (pbar, ubar))``: the gradient reaching the state before the piece and,
    per step, the gradients at the gate pre-activation and at the candidate.
    """

    def step(r, inp):
        gt, ct, zp, zt = inp
        delta = r if gt is None else gt + r
        s = _step.jacobian_factor_from_states(zp, zt, ct)
        r, pb, ub = _step.transpose_step(w_z, ct, s, delta)
        return r, (pb, ub)

    return lax.scan(step, r0, (g, c, zprev, z), reverse=not reverse, unroll=unroll)


def _outer_sum(a, b):
    """``sum_{t, b} a[t, b]^T b[t, b]``: ``(T, B, m), (T, B, n) -> (m, n)`` as one 2-D matmul."""
    return jnp.reshape(a, (-1, a.shape[-1])).T @ jnp.reshape(b, (-1, b.shape[-1]))


def _param_grads(p: GatedParams, x_tm, zprev, pbar, ubar) -> GatedParams:
    """Weight gradients of one piece as large matmuls over all its ``K B`` steps.

    ``dW_x = sum ubar x^T``, ``dW_c = sum pbar x^T``, ``dW_z = sum pbar zprev^T``, each one
    ``(m, K B) x (K B, n)`` matmul.
    """
    return GatedParams(
        w_x=_outer_sum(ubar, x_tm),
        w_c=_outer_sum(pbar, x_tm),
        w_z=None if p.w_z is None else _outer_sum(pbar, zprev),
        b_c=None if p.b_c is None else jnp.sum(pbar, axis=(0, 1)),
        b_x=None if p.b_x is None else jnp.sum(ubar, axis=(0, 1)),
    )


def _input_grads(p: GatedParams, pbar, ubar):
    """``dl/dx = W_c^T pbar + W_x^T ubar``: the transpose of :func:`~.step.projections`."""
    return pbar @ p.w_c + ubar @ p.w_x


def _add(a: GatedParams, b: GatedParams) -> GatedParams:
    return jax.tree.map(jnp.add, a, b)


def _mask_piece(mask, a: int, b: int):
    return None if mask is None else mask[a:b]


def _put(buf, piece_bf, start: int):
    """Write a batch-first piece into ``buf`` at time ``start`` (in place in the compiled
    program: a dynamic-update-slice, so only one ``T``-step buffer is ever live)."""
    return lax.dynamic_update_slice_in_dim(buf, piece_bf.astype(buf.dtype), start, axis=1)


# ---- one blocked structure for every path. Time is cut into q blocks of K steps, a nested
# scan over blocks (so the compiled program handles one block at a time and its temporaries
# are block-sized), plus a tail loop over the last r = T - q K < K steps (no padded copy of
# xs). What the forward pass keeps decides the path:
#
# * default (stored states): the states zs, its output, and nothing else. The backward pass
#   takes a block's z[t-1] from zs (shifted by one), recomputes the block's gates from them,
#   c = sigma(W_c x + b_c + W_z z[t-1]), as one (K B, m) x (m, m) matmul instead of K
#   sequential ones, and forms s = c (z[t-1] - z[t]). Blocks of at most _BLOCK_BYTES per
#   (K, B, m) array, so that the backward pass's block temporaries stay in the CPU's cache,
#   and of at most max(64, T/16) steps, so that they are a small part of one T-step array.
# * remat: only each block's start state, K ~ sqrt(T); the backward pass recomputes a block's
#   forward loop, then runs its adjoint.
# * final state only: as remat, and no T-step output at all.

_BLOCK_BYTES = 1 << 20
_BLOCKS = 16
_MIN_BLOCK = 16


def _block_length(T: int, remat, seq: bool, B: int, m: int, itemsize: int) -> int:
    """Block length ``K``. The default path (``remat=False`` with the sequence returned): the
    largest ``K`` whose ``(K, B, m)`` block is at most ``_BLOCK_BYTES`` (1 MiB) and at most
    ``max(64, ceil(T / 16))``, but at least 16 steps.
    ``remat=True``, or the final-state path: ``round(sqrt(T))``, which minimises the
    ``T/K + K`` states kept. An int ``remat``: that ``K``. Never more than ``T``."""
    if isinstance(remat, (bool, np.bool_)):
        if not remat and seq:
            in_cache = _BLOCK_BYTES // max(1, B * m * itemsize)  # one block array <= 1 MiB
            short = max(64, -(-T // _BLOCKS))  # a block a small part of one T-step array
            return max(1, min(T, max(_MIN_BLOCK, min(in_cache, short))))
        return max(1, int(round(T**0.5)))
    return int(min(remat, T))


def _block_x(xs, i, K: int):
    return _tm(lax.dynamic_slice_in_dim(xs, i * K, K, axis=1))


def _block_mask(mask, i, K: int):
    return None if mask is None else lax.dynamic_slice_in_dim(mask, i * K, K, axis=0)


class _Saved(NamedTuple):
    """What the forward pass keeps besides ``zs``: each block's start state ``(q, B, m)`` and
    the tail's start state."""

    starts: jax.Array
    tail_in: jax.Array


def _blocked_forward(p, xs, z0, mask, reverse: bool, unroll: int, K: int, seq: bool):
    """The forward pass in blocks. Returns ``(zs or None, last, saved)``: the states
    (batch-first, only when ``seq``), the final state and a :class:`_Saved`."""
    B, T, _ = xs.shape
    q, qK = T // K, (T // K) * K
    out = "states" if seq else "none"

    def piece(carry, x_tm, mk, start):
        z, zs = carry
        last, zk = _run(p, x_tm, z, mk, reverse, unroll, out)
        if seq:
            zs = _put(zs, _tm(zk), start)
        return (last, zs), z

    def block(carry, i):
        return piece(carry, _block_x(xs, i, K), _block_mask(mask, i, K), i * K)

    def tail(carry):
        return piece(carry, _tm(xs[:, qK:]), _mask_piece(mask, qK, T), qK)

    carry = (z0, jnp.zeros((B, T, z0.shape[-1]), z0.dtype) if seq else None)
    tail_in = z0
    if reverse and qK < T:
        carry, tail_in = tail(carry)
    carry, starts = lax.scan(block, carry, jnp.arange(q), reverse=reverse)
    if not reverse and qK < T:
        carry, tail_in = tail(carry)
    (last, zs) = carry
    return zs, last, _Saved(starts, tail_in)


def _piece_backward(p, x_tm, z_in, mask, g_tm, r, zk, reverse: bool, unroll: int):
    """One piece's adjoint and gradients. ``zk``: the piece's stored states, whose gates are
    recomputed at once, ``c = sigma(W_c x + b_c + W_z z[t-1])`` over the whole piece (the
    step's own :func:`~gated_jax.cell.step.gate`); ``None``: the piece's forward loop is
    run again from its start state ``z_in`` for the states and gates."""
    ck = None
    if zk is None:
        _, (zk, ck) = _run(p, x_tm, z_in, mask, reverse, unroll, "gates")
    zprev = _prev(zk, z_in, reverse)
    if ck is None:
        ck = _step.gate(p.w_z, zprev, _step.gate_input(p, x_tm), mask)
    r, (pbar, ubar) = _adjoint(p.w_z, g_tm, ck, zprev, zk, r, reverse, unroll)
    return r, _param_grads(p, x_tm, zprev, pbar, ubar), _input_grads(p, pbar, ubar)


def _blocked_backward(p, xs, mask, zs, saved: _Saved, g, r, reverse: bool, unroll: int, K: int):
    """Closed-form BPTT in blocks, last (in the run direction) first. ``g``: ``dl/dzs``
    batch-first, or ``None`` when only the final state was returned (its cotangent is then
    the initial adjoint ``r``). ``zs``: the stored states (default path) or ``None``
    (recompute). Returns ``(dparams, dxs, dz0)``; ``dxs`` is written block by block into one
    buffer."""
    B, T, n = xs.shape
    q, qK = T // K, (T // K) * K

    def piece(carry, x_tm, mk, z_in, start, length):
        r, dp, dxs = carry
        g_tm = None if g is None else _tm(lax.dynamic_slice_in_dim(g, start, length, axis=1))
        zk = None if zs is None else _tm(lax.dynamic_slice_in_dim(zs, start, length, axis=1))
        r, d, dx = _piece_backward(p, x_tm, z_in, mk, g_tm, r, zk, reverse, unroll)
        return r, _add(dp, d), _put(dxs, _tm(dx), start)

    def block(carry, i):
        x_tm, mk = _block_x(xs, i, K), _block_mask(mask, i, K)
        return piece(carry, x_tm, mk, saved.starts[i], i * K, K), None

    def tail(carry):
        x_tm, mk = _tm(xs[:, qK:]), _mask_piece(mask, qK, T)
        return piece(carry, x_tm, mk, saved.tail_in, qK, T - qK)

    carry = (r, jax.tree.map(jnp.zeros_like, p), jnp.zeros(xs.shape, xs.dtype))
    if not reverse and qK < T:
        carry = tail(carry)
    carry, _ = lax.scan(block, carry, jnp.arange(q), reverse=not reverse)
    if reverse and qK < T:
        carry = tail(carry)
    r, dp, dxs = carry
    return dp, dxs, r


def _blocked(p, xs, z0, mask, reverse, unroll, K, seq, keep):
    zs, last, _ = _blocked_forward(p, xs, z0, mask, reverse, unroll, K, seq)
    return zs if seq else last


def _blocked_fwd(p, xs, z0, mask, reverse, unroll, K, seq, keep):
    zs, last, saved = _blocked_forward(p, xs, z0, mask, reverse, unroll, K, seq)
    return (zs if seq else last), (p, xs, mask, zs if keep else None, saved)


def _blocked_bwd(reverse, unroll, K, seq, keep, res, g):
    p, xs, mask, zs, saved = res
    r0 = jnp.zeros_like(saved.tail_in) if seq else g
    dp, dxs, dz0 = _blocked_backward(
        p, xs, mask, zs, saved, g if seq else None, r0, reverse, unroll, K
    )
    return dp, dxs, dz0, None


_blocked_cf = jax.custom_vjp(_blocked, nondiff_argnums=(4, 5, 6, 7, 8))
_blocked_cf.defvjp(_blocked_fwd, _blocked_bwd)


@jax.jit(static_argnums=(4, 5, 6, 7, 8, 9))
def _sequential_jit(p, xs, z0, mask, reverse, unroll, remat, backward, seq, K):
    B, T, _ = xs.shape
    if T == 0:
        return jnp.zeros((B, 0, z0.shape[-1]), z0.dtype) if seq else z0
    if backward == "autodiff":
        # JAX differentiates the blocked forward scan itself
        def run(p, xs, z0, mask):
            zs, last, _ = _blocked_forward(p, xs, z0, mask, reverse, unroll, K, seq)
            return zs if seq else last

        return (jax.checkpoint(run) if remat else run)(p, xs, z0, mask)
    keep = seq and not remat
    return _blocked_cf(p, xs, z0, mask, reverse, unroll, K, seq, keep)


def _sequential(ops: Operands, opts: ScanOptions) -> jax.Array:
    """The sequential backend: one ``lax.scan`` over time, closed-form or autodiff backward."""
    return _sequential_jit(
        ops.params,
        ops.xs,
        ops.z0,
        ops.mask,
        opts.reverse,
        opts.unroll,
        opts.remat,
        opts.backward,
        opts.return_sequence,
        _block_length(ops.T, opts.remat, opts.return_sequence, *_block_dims(ops)),
    )


def _block_dims(ops: Operands) -> tuple[int, int, int]:
    """``(B, m, itemsize)`` of the flattened operands, for :func:`_block_length`."""
    return ops.xs.shape[0], ops.m, jnp.dtype(ops.z0.dtype).itemsize


def _parallel_backend(jacobian: str):
    def backend(ops: Operands, opts: ScanOptions) -> jax.Array:
        from gated_jax.cell import parallel  # imports this module

        return parallel.scan_backend(ops, opts, jacobian)

    return backend


BACKENDS = {
    "sequential": _sequential,
    **{name: _parallel_backend(jac) for name, jac in PARALLEL_METHODS.items()},
}
"""Backend name -> ``backend(ops: Operands, opts: ScanOptions)``: the states ``(B, T, m)``
batch-first, or the final state ``(B, m)`` when ``opts.return_sequence`` is ``False``."""


# --------------------------------------------------------------------------------------------
# the public functions


def _check_options(reverse, unroll, remat, backward, return_sequence=True) -> ScanOptions:
    reverse = boolean("reverse", reverse)
    unroll = positive_int("unroll", unroll)
    if not isinstance(remat, (bool, np.bool_)):
        if isinstance(remat, (int, np.integer)) and remat >= 1:
            remat = int(remat)
        else:
            raise fail("remat", remat, "a bool or a block length >= 1")
    else:
        remat = bool(remat)
    choice("backward", backward, BACKWARDS)
    return_sequence = boolean("return_sequence", return_sequence)
    return ScanOptions(reverse, unroll, remat, backward, return_sequence)


def _prepare(params, xs, z0, seq_lengths, states: bool = True) -> Operands:
    """Validate; return flat compute-dtype operands and what is needed to restore shapes.

    ``states=False`` (the final-state path) stores no ``T``-step array, so only the inputs
    themselves are checked against the memory available."""
    p, n, m = _checks.check_params(params)
    batch, T = _checks.check_xs(xs, n)
    if z0 is not None:
        _checks.check_z0(z0, batch, m)
    if seq_lengths is not None:
        if isinstance(seq_lengths, (list, tuple, int)) and not isinstance(seq_lengths, bool):
            seq_lengths = np.asarray(seq_lengths)  # JAX arrays only from here on
        _checks.check_seq_lengths(seq_lengths, batch, T)
    leaves = [*p, xs, z0]
    out_dtype = _checks.output_dtype(*leaves)
    cdt = _checks.compute_dtype(*leaves)
    B = int(np.prod(batch, dtype=np.int64))
    # the states, and what a backward pass keeps of them, with its cotangent and output
    nbytes = (4.0 * B * T * m if states else 0.0) * jnp.dtype(cdt).itemsize
    check_fits_in_memory("xs", xs, nbytes, f"the states {batch + (T, m)} and their residuals")
    p = jax.tree.map(lambda a: jnp.asarray(a, cdt), p)
    xs_f = jnp.reshape(jnp.asarray(xs, cdt), (B, T, n))
    if z0 is None:
        z0_f = jnp.zeros((B, m), cdt)
    else:
        z0_f = jnp.reshape(jnp.broadcast_to(jnp.asarray(z0, cdt), batch + (m,)), (B, m))
    mask = None
    if seq_lengths is not None:
        lengths = jnp.reshape(jnp.asarray(seq_lengths), (B,))
        mask = jnp.arange(T)[:, None] < lengths[None, :]
    return Operands(p, xs_f, z0_f, mask, batch, T, m, out_dtype)


def gated_scan(
    params: GatedParams,
    xs: jax.Array,
    z0: jax.Array | None = None,
    *,
    seq_lengths: jax.Array | None = None,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool | int = False,
    backward: str = "closed_form",
    method: str = "sequential",
    tol: float | None = None,
    max_iters: int | None = None,
    return_sequence: bool = True,
) -> jax.Array:
    r"""Run the gated cell over a sequence: ``xs`` ``(..., T, n)`` to states ``(..., T, m)``.

    .. math::

        c[t] = \sigma(W_c x[t] + W_z z[t-1] + b_c), \qquad
        z[t] = c[t] \odot z[t-1] + (1 - c[t]) \odot (W_x x[t] + b_x),

    with ``z[0] = z0`` (zeros by default) and ``zs[..., t, :] = z[t+1]``. Any leading batch
    dims; ``z0`` is ``(..., m)`` broadcastable to them.

    The input projections are computed outside the step loop, which does one
    ``(B, m) x (m, m)`` matmul per step. The backward pass (``backward="closed_form"``) is
    :func:`gated_bptt`'s closed form as a ``jax.custom_vjp``: a reverse-time loop with one
    matmul per step carries the adjoint, and the weight gradients are large matmuls over the
    ``K B`` steps of each block. Memory, besides the inputs: the forward pass keeps only the
    states (its output); per block, the backward pass recomputes the gate ``c[t]`` from them as
    one large matmul and forms ``s[t] = c[t] (z[t-1] - z[t])``, and every other temporary is
    the size of one block (at most 1 MiB per ``(K, B, m)`` array and ``max(64, T/16)`` steps,
    at least 16 steps).

    Args:
      params: :class:`GatedParams` (``w_z=None``: the minGRU cell, gate from the input alone).
      xs: inputs ``(..., T, n)``.
      z0: initial state ``(..., m)``; ``None`` means zeros.
      seq_lengths: optional int array of the batch shape ``xs.shape[:-2]``, values in ``[0, T]``.
        A step ``t >= length`` is the identity: the state is held (``zs`` past the length repeats
        the last valid state, or ``z0`` for length 0) and the step contributes no gradient: the
        inputs past the length get exactly zero gradient, and weights get none from those steps.
        (Cotangents placed on held outputs flow to the last valid state, which those outputs
        equal.) Checked against ``[0, T]`` when concrete; under ``jit`` a traced value is used
        as given (lengths > T act as T, negative as 0).
      reverse: run time backwards (``t = T-1, ..., 0``) with outputs aligned to the inputs:
        ``zs[..., t, :]`` is the state after consuming ``x[t], ..., x[T-1]``. With
        ``seq_lengths`` the padded tail is consumed first, as identity steps, so each sequence's
        reversed run starts from ``z0`` at its last valid input (Flax's ``nn.RNN`` instead
        flips each sequence within its length).
      unroll: ``lax.scan`` unroll factor of both loops, an int >= 1.
      remat: ``True`` (or a block length ``K``) keeps only the state at the start of each block
        of ``K ~ sqrt(T)`` steps and recomputes each block's forward pass in the backward pass:
        temporary memory ``O((T/K + K) B m)`` besides ``zs`` itself, for one extra forward loop.
        When ``K`` does not divide ``T`` the last ``T mod K`` steps are one shorter block. With
        ``backward="autodiff"``, ``remat`` wraps the whole scan in ``jax.checkpoint`` instead.
      backward: ``"closed_form"`` (default; reverse mode: ``grad``, ``vjp``, ``jacrev``) or
        ``"autodiff"``: JAX differentiates the hoisted scan itself, which also supports forward
        mode (``jvp``, ``jacfwd``, ``hessian``). A ``jax.custom_vjp`` cannot be differentiated
        in forward mode, so forward mode with the default raises a ``TypeError`` naming this
        switch. (Under an outer ``jax.jit`` JAX raises its own "can't apply forward-mode
        autodiff (jvp) to a custom_vjp function" first.) The Jacobian diagnostics run their
        trajectory with ``"autodiff"``, so they support forward mode as they are.
      method: ``"sequential"`` (the loop above), ``"deer"`` (Newton over the whole sequence,
        full Jacobians), ``"quasi_deer"`` (their diagonals) or ``"auto"``
        (:func:`resolve_method`). The parallel methods (:func:`gated_jax.cell.gated_deer`)
        solve the recurrence by associative scans in ``O(log T)`` depth per iteration; with
        ``w_z=None`` (minGRU) one scan is exact. Their results equal the sequential method's
        wherever the solver converged, and never silently differ: under eager evaluation a
        solve that did not converge within ``max_iters`` raises
        :class:`~gated_jax.cell.parallel.DeerNotConverged`; under ``jit`` the compiled program
        runs the sequential loop instead (a ``lax.cond``; under an outer ``vmap`` both branches
        run). Gradients are exact, by implicit differentiation at the converged trajectory;
        ``unroll`` and ``remat`` do not apply, ``backward`` must be ``"closed_form"``.
      tol: the parallel methods' convergence tolerance (``None``: ``1e-12`` in float64,
        ``1e-5`` otherwise); ignored by ``"sequential"``.
      max_iters: the parallel methods' iteration limit, an int >= 1 (``None``:
        ``min(T, 100)``); ignored by ``"sequential"``.
      return_sequence: ``True`` (default) returns every state; ``False`` returns only the final
        state (``zs[..., -1, :]``, or ``zs[..., 0, :]`` with ``reverse``) and stores nothing
        ``T`` steps long besides the inputs: the forward pass keeps one state per block of
        ``K = round(sqrt(T))`` steps (``remat=K`` sets ``K``), and the backward pass
        recomputes one block at a time, so memory beyond the inputs grows as ``sqrt(T)``.
        Gradients are those of the full path's final state.

    Dtypes: float32 and float64 run in their own precision. bfloat16/float16 operands are
    upcast: projections, recurrence and accumulation run in float32, and ``zs`` is cast back to
    the promoted input dtype. Integer inputs give floating states.

    Returns:
      ``zs`` of shape ``(..., T, m)``; with ``return_sequence=False`` the final state
      ``(..., m)``.

    Raises:
      ValueError: naming the argument and its value, for wrong ranks, ``n``/``m`` mismatches
        between params and inputs, ``seq_lengths`` of the wrong shape, dtype or range, bad
        options, and sizes whose states cannot fit in memory.
      TypeError: for forward-mode autodiff with ``backward="closed_form"``.
      gated_jax.cell.DeerNotConverged: (a ``RuntimeError``) for ``method="deer"`` or
        ``"quasi_deer"`` evaluated eagerly when the solver did not converge.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gated_jax.cell import gated_scan, init_gated_params
      >>> p = init_gated_params(jax.random.key(0), 3, 4)
      >>> xs = jnp.ones((2, 5, 3))  # batch 2, T = 5, n = 3
      >>> gated_scan(p, xs).shape
      (2, 5, 4)
      >>> g = jax.grad(lambda p: jnp.sum(gated_scan(p, xs) ** 2))(p)  # closed-form BPTT
      >>> g.w_z.shape
      (4, 4)
      >>> gated_scan(p, xs, return_sequence=False).shape  # the final state only
      (2, 4)
    """
    opts = _check_options(reverse, unroll, remat, backward, return_sequence)
    name = resolve_method(method)
    if name in PARALLEL_METHODS:
        from gated_jax.cell.parallel import check_solver_options

        _, tol, max_iters = check_solver_options(PARALLEL_METHODS[name], tol, max_iters)
        if backward != "closed_form":
            raise fail(
                "backward",
                backward,
                f"'closed_form' with method={method!r} (its gradients are implicit; no autodiff "
                "through the Newton iterations)",
            )
        opts = opts._replace(tol=tol, max_iters=max_iters)
    backend = BACKENDS[name]
    ops = _prepare(params, xs, z0, seq_lengths, states=opts.return_sequence)
    try:
        zs = backend(ops, opts)
    except TypeError as e:
        if "forward-mode" not in str(e):
            raise
        raise TypeError(
            "gated_scan: forward-mode autodiff (jvp, jacfwd) cannot go through the closed-form "
            "backward pass (a jax.custom_vjp); pass backward='autodiff' to gated_scan (or to "
            "GatedRNN) to differentiate the scan with JAX's own rules, which support forward mode"
        ) from e
    shape = ops.batch + ((ops.T, ops.m) if opts.return_sequence else (ops.m,))
    return jnp.reshape(zs, shape).astype(ops.out_dtype)


# --------------------------------------------------------------------------------------------
# closed-form BPTT, exposed


def _unbroadcast(g, shape: tuple[int, ...]):
    """Sum ``g`` down to ``shape`` (the transpose of ``broadcast_to``)."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and g.shape[lead + i] != 1
    )
    return jnp.reshape(jnp.sum(g, axis=axes), shape) if axes else g


def _grad_dtype(a, out_dtype):
    """A gradient's dtype: that of ``a`` when it is floating, else the promoted float dtype."""
    dt = jnp.result_type(a)
    return dt if jnp.issubdtype(dt, jnp.inexact) else out_dtype


def gated_bptt(
    params: GatedParams,
    xs: jax.Array,
    z0: jax.Array | None,
    dzs: jax.Array,
    *,
    seq_lengths: jax.Array | None = None,
    reverse: bool = False,
) -> tuple[GatedParams, jax.Array, jax.Array]:
    r"""Backpropagation through time in closed form: ``(dl/dparams, dl/dxs, dl/dz0)``.

    Given ``dzs = dl/dzs`` (the loss's direct dependence on every state, ``g[t]`` below),
    returns what ``jax.vjp(gated_scan, params, xs, z0)[1](dzs)`` returns. The adjoint
    ``delta[t] = dl/dz[t]`` obeys the reverse-time recurrence

    .. math::

        \delta[T] = g[T], \qquad \delta[t] = g[t] + J[t+1]^\top \delta[t+1], \qquad
        J[t] = \operatorname{diag}(c[t]) + \operatorname{diag}(s[t]) W_z,

    with ``s[t] = (z[t-1] - u[t]) c[t] (1 - c[t])``. Unrolled,
    ``delta[k] = sum_{t >= k} (J[t] ... J[k+1])^T g[t]``: a loss on one state ``z[t]`` gives
    the product-of-Jacobians sum ``dl/dz[t] sum_k (prod_{i=k+1}^t J[i]) dz[k]/dW``. A weight
    enters step ``t`` only through the gate pre-activation ``p[t]`` and the candidate ``u[t]``,
    with local gradients

    .. math::

        \bar p[t] = s[t] \odot \delta[t], \qquad \bar u[t] = (1 - c[t]) \odot \delta[t],

    so ``dl/dW_x = sum_t ubar[t] x[t]^T``, ``dl/dW_c = sum_t pbar[t] x[t]^T``,
    ``dl/dW_z = sum_t pbar[t] z[t-1]^T``, ``dl/db_c = sum_t pbar[t]``,
    ``dl/db_x = sum_t ubar[t]``, ``dl/dx[t] = W_c^T pbar[t] + W_x^T ubar[t]`` and
    ``dl/dz0 = J[1]^T delta[1]``. Each weight gradient is a sum of outer products, so it has
    its parameter's shape: ``dl/dW_x`` is ``(m, n)`` like ``W_x``.

    The backward pass mirrors the forward one: a reverse-time loop with one
    ``(s delta) @ W_z`` matmul per step (the transpose of the forward's ``z @ W_z^T``), then
    every weight and input gradient as large matmuls over ``T B`` rows (the transposes of the
    hoisted projections). A step past ``seq_lengths`` has ``c = 1``, so ``s = 0`` and
    ``1 - c = 0``: the adjoint passes through unchanged and the step adds nothing.

    Args:
      params: as for :func:`gated_scan`.
      xs: as for :func:`gated_scan`.
      z0: as for :func:`gated_scan`; ``None`` means zeros (``dz0`` then has the batch shape
        ``(..., m)``).
      dzs: cotangent of the outputs, shape ``(..., T, m)``.
      seq_lengths: as for :func:`gated_scan`.
      reverse: as for :func:`gated_scan`.

    Returns:
      ``(dparams, dxs, dz0)``: a :class:`GatedParams` of gradients (each the shape and dtype of
      its parameter; ``None`` fields stay ``None``), ``dxs`` shaped like ``xs`` and ``dz0``
      shaped like ``z0``, each in its argument's dtype. Integer ``xs`` (or ``z0``) get their
      gradient in the float dtype the recurrence returns (where ``jax.vjp`` would give
      ``float0`` zeros).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gated_jax.cell import gated_bptt, init_gated_params
      >>> p = init_gated_params(jax.random.key(0), 3, 4)
      >>> dp, dxs, dz0 = gated_bptt(p, jnp.ones((5, 3)), None, jnp.ones((5, 4)))
      >>> dp.w_x.shape, dxs.shape, dz0.shape
      ((4, 3), (5, 3), (4,))

    References:
      Seed 1.2(c), for all parameters; the homework writes ``dl/dW_x`` as ``n x m``, the
      transpose of the parameter's shape.
    """
    opts = _check_options(reverse, 1, False, "closed_form")
    ops = _prepare(params, xs, z0, seq_lengths)
    batch, T, m = ops.batch, ops.T, ops.m
    _checks.check_array("dzs", dzs)
    if _checks.shape(dzs) != batch + (T, m):
        raise fail("dzs", dzs, f"of the shape of the outputs, {batch + (T, m)}")
    user = _checks.as_params(params)
    # (B, T, m) with B from the flattened inputs: a -1 cannot be inferred when T == 0
    g = jnp.reshape(jnp.asarray(dzs, ops.xs.dtype), (ops.xs.shape[0], T, m))
    K = _block_length(ops.T, False, True, *_block_dims(ops))
    dp, dxs, dz0 = _bptt_jit(ops.params, ops.xs, ops.z0, ops.mask, g, opts.reverse, K)
    dp = jax.tree.map(lambda d, w: d.astype(_grad_dtype(w, ops.out_dtype)), dp, user)
    dxs = jnp.reshape(dxs, _checks.shape(xs)).astype(_grad_dtype(xs, ops.out_dtype))
    dz0 = jnp.reshape(dz0, batch + (m,))
    if z0 is None:
        return dp, dxs, dz0.astype(ops.out_dtype)
    dz0 = _unbroadcast(dz0, _checks.shape(z0))
    return dp, dxs, dz0.astype(_grad_dtype(z0, ops.out_dtype))


@jax.jit(static_argnums=(5, 6))
def _bptt_jit(p, xs, z0, mask, g, reverse, K):
    B, T, _ = xs.shape
    if T == 0:
        return jax.tree.map(jnp.zeros_like, p), jnp.zeros_like(xs), jnp.zeros_like(z0)
    zs, _, saved = _blocked_forward(p, xs, z0, mask, reverse, 1, K, True)
    return _blocked_backward(p, xs, mask, zs, saved, g, jnp.zeros_like(z0), reverse, 1, K)
