r"""The gated cell over a sequence: :func:`gated_scan` and its closed-form BPTT, :func:`gated_bptt`.

Layout. :func:`gated_scan` validates once (:func:`_prepare` turns the user's arguments into
flat operands, :class:`Operands`), resolves its ``method`` once (:func:`resolve_method`) and
calls one backend from :data:`BACKENDS`. Every backend has the same signature,
``backend(ops, options) -> zs`` with time-major states ``(T, B, m)``, so a time-parallel
solver is one more entry of that table, and a path returning only the final state is one
more field of :class:`ScanOptions` that the backends read. The step equation itself lives in
:mod:`gated_jax.cell.step`; this module only arranges its calls in time.

The sequential backend: the input projections of all ``T`` steps are two einsums outside the
loop; the ``lax.scan`` loop does one ``(B, m) x (m, m)`` matmul per step. Its backward pass is
the closed form of :func:`gated_bptt`, registered with ``jax.custom_vjp``: a reverse-time loop
with one matmul per step, then every weight gradient as a ``(m, T B) x (T B, n)`` matmul.
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

METHODS = ("sequential", "auto")
"""The ``method`` options of :func:`gated_scan` (``"auto"`` is resolved by
:func:`resolve_method`)."""


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


def resolve_method(method: str, platform: str | None = None) -> str:
    """The backend that ``method`` names on ``platform`` (default: JAX's default backend).

    ``"auto"`` is resolved here, once, to the fastest backend measured for the platform; today
    the only backend is ``"sequential"``, which ``"auto"`` therefore stands for everywhere.

    Examples:
      >>> from gated_jax.cell import resolve_method
      >>> resolve_method("auto", "cpu")
      'sequential'
    """
    choice("method", method, METHODS)
    return "sequential" if method == "auto" else method


# --------------------------------------------------------------------------------------------
# the sequential backend: time-major kernels on a flat batch. Shapes: xs (B, T, n) batch-first,
# states and per-step arrays (T, B, m) time-major, mask (T, B) bool or None.


def _forward_loop(p: GatedParams, a_c, u, z0, mask, reverse: bool, unroll: int, keep=False):
    """``z[t] = c z[t-1] + (1 - c) u[t]`` by :func:`gated_jax.cell.step.update`.

    Returns ``zs`` (time-major). With ``keep=True`` returns ``(zs, (zprev, c, s))``: what the
    backward pass needs, per step, the state *before* the step ``zprev[t] = z[t-1]`` (the right
    factor of ``dl/dW_z``, so no shifted copy of ``zs`` is made later), and ``c`` and ``s``,
    the two factors of ``J[t] = diag(c) + diag(s) W_z``. ``zs`` is then assembled from
    ``zprev`` shifted by one step and the last state.
    """

    def step(z, inp):
        a, uu, mk = inp
        z_new, c = _step.update(p.w_z, z, a, uu, mk)
        if keep:
            return z_new, (z, c, _step.jacobian_factor(z, uu, c))
        return z_new, z_new

    last, out = lax.scan(step, z0, (a_c, u, mask), reverse=reverse, unroll=unroll)
    if not keep:
        return out
    zprev = out[0]
    parts = [last[None], zprev[:-1]] if reverse else [zprev[1:], last[None]]
    return jnp.concatenate(parts, axis=0), out


def _forward(p: GatedParams, xs_tm, z0, mask, reverse: bool, unroll: int, keep=False):
    a_c, u = _step.projections(p, xs_tm)
    return _forward_loop(p, a_c, u, z0, mask, reverse, unroll, keep)


def _adjoint_loop(w_z, g, c, s, r0, reverse: bool, unroll: int):
    """Reverse-time adjoint: ``delta[t] = g[t] + r[t]``, ``r[t-1] = J[t]^T delta[t]``.

    Each step is :func:`gated_jax.cell.step.transpose_step`, one ``(B, m) x (m, m)`` matmul.
    Returns ``(r_first, pbar, ubar)``: the gradients at the gate pre-activation and at the
    candidate, emitted by the loop itself, and the gradient reaching the state before the first
    step.
    """

    def step(r, inp):
        gt, ct, st = inp
        r, pb, ub = _step.transpose_step(w_z, ct, st, gt + r)
        return r, (pb, ub)

    r_first, (pbar, ubar) = lax.scan(step, r0, (g, c, s), reverse=not reverse, unroll=unroll)
    return r_first, pbar, ubar


def _outer_sum(a, b):
    """``sum_{t, b} a[t, b]^T b[t, b]``: ``(T, B, m), (T, B, n) -> (m, n)`` as one 2-D matmul."""
    return jnp.reshape(a, (-1, a.shape[-1])).T @ jnp.reshape(b, (-1, b.shape[-1]))


def _param_grads(p: GatedParams, xs, zprev, pbar, ubar) -> GatedParams:
    """Weight gradients as large matmuls over all ``T * B`` steps at once (time-major).

    ``dW_x = sum ubar x^T``, ``dW_c = sum pbar x^T``, ``dW_z = sum pbar zprev^T`` with
    ``zprev[t] = z[t-1]``, each one ``(m, T B) x (T B, n)`` matmul.
    """
    return GatedParams(
        w_x=_outer_sum(ubar, xs),
        w_c=_outer_sum(pbar, xs),
        w_z=None if p.w_z is None else _outer_sum(pbar, zprev),
        b_c=None if p.b_c is None else jnp.sum(pbar, axis=(0, 1)),
        b_x=None if p.b_x is None else jnp.sum(ubar, axis=(0, 1)),
    )


def _input_grads(p: GatedParams, pbar, ubar):
    """``dl/dx = W_c^T pbar + W_x^T ubar``: the transpose of :func:`~.step.projections`."""
    return pbar @ p.w_c + ubar @ p.w_x


# ---- remat: blocks of K steps. xs stays batch-first (B, T, n); each block is transposed to
# time-major on its own, so no T-step copy of xs is ever made.


def _chunk(a, i, K: int, axis: int = 0):
    return None if a is None else lax.dynamic_slice_in_dim(a, i * K, K, axis=axis)


def _block_x(xs, i, K: int):
    return jnp.swapaxes(_chunk(xs, i, K, 1), 0, 1)


def _forward_blocked(p: GatedParams, xs, z0, mask, reverse: bool, unroll: int, K: int):
    """Remat forward in blocks of ``K`` steps, projections hoisted per block.

    Returns ``zs`` (time-major) and the state at each block's start, ``(T/K, B, m)``: all that
    the remat backward pass keeps.
    """
    B, T, _ = xs.shape
    m = z0.shape[-1]

    def body(z, i):
        zk = _forward(p, _block_x(xs, i, K), z, _chunk(mask, i, K), reverse, unroll)
        return (zk[0] if reverse else zk[-1]), (zk, z)

    _, (zs, starts) = lax.scan(body, z0, jnp.arange(T // K), reverse=reverse)
    return zs.reshape(T, B, m), starts


def _backward_blocked(p: GatedParams, xs, z0, mask, starts, g, reverse: bool, unroll, K: int):
    """Remat closed-form BPTT in blocks of ``K`` steps, last block first.

    For each block: its forward pass is recomputed from its start state ``starts[i]``, then the
    reverse-time adjoint loop runs over its ``K`` steps, then its weight and input gradients are
    formed as ``(K B) x m x n`` matmuls.
    """
    B, T, n = xs.shape

    def body(carry, i):
        r, acc = carry
        xk = _block_x(xs, i, K)
        _, (zprev, ck, sk) = _forward(
            p, xk, starts[i], _chunk(mask, i, K), reverse, unroll, keep=True
        )
        r, pbar, ubar = _adjoint_loop(p.w_z, _chunk(g, i, K), ck, sk, r, reverse, unroll)
        acc = jax.tree.map(jnp.add, acc, _param_grads(p, xk, zprev, pbar, ubar))
        return (r, acc), _input_grads(p, pbar, ubar)

    init = (jnp.zeros_like(z0), jax.tree.map(jnp.zeros_like, p))
    (dz0, dp), dxs = lax.scan(body, init, jnp.arange(T // K), reverse=not reverse)
    return dp, jnp.swapaxes(dxs.reshape(T, B, n), 0, 1), dz0


def _block_length(T: int, remat) -> int:
    """Block length ``K`` of the remat path (``remat`` is ``True`` or an int).

    ``remat=True``: a divisor of ``T`` near ``sqrt(T)``, which minimises the ``T/K + K`` states
    kept; ``remat=K``: that ``K``. ``T`` is padded to a multiple of ``K`` by the caller when
    needed.
    """
    if remat is True or isinstance(remat, np.bool_):
        root = max(1, int(round(T**0.5)))
        for k in range(root, max(1, root // 2) - 1, -1):
            if T % k == 0:
                return k
        return root
    return int(min(remat, T))


# ---- the custom VJP: primal = hoisted forward; fwd/bwd = closed form, time-major, in up to 4
# segments that are separate loops (not a nested scan over blocks, which benchmarks/ found
# slower); remat keeps the nested, blocked sqrt(T) structure for its memory.

_MAX_SEGMENTS = 4
_MIN_SEGMENT = 32


def _segments(T: int) -> list[tuple[int, int]]:
    """Static ``[start, stop)`` time ranges: up to 4 segments of at least 32 steps.

    Each segment is its own loop in the compiled program (not a nested scan), so the runtime
    can overlap one segment's large matmuls (projections forward, weight gradients backward)
    with the neighbouring segment's sequential loop. The segmentation changes no result.
    """
    k = max(1, min(_MAX_SEGMENTS, T // _MIN_SEGMENT))
    bounds = [T * i // k for i in range(k + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _run_order(segs, reverse: bool):
    return segs[::-1] if reverse else segs


def _forward_segments(p: GatedParams, xs_tm, z0, mask, reverse: bool, unroll: int, keep=False):
    """:func:`_forward` over time-major ``xs_tm``, segment by segment in the run direction.

    Returns ``zs``; with ``keep=True`` also the per-segment ``(zprev, c, s)`` (a list in time
    order), kept separate so that no ``T``-step copy is made.
    """
    segs = _segments(xs_tm.shape[0])
    z, parts, saved = z0, {}, {}
    for a, b in _run_order(segs, reverse):
        mk = None if mask is None else mask[a:b]
        out = _forward(p, xs_tm[a:b], z, mk, reverse, unroll, keep)
        zk = out[0] if keep else out
        parts[a], z = zk, zk[0] if reverse else zk[-1]
        if keep:
            saved[a] = out[1]
    zs = jnp.concatenate([parts[a] for a, _ in segs], axis=0)
    return (zs, [saved[a] for a, _ in segs]) if keep else zs


def _core(p, xs, z0, mask, reverse, unroll, remat, K):
    return _forward_segments(p, jnp.swapaxes(xs, 0, 1), z0, mask, reverse, unroll)


_core_cf = jax.custom_vjp(_core, nondiff_argnums=(4, 5, 6, 7))


def _backward_full(p: GatedParams, xs_tm, saved, g, reverse: bool, unroll: int):
    """Closed-form BPTT over all ``T`` steps, time-major; ``saved`` from :func:`_forward_segments`.

    Per segment, last (in the run direction) first: one reverse-time loop carries the adjoint
    and emits ``pbar`` and ``ubar``; then the segment's weight gradients are ``(T_seg B)``-row
    matmuls and ``dxs`` two more.
    """
    segs = _segments(xs_tm.shape[0])
    r = jnp.zeros_like(saved[0][0][0])
    dps, dxs = [], {}
    for (a, b), (zprev, c, s) in _run_order(list(zip(segs, saved, strict=True)), not reverse):
        r, pbar, ubar = _adjoint_loop(p.w_z, g[a:b], c, s, r, reverse, unroll)
        dps.append(_param_grads(p, xs_tm[a:b], zprev, pbar, ubar))
        dxs[a] = _input_grads(p, pbar, ubar)
    dp = jax.tree.map(lambda *d: sum(d[1:], d[0]), *dps)
    return dp, jnp.concatenate([dxs[a] for a, _ in segs], axis=0), r


def _core_fwd(p, xs, z0, mask, reverse, unroll, remat, K):
    if not remat:
        # default: time-major, no nested scans; keeps zprev, c and s of every step
        xs_tm = jnp.swapaxes(xs, 0, 1)
        zs, saved = _forward_segments(p, xs_tm, z0, mask, reverse, unroll, keep=True)
        return zs, (p, xs_tm, z0, mask, saved)
    zs, starts = _forward_blocked(p, xs, z0, mask, reverse, unroll, K)
    return zs, (p, xs, z0, mask, starts)


def _core_bwd(reverse, unroll, remat, K, res, g):
    p, xs, z0, mask, saved = res
    if not remat:
        dp, dxs_tm, dz0 = _backward_full(p, xs, saved, g, reverse, unroll)
        return dp, jnp.swapaxes(dxs_tm, 0, 1), dz0, None
    dp, dxs, dz0 = _backward_blocked(p, xs, z0, mask, saved, g, reverse, unroll, K)
    return dp, dxs, dz0, None


_core_cf.defvjp(_core_fwd, _core_bwd)


@jax.jit(static_argnums=(4, 5, 6, 7))
def _sequential_jit(p, xs, z0, mask, reverse, unroll, remat, backward):
    B, T, _ = xs.shape
    if T == 0:
        return jnp.zeros((0, B, z0.shape[-1]), z0.dtype)
    if backward == "autodiff":
        # JAX differentiates the hoisted scan (time-major: one transpose of xs)
        if remat:
            return jax.checkpoint(_core, static_argnums=(4, 5, 6, 7))(
                p, xs, z0, mask, reverse, unroll, remat, 0
            )
        return _core(p, xs, z0, mask, reverse, unroll, remat, 0)
    if not remat:
        return _core_cf(p, xs, z0, mask, reverse, unroll, False, T)
    K = _block_length(T, remat)
    Tp = -(-T // K) * K
    if Tp != T:
        # pad with identity (masked) steps: run after the real ones (reversed: before them)
        xs = jnp.pad(xs, ((0, 0), (0, Tp - T), (0, 0)))
        valid = jnp.ones((T, B), bool) if mask is None else mask
        mask = jnp.pad(valid, ((0, Tp - T), (0, 0)))
    return _core_cf(p, xs, z0, mask, reverse, unroll, bool(remat), K)[:T]


def _sequential(ops: Operands, opts: ScanOptions) -> jax.Array:
    """The sequential backend: one ``lax.scan`` over time, closed-form or autodiff backward."""
    return _sequential_jit(ops.params, ops.xs, ops.z0, ops.mask, *opts)


BACKENDS = {"sequential": _sequential}
"""Backend name -> ``backend(ops: Operands, opts: ScanOptions) -> zs (T, B, m)``."""


# --------------------------------------------------------------------------------------------
# the public functions


def _check_options(reverse, unroll, remat, backward) -> ScanOptions:
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
    return ScanOptions(reverse, unroll, remat, backward)


def _prepare(params, xs, z0, seq_lengths) -> Operands:
    """Validate; return flat compute-dtype operands and what is needed to restore shapes."""
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
    # the states, and what a backward pass keeps of them (three (T, B, m) arrays)
    nbytes = 4.0 * B * T * m * jnp.dtype(cdt).itemsize
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
) -> jax.Array:
    r"""Run the gated cell over a sequence: ``xs`` ``(..., T, n)`` to states ``(..., T, m)``.

    .. math::

        c[t] = \sigma(W_c x[t] + W_z z[t-1] + b_c), \qquad
        z[t] = c[t] \odot z[t-1] + (1 - c[t]) \odot (W_x x[t] + b_x),

    with ``z[0] = z0`` (zeros by default) and ``zs[..., t, :] = z[t+1]``. Any leading batch
    dims; ``z0`` is ``(..., m)`` broadcastable to them.

    The input projections of all ``T`` steps are computed before the loop; the loop does one
    ``(B, m) x (m, m)`` matmul per step. The backward pass (``backward="closed_form"``) is
    :func:`gated_bptt`'s closed form as a ``jax.custom_vjp``: the forward loop keeps ``z[t-1]``,
    ``c[t]`` and ``s[t] = (z[t-1] - u[t]) c[t] (1 - c[t])`` per step, a reverse-time loop with
    one matmul per step carries the adjoint, and every weight gradient is one large matmul over
    all ``T B`` steps. Time is cut into up to 4 segments of at least 32 steps, each its own loop,
    so that one segment's large matmuls can overlap the next segment's loop.

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
        ``T`` is padded to a multiple of ``K`` with identity steps when no divisor near
        ``sqrt(T)`` exists. With ``backward="autodiff"``, ``remat`` wraps the whole scan in
        ``jax.checkpoint`` instead.
      backward: ``"closed_form"`` (default; reverse mode: ``grad``, ``vjp``, ``jacrev``) or
        ``"autodiff"``: JAX differentiates the hoisted scan itself, which also supports forward
        mode (``jvp``, ``jacfwd``, ``hessian``). A ``jax.custom_vjp`` cannot be differentiated
        in forward mode, so forward mode with the default raises a ``TypeError`` naming this
        switch. (Under an outer ``jax.jit`` JAX raises its own "can't apply forward-mode
        autodiff (jvp) to a custom_vjp function" first.) The Jacobian diagnostics run their
        trajectory with ``"autodiff"``, so they support forward mode as they are.
      method: ``"sequential"`` or ``"auto"`` (:func:`resolve_method`).

    Dtypes: float32 and float64 run in their own precision. bfloat16/float16 operands are
    upcast: projections, recurrence and accumulation run in float32, and ``zs`` is cast back to
    the promoted input dtype. Integer inputs give floating states.

    Returns:
      ``zs`` of shape ``(..., T, m)``.

    Raises:
      ValueError: naming the argument and its value, for wrong ranks, ``n``/``m`` mismatches
        between params and inputs, ``seq_lengths`` of the wrong shape, dtype or range, bad
        options, and sizes whose states cannot fit in memory.
      TypeError: for forward-mode autodiff with ``backward="closed_form"``.

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
    """
    opts = _check_options(reverse, unroll, remat, backward)
    backend = BACKENDS[resolve_method(method)]
    ops = _prepare(params, xs, z0, seq_lengths)
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
    return jnp.reshape(jnp.swapaxes(zs, 0, 1), ops.batch + (ops.T, ops.m)).astype(ops.out_dtype)


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
    dp, dxs, dz0 = _bptt_jit(
        ops.params, ops.xs, ops.z0, ops.mask, jnp.swapaxes(g, 0, 1), opts.reverse
    )
    dp = jax.tree.map(lambda d, w: d.astype(_grad_dtype(w, ops.out_dtype)), dp, user)
    dxs = jnp.reshape(dxs, _checks.shape(xs)).astype(_grad_dtype(xs, ops.out_dtype))
    dz0 = jnp.reshape(dz0, batch + (m,))
    if z0 is None:
        return dp, dxs, dz0.astype(ops.out_dtype)
    dz0 = _unbroadcast(dz0, _checks.shape(z0))
    return dp, dxs, dz0.astype(_grad_dtype(z0, ops.out_dtype))


@jax.jit(static_argnums=(5,))
def _bptt_jit(p, xs, z0, mask, g, reverse):
    if xs.shape[1] == 0:
        return jax.tree.map(jnp.zeros_like, p), jnp.zeros_like(xs), jnp.zeros_like(z0)
    xs_tm = jnp.swapaxes(xs, 0, 1)
    _, saved = _forward_segments(p, xs_tm, z0, mask, reverse, 1, keep=True)
    dp, dxs_tm, dz0 = _backward_full(p, xs_tm, saved, g, reverse, 1)
    return dp, jnp.swapaxes(dxs_tm, 0, 1), dz0
