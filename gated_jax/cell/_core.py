r"""The sequential primitives every solver of the gated cell shares: the floor of the package.

Nothing here is public; the backends (:mod:`~gated_jax.cell.sequential`,
:mod:`~gated_jax.cell.parallel`), the dispatch (:mod:`~gated_jax.cell.scan`) and the Jacobian
diagnostics (:mod:`~gated_jax.cell.diagnostics`) import these names, and this module imports
only the step equation (:mod:`~gated_jax.cell.step`), the parameters and the validators.

* Operands: :func:`prepare` validates the user's ``(params, xs, z0, seq_lengths)`` once and
  flattens them to :class:`Operands` in the compute dtype; :func:`check_options` validates the
  loop options to :class:`ScanOptions`.
* Loops: :func:`run`, the forward loop over one time-major piece (input projections hoisted,
  one ``(B, m) x (m, m)`` matmul per step); :func:`blocked_forward`, that loop over blocks of
  :func:`block_length` steps; :func:`trajectory`, the states of validated operands.
* Adjoint: :func:`adjoint`, the reverse-time recurrence
  ``delta[t] = g[t] + J[t+1]^T delta[t+1]`` over one piece, one matmul per step.
* Gradients: :func:`param_grads` and :func:`input_grads`, the transposes of the hoisted
  projections, as large matmuls over every step of a piece.

Shapes: ``xs`` ``(B, T, n)`` and ``zs`` ``(B, T, m)`` batch-first, as the user holds them;
every loop works on time-major pieces ``(K, B, .)`` of one block, so no ``T``-step transposed
copy of ``xs`` or ``zs`` is ever made. ``mask`` is ``(T, B)`` bool (``False`` past a
sequence's length) or ``None``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gated_jax._validate import (
    boolean,
    check_fits_in_memory,
    check_seq_lengths,
    check_xs,
    check_z0,
    choice,
    compute_dtype,
    fail,
    output_dtype,
    positive_int,
)
from gated_jax.cell import step as _step
from gated_jax.cell.params import GatedParams, check_params

BACKWARDS = ("auto", "closed_form", "autodiff", "stepwise")
"""The ``backward`` options of :func:`gated_jax.cell.gated_scan` (``"auto"`` is resolved per
shape and platform by :func:`gated_jax.cell.resolve_backward`)."""


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


def time_major(ops: Operands, reverse: bool) -> tuple[jax.Array, jax.Array | None]:
    """``(xs, mask)`` time-major, ``(T, B, n)`` and ``(T, B)``, for the parallel solvers;
    ``reverse`` flips time (reverse time is the forward recurrence on flipped inputs)."""
    xs_tm, mask = jnp.swapaxes(ops.xs, 0, 1), ops.mask
    if reverse:
        xs_tm = jnp.flip(xs_tm, 0)
        mask = None if mask is None else jnp.flip(mask, 0)
    return xs_tm, mask


# --------------------------------------------------------------------------------------------
# validation


def check_options(reverse, unroll, remat, backward, return_sequence=True) -> ScanOptions:
    """Validate the loop options of :func:`gated_jax.cell.gated_scan` (one error format)."""
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


def _lengths_mask(seq_lengths, B: int, T: int):
    """``mask[t, b] = t < seq_lengths[b]``, ``(T, B)``; ``None`` without lengths."""
    if seq_lengths is None:
        return None
    lengths = jnp.reshape(jnp.asarray(seq_lengths), (B,))
    return jnp.arange(T)[:, None] < lengths[None, :]


def prepare(params, xs, z0, seq_lengths, states: bool = True) -> Operands:
    """Validate; return flat compute-dtype operands and what is needed to restore shapes.

    ``states=False`` (the final-state path) stores no ``T``-step array, so only the inputs
    themselves are checked against the memory available.
    """
    p, n, m = check_params(params)
    batch, T = check_xs(xs, n)
    if z0 is not None:
        check_z0(z0, batch, m)
    if seq_lengths is not None:
        if isinstance(seq_lengths, (list, tuple, int)) and not isinstance(seq_lengths, bool):
            seq_lengths = np.asarray(seq_lengths)  # JAX arrays only from here on
        check_seq_lengths(seq_lengths, batch, T)
    leaves = [*p, xs, z0]
    out_dtype = output_dtype(*leaves)
    cdt = compute_dtype(*leaves)
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
    mask = _lengths_mask(seq_lengths, B, T)
    return Operands(p, xs_f, z0_f, mask, batch, T, m, out_dtype)


# --------------------------------------------------------------------------------------------
# pieces of time


def tm(a):
    """Batch-first ``(B, K, .)`` <-> time-major ``(K, B, .)`` (``None`` stays ``None``)."""
    return None if a is None else jnp.swapaxes(a, 0, 1)


def prev(zk, z_in, reverse: bool):
    """``zprev[t] = z[t-1]`` of a time-major piece ``zk`` whose run starts from ``z_in``."""
    parts = [zk[1:], z_in[None]] if reverse else [z_in[None], zk[:-1]]
    return jnp.concatenate(parts, axis=0)


def mask_piece(mask, a: int, b: int):
    """Steps ``a:b`` of a ``(T, B)`` mask (``None`` stays ``None``)."""
    return None if mask is None else mask[a:b]


def put(buf, piece_bf, start: int):
    """Write a batch-first piece into ``buf`` at time ``start`` (in place in the compiled
    program: a dynamic-update-slice, so only one ``T``-step buffer is ever live)."""
    return lax.dynamic_update_slice_in_dim(buf, piece_bf.astype(buf.dtype), start, axis=1)


def block_x(xs, i, K: int):
    """Block ``i`` (of ``K`` steps) of batch-first ``xs``, time-major."""
    return tm(lax.dynamic_slice_in_dim(xs, i * K, K, axis=1))


def block_mask(mask, i, K: int):
    """Block ``i`` (of ``K`` steps) of a ``(T, B)`` mask."""
    return None if mask is None else lax.dynamic_slice_in_dim(mask, i * K, K, axis=0)


# --------------------------------------------------------------------------------------------
# the loops


def run(p: GatedParams, x_tm, z0, mask, reverse: bool, unroll: int, out: str = "states"):
    """The forward loop over time-major ``x_tm``: its two projections hoisted, then one
    ``(B, m) x (m, m)`` matmul per step (:func:`gated_jax.cell.step.update`).

    Returns ``(last, ys)``: the state after the loop and, per step, ``out="states"``: ``z[t]``;
    ``"gates"``: ``(z[t], c[t])``; ``"none"``: nothing (``ys`` is ``None``).
    """
    a_c, u = _step.projections(p, x_tm)
    w_zt = None if p.w_z is None else _step.loop_weights(p.w_z)

    def step(z, inp):
        a, uu, mk = inp
        z_new, c = _step.update(w_zt, z, a, uu, mk, transposed=True)
        return z_new, {"states": z_new, "gates": (z_new, c), "none": None}[out]

    return lax.scan(step, z0, (a_c, u, mask), reverse=reverse, unroll=unroll)


# Time is cut into q blocks of K steps, a nested scan over blocks (so the compiled program
# handles one block at a time and its temporaries are block-sized), plus a tail loop over the
# last r = T - q K < K steps (no padded copy of xs). The default path (stored states) takes
# blocks of at most _BLOCK_BYTES per (K, B, m) array, so that the backward pass's block
# temporaries stay in the CPU's cache, and of at most max(64, T/16) steps, so that they are a
# small part of one T-step array; remat and the final-state path take K ~ sqrt(T).

_BLOCK_BYTES = 1 << 20
_BLOCKS = 16
_MIN_BLOCK = 16


def block_length(T: int, remat, seq: bool, B: int, m: int, itemsize: int) -> int:
    """Block length ``K``. The default path (``remat=False`` with the sequence returned): the
    largest ``K`` whose ``(K, B, m)`` block is at most 1 MiB and at most
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


def block_dims(ops: Operands) -> tuple[int, int, int]:
    """``(B, m, itemsize)`` of the flattened operands, for :func:`block_length`."""
    return ops.xs.shape[0], ops.m, jnp.dtype(ops.z0.dtype).itemsize


class Saved(NamedTuple):
    """What the forward pass keeps besides ``zs``: each block's start state ``(q, B, m)`` and
    the tail's start state."""

    starts: jax.Array
    tail_in: jax.Array


def blocked_forward(p, xs, z0, mask, reverse: bool, unroll: int, K: int, seq: bool):
    """The forward pass in blocks of ``K`` steps. Returns ``(zs or None, last, saved)``: the
    states (batch-first, only when ``seq``), the final state and a :class:`Saved`."""
    B, T, _ = xs.shape
    q, qK = T // K, (T // K) * K
    out = "states" if seq else "none"

    def piece(carry, x_tm, mk, start):
        z, zs = carry
        last, zk = run(p, x_tm, z, mk, reverse, unroll, out)
        if seq:
            zs = put(zs, tm(zk), start)
        return (last, zs), z

    def block(carry, i):
        return piece(carry, block_x(xs, i, K), block_mask(mask, i, K), i * K)

    def tail(carry):
        return piece(carry, tm(xs[:, qK:]), mask_piece(mask, qK, T), qK)

    carry = (z0, jnp.zeros((B, T, z0.shape[-1]), z0.dtype) if seq else None)
    tail_in = z0
    if reverse and qK < T:
        carry, tail_in = tail(carry)
    carry, starts = lax.scan(block, carry, jnp.arange(q), reverse=reverse)
    if not reverse and qK < T:
        carry, tail_in = tail(carry)
    (last, zs) = carry
    return zs, last, Saved(starts, tail_in)


def trajectory(p: GatedParams, xs, z0):
    """The states ``(..., T, m)`` from validated operands in the compute dtype (``xs``
    ``(..., T, n)``, ``z0`` ``(..., m)`` of the same batch shape), by :func:`blocked_forward`
    with the default blocks: what ``gated_scan(p, xs, z0, backward="autodiff")`` returns, and
    differentiable by JAX in forward and reverse mode."""
    batch, (T, n), m = xs.shape[:-2], xs.shape[-2:], z0.shape[-1]
    B = int(np.prod(batch, dtype=np.int64))
    if T == 0:
        return jnp.zeros(batch + (0, m), z0.dtype)
    xs_f = jnp.reshape(xs, (B, T, n))
    z0_f = jnp.reshape(jnp.broadcast_to(z0, batch + (m,)), (B, m))
    K = block_length(T, False, True, B, m, jnp.dtype(z0.dtype).itemsize)
    zs, _, _ = blocked_forward(p, xs_f, z0_f, None, False, 1, K, True)
    return jnp.reshape(zs, batch + (T, m))


# --------------------------------------------------------------------------------------------
# the adjoint and the gradients


def adjoint(w_z, g, c, zprev, z, r0, reverse: bool, unroll: int):
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


def param_grads(p: GatedParams, x_tm, zprev, pbar, ubar) -> GatedParams:
    """Weight gradients of one piece as large matmuls over all its ``K B`` steps.

    ``dW_x = sum ubar x^T``, ``dW_c = sum pbar x^T``, ``dW_z = sum pbar zprev^T``, each one
    ``(m, K B) x (K B, n)`` matmul (``dW_z`` in ``w_z``'s structure:
    :func:`gated_jax.cell.step.recurrent_grad`).
    """
    return GatedParams(
        w_x=_outer_sum(ubar, x_tm),
        w_c=_outer_sum(pbar, x_tm),
        w_z=None if p.w_z is None else _step.recurrent_grad(p.w_z, pbar, zprev),
        b_c=None if p.b_c is None else jnp.sum(pbar, axis=(0, 1)),
        b_x=None if p.b_x is None else jnp.sum(ubar, axis=(0, 1)),
    )


def input_grads(p: GatedParams, pbar, ubar):
    """``dl/dx = W_c^T pbar + W_x^T ubar``: the transpose of :func:`~.step.projections`."""
    return pbar @ p.w_c + ubar @ p.w_x


def add_params(a: GatedParams, b: GatedParams) -> GatedParams:
    """Leafwise ``a + b`` of two gradient pytrees."""
    return jax.tree.map(jnp.add, a, b)
