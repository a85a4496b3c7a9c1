r"""The sequential backends of :func:`~gated_jax.cell.gated_scan` and the closed-form BPTT.

The forward pass is the blocked loop of ``gated_jax.cell._core.blocked_forward``: time cut
into blocks, a nested ``lax.scan`` over blocks so that every temporary is block-sized, the
input projections two einsums per block outside the step loop, and one ``(B, m) x (m, m)``
matmul per step. The backward pass is the closed form of :func:`gated_bptt`, registered with
``jax.custom_vjp``: per block, a reverse-time loop with one matmul per step
(``gated_jax.cell._core.adjoint``), then the block's weight gradients as
``(m, K B) x (K B, n)`` matmuls. What the forward pass keeps decides the backend:

* :func:`stored_states` (the default): the states ``zs``, its output, and nothing else. The
  backward pass takes a block's ``z[t-1]`` from ``zs`` shifted by one, recomputes the block's
  gates from them, ``c = sigma(W_c x + b_c + W_z z[t-1])``, as one ``(K B, m) x (m, m)``
  matmul instead of ``K`` sequential ones, and forms ``s = c (z[t-1] - z[t])``.
* :func:`remat`: only each block's start state, ``K ~ sqrt(T)``; the backward pass recomputes
  a block's forward loop, then runs its adjoint.
* :func:`final_state`: as :func:`remat`, and no ``T``-step output at all.

With ``backward="autodiff"`` each of them lets JAX differentiate the blocked forward loop
itself (wrapped in ``jax.checkpoint`` for ``remat``), which also supports forward mode.

References:
  P. J. Werbos, "Backpropagation through time: what it does and how to do it", Proc. IEEE
  78(10), 1990. A. Griewank, A. Walther, "Evaluating Derivatives", 2nd ed., SIAM 2008
  (checkpointing).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from gated_jax._validate import array_shape, check_array, choice, fail
from gated_jax.cell import step as _step
from gated_jax.cell._core import (
    BACKWARDS,
    Operands,
    Saved,
    ScanOptions,
    add_params,
    adjoint,
    block_dims,
    block_length,
    block_mask,
    block_x,
    blocked_forward,
    check_options,
    input_grads,
    mask_piece,
    param_grads,
    prepare,
    prev,
    put,
    run,
    tm,
)
from gated_jax.cell.params import GatedParams, as_params

__all__ = ["gated_bptt", "resolve_backward"]  # the backends are reached through gated_scan


# --------------------------------------------------------------------------------------------
# the per-shape rule of backward="auto"

# CPU: the plain autodiff loop for a batch of narrow states (B m >= 2048, m <= 64), where the
# closed form's fixed costs (layout changes, the gate recomputed as one more (m, m) matmul, the
# block matmuls) outweigh its savings; read off the speed map (benchmarks/speed_map.py, whose
# notes check the rule against the measured best of the two paths).
_STEPWISE_MIN_BM = 2048
_STEPWISE_MAX_M = 64


def resolve_backward(
    backward: str,
    B: int,
    T: int,
    n: int,
    m: int,
    *,
    remat: bool | int = False,
    return_sequence: bool = True,
    platform: str | None = None,
) -> str:
    """The backward pass ``backward`` runs for a ``(B, T, n) -> (B, T, m)`` scan on
    ``platform`` (default: JAX's default backend): ``backward`` itself unless it is ``"auto"``.

    ``"auto"`` is a fixed rule of the shapes and the platform (no timing at run time):

    * ``"closed_form"`` with ``remat`` or ``return_sequence=False`` (their memory bounds
      belong to the blocked loop), and on every platform but CPU (no accelerator measurement
      backs another choice yet);
    * on CPU, ``"stepwise"`` (JAX's autodiff of the plain loop, the whole step in the
      ``lax.scan`` body) for a batch of narrow states, ``B m >= 2048`` with ``m <= 64``,
      where the closed form's fixed costs outweigh what it saves; ``"closed_form"``
      otherwise.

    Every path computes the same gradients (to rounding).

    Examples:
      >>> from gated_jax.cell import resolve_backward
      >>> resolve_backward("auto", 32, 256, 256, 256, platform="cpu")
      'closed_form'
      >>> resolve_backward("auto", 64, 64, 16, 64, platform="cpu")
      'stepwise'
      >>> resolve_backward("autodiff", 64, 64, 16, 64)
      'autodiff'
    """
    choice("backward", backward, BACKWARDS)
    if backward != "auto":
        return backward
    if remat is not False or not return_sequence:
        return "closed_form"
    if (platform or jax.default_backend()) != "cpu":
        return "closed_form"
    narrow = B * m >= _STEPWISE_MIN_BM and m <= _STEPWISE_MAX_M
    return "stepwise" if narrow else "closed_form"


# --------------------------------------------------------------------------------------------
# the backward pass in blocks


def _piece_backward(p, x_tm, z_in, mask, g_tm, r, zk, reverse: bool, unroll: int):
    """One piece's adjoint and gradients. ``zk``: the piece's stored states, whose gates are
    recomputed at once, ``c = sigma(W_c x + b_c + W_z z[t-1])`` over the whole piece (the
    step's own :func:`~gated_jax.cell.step.gate`); ``None``: the piece's forward loop is
    run again from its start state ``z_in`` for the states and gates."""
    ck = None
    if zk is None:
        _, (zk, ck) = run(p, x_tm, z_in, mask, reverse, unroll, "gates")
    zprev = prev(zk, z_in, reverse)
    if ck is None:
        ck = _step.gate(p.w_z, zprev, _step.gate_input(p, x_tm), mask)
    r, (pbar, ubar) = adjoint(p.w_z, g_tm, ck, zprev, zk, r, reverse, unroll)
    return r, param_grads(p, x_tm, zprev, pbar, ubar), input_grads(p, pbar, ubar)


def _blocked_backward(p, xs, mask, zs, saved: Saved, g, r, reverse: bool, unroll: int, K: int):
    """Closed-form BPTT in blocks, last (in the run direction) first. ``g``: ``dl/dzs``
    batch-first, or ``None`` when only the final state was returned (its cotangent is then
    the initial adjoint ``r``). ``zs``: the stored states (default path) or ``None``
    (recompute). Returns ``(dparams, dxs, dz0)``; ``dxs`` is written block by block into one
    buffer."""
    B, T, n = xs.shape
    q, qK = T // K, (T // K) * K

    def piece(carry, x_tm, mk, z_in, start, length):
        r, dp, dxs = carry
        g_tm = None if g is None else tm(lax.dynamic_slice_in_dim(g, start, length, axis=1))
        zk = None if zs is None else tm(lax.dynamic_slice_in_dim(zs, start, length, axis=1))
        r, d, dx = _piece_backward(p, x_tm, z_in, mk, g_tm, r, zk, reverse, unroll)
        return r, add_params(dp, d), put(dxs, tm(dx), start)

    def block(carry, i):
        x_tm, mk = block_x(xs, i, K), block_mask(mask, i, K)
        return piece(carry, x_tm, mk, saved.starts[i], i * K, K), None

    def tail(carry):
        x_tm, mk = tm(xs[:, qK:]), mask_piece(mask, qK, T)
        return piece(carry, x_tm, mk, saved.tail_in, qK, T - qK)

    carry = (r, jax.tree.map(jnp.zeros_like, p), jnp.zeros(xs.shape, xs.dtype))
    if not reverse and qK < T:
        carry = tail(carry)
    carry, _ = lax.scan(block, carry, jnp.arange(q), reverse=not reverse)
    if reverse and qK < T:
        carry = tail(carry)
    r, dp, dxs = carry
    return dp, dxs, r


# --------------------------------------------------------------------------------------------
# the blocked loop as a custom VJP: keep = the forward pass stores the states for the backward


def _blocked(p, xs, z0, mask, reverse, unroll, K, seq, keep):
    zs, last, _ = blocked_forward(p, xs, z0, mask, reverse, unroll, K, seq)
    return zs if seq else last


def _blocked_fwd(p, xs, z0, mask, reverse, unroll, K, seq, keep):
    zs, last, saved = blocked_forward(p, xs, z0, mask, reverse, unroll, K, seq)
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


def _stepwise(p, xs, z0, mask, reverse: bool, unroll: int, seq: bool):
    """The plain loop: one ``lax.scan`` over time-major ``xs``, the whole step in its body
    (both projections and the recurrent matmul per step, no blocks), differentiated by JAX."""
    w_zt = None if p.w_z is None else _step.loop_weights(p.w_z)

    def step(z, inp):
        x, mk = inp
        a, u = _step.projections(p, x)
        z, _ = _step.update(w_zt, z, a, u, mk, transposed=True)
        return z, (z if seq else None)

    last, zs = lax.scan(step, z0, (tm(xs), mask), reverse=reverse, unroll=unroll)
    return tm(zs) if seq else last


@jax.jit(static_argnums=(4, 5, 6, 7, 8, 9))
def _sequential_jit(p, xs, z0, mask, reverse, unroll, remat, backward, seq, K):
    B, T, _ = xs.shape
    if T == 0:
        return jnp.zeros((B, 0, z0.shape[-1]), z0.dtype) if seq else z0
    if backward == "stepwise":

        def loop(p, xs, z0, mask):
            return _stepwise(p, xs, z0, mask, reverse, unroll, seq)

        return (jax.checkpoint(loop) if remat else loop)(p, xs, z0, mask)
    if backward == "autodiff":
        # JAX differentiates the blocked forward scan itself
        def run_blocks(p, xs, z0, mask):
            zs, last, _ = blocked_forward(p, xs, z0, mask, reverse, unroll, K, seq)
            return zs if seq else last

        return (jax.checkpoint(run_blocks) if remat else run_blocks)(p, xs, z0, mask)
    keep = seq and not remat
    return _blocked_cf(p, xs, z0, mask, reverse, unroll, K, seq, keep)


def _blocked_scan(ops: Operands, opts: ScanOptions) -> jax.Array:
    """The blocked loop on ``ops`` with ``opts``' blocks (:func:`~._core.block_length`)."""
    K = block_length(ops.T, opts.remat, opts.return_sequence, *block_dims(ops))
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
        K,
    )


# --------------------------------------------------------------------------------------------
# the backends: backend(ops, opts) -> states (B, T, m), or the final state (B, m)


def stored_states(ops: Operands, opts: ScanOptions) -> jax.Array:
    """The default backend (``remat=False``, the sequence returned): the forward pass keeps
    only the states; per block of at most 1 MiB (and ``max(64, T/16)`` steps) the backward
    pass recomputes the gates from them as one large matmul."""
    return _blocked_scan(ops, opts)


def remat(ops: Operands, opts: ScanOptions) -> jax.Array:
    """``remat=True`` (or a block length ``K``): the forward pass keeps each block's start
    state; the backward pass recomputes one block's forward loop at a time, temporary memory
    ``O((T/K + K) B m)`` besides ``zs``."""
    return _blocked_scan(ops, opts)


def final_state(ops: Operands, opts: ScanOptions) -> jax.Array:
    """``return_sequence=False``: the final state ``(B, m)``, one state kept per block of
    ``K = round(sqrt(T))`` steps (``remat=K`` sets ``K``) and nothing ``T`` steps long."""
    return _blocked_scan(ops, opts)


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


def _cotangent(ops: Operands, dzs) -> jax.Array:
    """``dzs`` checked against the outputs' shape, flat ``(B, T, m)`` in the compute dtype."""
    check_array("dzs", dzs)
    if array_shape(dzs) != ops.batch + (ops.T, ops.m):
        raise fail("dzs", dzs, f"of the shape of the outputs, {ops.batch + (ops.T, ops.m)}")
    # (B, T, m) with B from the flattened inputs: a -1 cannot be inferred when T == 0
    return jnp.reshape(jnp.asarray(dzs, ops.xs.dtype), (ops.xs.shape[0], ops.T, ops.m))


def _user_grads(ops: Operands, params, xs, z0, grads):
    """The flat gradients ``(dp, dxs, dz0)`` in the user's shapes and dtypes."""
    dp, dxs, dz0 = grads
    dp = jax.tree.map(lambda d, w: d.astype(_grad_dtype(w, ops.out_dtype)), dp, as_params(params))
    dxs = jnp.reshape(dxs, array_shape(xs)).astype(_grad_dtype(xs, ops.out_dtype))
    dz0 = jnp.reshape(dz0, ops.batch + (ops.m,))
    if z0 is None:
        return dp, dxs, dz0.astype(ops.out_dtype)
    dz0 = _unbroadcast(dz0, array_shape(z0))
    return dp, dxs, dz0.astype(_grad_dtype(z0, ops.out_dtype))


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
    its parameter's shape: ``dl/dW_x`` is ``(m, n)`` like ``W_x`` (the transpose of the
    ``n x m`` layout of the denominator convention).

    The backward pass mirrors the forward one: a reverse-time loop with one
    ``(s delta) @ W_z`` matmul per step (the transpose of the forward's ``z @ W_z^T``), then
    every weight and input gradient as large matmuls over ``T B`` rows (the transposes of the
    hoisted projections). A step past ``seq_lengths`` has ``c = 1``, so ``s = 0`` and
    ``1 - c = 0``: the adjoint passes through unchanged and the step adds nothing.

    Args:
      params: as for :func:`~gated_jax.cell.gated_scan`.
      xs: as for :func:`~gated_jax.cell.gated_scan`.
      z0: as for :func:`~gated_jax.cell.gated_scan`; ``None`` means zeros (``dz0`` then has
        the batch shape ``(..., m)``).
      dzs: cotangent of the outputs, shape ``(..., T, m)``.
      seq_lengths: as for :func:`~gated_jax.cell.gated_scan`.
      reverse: as for :func:`~gated_jax.cell.gated_scan`.

    Returns:
      ``(dparams, dxs, dz0)``: a :class:`~gated_jax.cell.GatedParams` of gradients (each the
      shape and dtype of its parameter; ``None`` fields stay ``None``), ``dxs`` shaped like
      ``xs`` and ``dz0`` shaped like ``z0``, each in its argument's dtype. Integer ``xs`` (or
      ``z0``) get their gradient in the float dtype the recurrence returns (where ``jax.vjp``
      would give ``float0`` zeros).

    Raises:
      ValueError: naming the argument and its value, as :func:`~gated_jax.cell.gated_scan`,
        and for ``dzs`` not of the outputs' shape.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gated_jax.cell import gated_bptt, init_gated_params
      >>> p = init_gated_params(jax.random.key(0), 3, 4)
      >>> dp, dxs, dz0 = gated_bptt(p, jnp.ones((5, 3)), None, jnp.ones((5, 4)))
      >>> dp.w_x.shape, dxs.shape, dz0.shape
      ((4, 3), (5, 3), (4,))

    References:
      P. J. Werbos, "Backpropagation through time: what it does and how to do it", Proc. IEEE
      78(10), 1990.
    """
    opts = check_options(reverse, 1, False, "closed_form")
    ops = prepare(params, xs, z0, seq_lengths)
    g = _cotangent(ops, dzs)
    K = block_length(ops.T, False, True, *block_dims(ops))
    grads = _bptt_jit(ops.params, ops.xs, ops.z0, ops.mask, g, opts.reverse, K)
    return _user_grads(ops, params, xs, z0, grads)


@jax.jit(static_argnums=(5, 6))
def _bptt_jit(p, xs, z0, mask, g, reverse, K):
    B, T, _ = xs.shape
    if T == 0:
        return jax.tree.map(jnp.zeros_like, p), jnp.zeros_like(xs), jnp.zeros_like(z0)
    zs, _, saved = blocked_forward(p, xs, z0, mask, reverse, 1, K, True)
    return _blocked_backward(p, xs, mask, zs, saved, g, jnp.zeros_like(z0), reverse, 1, K)
