r"""The gated cell over a sequence: :func:`gated_scan`, one entry point over every backend.

:func:`gated_scan` validates once (``gated_jax.cell._core.prepare`` turns the user's
arguments into flat operands, ``Operands``; ``gated_jax.cell._core.check_options`` the loop
options), resolves its ``method`` once (:func:`resolve_method`), picks one :class:`Backend` by
one ``match`` (:func:`select_backend`) and calls it from :data:`BACKENDS`. Every backend has
the same signature, ``backend(ops, opts)``, returning the states batch-first ``(B, T, m)``, or
the final state ``(B, m)`` when ``opts.return_sequence`` is ``False``:

=================  ==========================================================================
backend            what runs
=================  ==========================================================================
``sequential``     the blocked loop, storing the states (:mod:`~gated_jax.cell.sequential`)
``remat``          the blocked loop, recomputing each block in the backward pass
``final_state``    the blocked loop, returning only the last state
``mingru_scan``    ``w_z=None`` with a parallel method: one affine scan, exact
``deer``           Newton with full Jacobians over associative scans
                   (:mod:`~gated_jax.cell.parallel`)
``quasi_deer``     Newton with diagonal Jacobians
``chunked``        sequential chunks in parallel, Newton on the chunk starts
                   (:mod:`~gated_jax.cell.chunked`)
=================  ==========================================================================

The step equation itself lives in :mod:`gated_jax.cell.step`, the loops, adjoint and gradient
matmuls every backend shares in ``gated_jax.cell._core``; this module only dispatches.
The closed-form :func:`gated_bptt` is defined in :mod:`gated_jax.cell.sequential`.

References:
  G. E. Blelloch, "Prefix sums and their applications", CMU-CS-90-190, 1990 (the scans).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gated_jax._validate import boolean, choice, fail, positive_int
from gated_jax.cell import chunked, cost, parallel, sequential
from gated_jax.cell._core import BACKWARDS, Operands, ScanOptions, check_options, prepare
from gated_jax.cell.params import GatedParams
from gated_jax.cell.sequential import gated_bptt as gated_bptt
from gated_jax.cell.sequential import resolve_backward as resolve_backward

__all__ = ["BACKWARDS", "METHODS", "gated_bptt", "gated_scan", "resolve_backward", "resolve_method"]

METHODS = ("sequential", "deer", "quasi_deer", "chunked", "auto")
"""The ``method`` options of :func:`gated_scan` (``"auto"`` is resolved by
:func:`resolve_method`; ``"deer"``/``"quasi_deer"`` are :mod:`gated_jax.cell.parallel`)."""

PARALLEL_METHODS = {"deer": "full", "quasi_deer": "diagonal", "chunked": "full"}
"""The time-parallel methods and the Jacobian each uses (:func:`gated_jax.cell.gated_deer`)."""


class Backend(str, enum.Enum):
    """The backends behind :func:`gated_scan`, one per way of running the recurrence."""

    SEQUENTIAL = "sequential"
    REMAT = "remat"
    FINAL_STATE = "final_state"
    MINGRU_SCAN = "mingru_scan"
    DEER = "deer"
    QUASI_DEER = "quasi_deer"
    CHUNKED = "chunked"


BACKENDS: dict[Backend, Callable[[Operands, ScanOptions], jax.Array]] = {
    Backend.SEQUENTIAL: sequential.stored_states,
    Backend.REMAT: sequential.remat,
    Backend.FINAL_STATE: sequential.final_state,
    Backend.MINGRU_SCAN: parallel.mingru_scan,
    Backend.DEER: parallel.deer,
    Backend.QUASI_DEER: parallel.quasi_deer,
    Backend.CHUNKED: chunked.chunked,
}
"""Backend -> ``backend(ops: Operands, opts: ScanOptions)``: the states ``(B, T, m)``
batch-first, or the final state ``(B, m)`` when ``opts.return_sequence`` is ``False``."""


def resolve_method(
    method: str,
    platform: str | None = None,
    *,
    params: GatedParams | None = None,
    xs: jax.Array | None = None,
    z0: jax.Array | None = None,
    grad: bool = True,
) -> str:
    """The backend that ``method`` names on ``platform`` (default: JAX's default backend).

    ``"auto"`` is resolved by the cost model of :mod:`gated_jax.cell.cost`: the platform's
    measured constants (``gated-jax bench --only platform`` caches them; shipped defaults
    otherwise), the structure of ``params.w_z``, the shapes of ``xs`` ``(..., T, n)`` and an
    iteration estimate from a short probe of the cell (a static rule when ``params`` or ``xs``
    are tracers, under ``jit``). It picks a parallel method only where the model predicts it
    :data:`~gated_jax.cell.cost.MARGIN` times faster than the sequential loop (forward+backward
    with ``grad``, else forward); on the shipped CPU constants that is nowhere the benchmarks
    measured. Without ``params`` and ``xs`` ``"auto"`` is ``"sequential"``.

    Examples:
      >>> from gated_jax.cell import resolve_method
      >>> resolve_method("auto", "cpu")
      'sequential'
    """
    choice("method", method, METHODS)
    grad = boolean("grad", grad)
    if method != "auto":
        return method
    if params is None or xs is None:
        return "sequential"
    T, B = int(jnp.shape(xs)[-2]), int(np.prod(jnp.shape(xs)[:-2], dtype=np.int64))
    shape = cost.shape_of(params, T, max(B, 1))
    constants = cost.platform_constants(platform)
    estimate = lambda: cost.estimate_iterations(params, xs, z0)  # noqa: E731
    return cost.decide(shape, constants, estimate, grad=grad).method


def select_backend(method: str, opts: ScanOptions, recurrent_gate: bool) -> Backend:
    """The one backend a resolved ``method`` runs with ``opts``, for a cell with
    (``recurrent_gate``) or without (minGRU) ``W_z``."""
    match method:
        case "sequential" if not opts.return_sequence:
            return Backend.FINAL_STATE
        case "sequential" if opts.remat:
            return Backend.REMAT
        case "sequential":
            return Backend.SEQUENTIAL
        case "deer" | "quasi_deer" if not recurrent_gate:
            return Backend.MINGRU_SCAN
        case "deer":
            return Backend.DEER
        case "quasi_deer":
            return Backend.QUASI_DEER
        case "chunked":  # minGRU included: one pass of local scans
            return Backend.CHUNKED
    raise fail("method", method, "one of " + ", ".join(repr(m) for m in METHODS))


def _solver_options(method: str, opts: ScanOptions, tol, max_iters) -> ScanOptions:
    """``opts`` with the parallel solver's ``tol`` and ``max_iters`` checked into them."""
    if method not in PARALLEL_METHODS:
        return opts
    _, tol, max_iters = parallel.check_solver_options(PARALLEL_METHODS[method], tol, max_iters)
    if opts.backward == "auto":
        opts = opts._replace(backward="closed_form")
    if opts.backward != "closed_form":
        raise fail(
            "backward",
            opts.backward,
            f"'closed_form' with method={method!r} (its gradients are implicit; no autodiff "
            "through the Newton iterations)",
        )
    return opts._replace(tol=tol, max_iters=max_iters)


def _call(backend: Backend, ops: Operands, opts: ScanOptions, chunk=None) -> jax.Array:
    """Run ``backend``; a forward-mode error of the closed-form backward pass says what to do."""
    try:
        if backend is Backend.CHUNKED:
            return chunked.chunked(ops, opts, chunk)
        return BACKENDS[backend](ops, opts)
    except TypeError as e:
        if "forward-mode" not in str(e):
            raise
        raise TypeError(
            "gated_scan: forward-mode autodiff (jvp, jacfwd) cannot go through the closed-form "
            "backward pass (a jax.custom_vjp); pass backward='autodiff' to gated_scan (or to "
            "GatedRNN) to differentiate the scan with JAX's own rules, which support forward mode"
        ) from e


def gated_scan(
    params: GatedParams,
    xs: jax.Array,
    z0: jax.Array | None = None,
    *,
    seq_lengths: jax.Array | None = None,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool | int = False,
    backward: str = "auto",
    method: str = "sequential",
    tol: float | None = None,
    max_iters: int | None = None,
    return_sequence: bool = True,
    chunk: int | None = None,
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
      backward: ``"auto"`` (default): ``"closed_form"`` or ``"stepwise"``, picked from the
        shapes and the platform by a fixed rule (:func:`resolve_backward`, which also says
        which one a call takes). ``"closed_form"`` (reverse mode: ``grad``, ``vjp``,
        ``jacrev``): the backward pass above. ``"autodiff"``: JAX differentiates the hoisted,
        blocked scan itself. ``"stepwise"``: JAX differentiates one plain ``lax.scan`` with the
        whole step in its body (both projections per step, no blocks), the leanest program,
        for shapes where fixed costs dominate. All four give the same gradients.
        ``"autodiff"`` and ``"stepwise"`` also support forward mode (``jvp``, ``jacfwd``,
        ``hessian``). A ``jax.custom_vjp`` cannot be differentiated in forward mode, so
        forward mode through the closed form raises a ``TypeError`` naming this switch.
        (Under an outer ``jax.jit`` JAX raises its own "can't apply forward-mode autodiff
        (jvp) to a custom_vjp function" first.) The Jacobian diagnostics run their
        trajectory with ``"autodiff"``, so they support forward mode as they are. With
        ``remat`` and ``"autodiff"`` or ``"stepwise"``, the whole scan is wrapped in
        ``jax.checkpoint``.
      method: ``"sequential"`` (the loop above), ``"deer"`` (Newton over the whole sequence,
        exact Jacobians in ``w_z``'s structure: dense, per head, or diagonal),
        ``"quasi_deer"`` (their diagonals) or ``"auto"`` (:func:`resolve_method`). The
        parallel methods (:func:`gated_jax.cell.gated_deer`) solve the recurrence by
        associative scans in ``O(log T)`` depth per iteration; with ``w_z=None`` (minGRU) one
        scan is exact. Their results equal the sequential method's
        wherever the solver converged, and never silently differ: under eager evaluation a
        solve that did not converge within ``max_iters`` raises
        :class:`~gated_jax.cell.parallel.DeerNotConverged`; under ``jit`` the compiled program
        runs the sequential loop instead (a ``lax.cond``; under an outer ``vmap`` both branches
        run). Gradients are exact, by implicit differentiation at the converged trajectory;
        ``unroll`` and ``remat`` do not apply, ``backward`` must be ``"closed_form"``.
        ``"chunked"`` (:func:`gated_jax.cell.gated_chunked`) runs chunks of ``chunk`` steps
        sequentially, all chunks at once, and solves for the chunk starts by Newton: depth
        ``chunk`` per iteration instead of ``log T``, with the same guarantees.
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
      chunk: the chunk length of ``method="chunked"``, an int >= 1 (``None``:
        ``ceil(sqrt(T))``); ignored by the other methods.

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
    opts = check_options(reverse, unroll, remat, backward, return_sequence)
    name = resolve_method(method)
    chunk = positive_int("chunk", chunk, allow_none=True)
    ops = prepare(params, xs, z0, seq_lengths, states=opts.return_sequence)
    if method == "auto" and opts.backward in ("auto", "closed_form"):
        name = resolve_method(method, params=ops.params, xs=ops.xs, z0=ops.z0)
    opts = _solver_options(name, opts, tol, max_iters)
    if opts.backward == "auto":  # the per-shape rule (parallel methods are closed_form above)
        path = resolve_backward(
            "auto",
            ops.xs.shape[0],
            ops.T,
            ops.xs.shape[-1],
            ops.m,
            remat=opts.remat,
            return_sequence=opts.return_sequence,
        )
        opts = opts._replace(backward=path)
    zs = _call(select_backend(name, opts, ops.params.w_z is not None), ops, opts, chunk)
    shape = ops.batch + ((ops.T, ops.m) if opts.return_sequence else (ops.m,))
    return jnp.reshape(zs, shape).astype(ops.out_dtype)
