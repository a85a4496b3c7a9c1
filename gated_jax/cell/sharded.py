r"""Sequence parallelism: the gated recurrence with its time axis sharded over devices.

For one long sequence (``T`` in the millions) the time axis itself is split over the ``D``
devices of a mesh axis: device ``d`` holds steps ``d T/D .. (d+1) T/D - 1`` of the inputs and
of the states, and is one chunk of the chunked hybrid (:mod:`gated_jax.cell.chunked`), written
with :func:`jax.shard_map` and JAX's own collectives (``all_gather``, ``psum``); XLA's runtime
moves the data (NCCL on GPU, ICI on TPU, Gloo across CPU processes):

* **minGRU** (``W_z = None``), exact with one exchange: each device runs its local affine
  recurrence from zero, ``T/D`` steps, keeping only its summary ``(P, y)``: the product of its
  gates ``P = c[T/D-1] ... c[0]`` and its last state ``y`` (``2 B m`` numbers). The ``D``
  summaries are all-gathered, every device composes them into its start state
  ``s_d = y_{d-1} + P_{d-1} s_{d-1}`` and runs its steps from ``s_d`` (a second local pass
  rather than the correction ``z[t] = y[t] + P[t] s_d``, which would store ``y`` and ``P``
  for every step: twice the memory).
* **Dense and structured cells**, by Newton on the ``D - 1`` unknown device starts: each
  iteration every device runs its ``T/D`` steps from its current start guess with the Jacobian
  product ``G_d`` (in ``w_z``'s structure), all-gathers ``(e_d, G_d)`` (its last state and
  product: ``B (m + m)`` numbers for a diagonal ``w_z``, ``B (m + m h)`` for heads,
  ``B (m + m^2)`` dense) and every device solves the same ``D``-step boundary recurrence
  ``s_{d+1} = e_d + G_d (s_d^{new} - s_d)``, so the iteration count and the stopping decision are
  the same everywhere. Convergence is the per-step residual test of
  :func:`~gated_jax.cell.gated_deer` over the whole trajectory. Without convergence
  (``fallback=True``) the devices relay: ``D - 1`` rounds in which each takes its predecessor's
  last state, the sequential result (``info.sequential``).
* **Gradients** by a sharded adjoint (a ``jax.custom_vjp``): each device runs its reverse
  adjoint from zero, the ``D`` local results and transposed products are all-gathered, the
  boundary adjoints ``R_d = r_d + G_d^T R_{d+1}`` solved on every device, each device reruns its
  adjoint from ``R_{d+1}``, and the weight gradients are summed over the devices (``psum``).

Per device: memory ``O((T/D) B m)`` for the states and inputs plus ``D`` gathered chunk
products; per Newton iteration work ``O((T/D) B m)`` (diagonal, minGRU), ``O((T/D) B m h^2)``
(heads), ``O((T/D) B m^3)`` (dense), depth ``T/D + D``, one all-gather of ``D B (m + |G|)``
numbers (``|G|`` the entries of one product: ``m``, ``m h`` or ``m^2``).

References:
  A. Bellen, M. Zennaro, "Parallel algorithms for initial-value problems for difference and
  differential equations", 1989. The linear-recurrence pattern (local scans, gathered
  summaries, a local correction) is that of recurrentgemma's sharded RG-LRU scan.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gated_jax._validate import (
    boolean,
    check_xs,
    check_z0,
    compute_dtype,
    fail,
    output_dtype,
)
from gated_jax.cell import chunked as _chunked
from gated_jax.cell._affine import DeerInfo, budget, check_solver_options, default_tol
from gated_jax.cell.params import GatedParams, check_params

__all__ = ["collective_bytes", "sequence_parallel_scan"]


def _comm(axis: str) -> _chunked.Chunks:
    """One chunk per device of mesh axis ``axis``."""
    return _chunked.Chunks(
        gather=lambda x: lax.all_gather(x, axis),
        local=lambda stack: stack[lax.axis_index(axis)],
        total=lambda x: lax.psum(x, axis),
    )


def _relay(p, x, z0, S, comm: _chunked.Chunks, D: int):
    """The exact starts on sharded time, sequentially: ``D - 1`` rounds in which every device
    restarts from its predecessor's last state (after round ``r`` the first ``r + 1`` starts
    are exact)."""

    def round_(_, S):
        last = _chunked.chunk_end(p, x, None, comm.local(S))
        return jnp.concatenate([z0[None], comm.gather(last)[:-1]], axis=0)

    return lax.fori_loop(0, D - 1, round_, S)


def _forward_local(p, xs, z0, axis, D, tol, max_iters, fallback):
    """One device's part: its ``(B, T/D, n)`` inputs to its ``(B, T/D, m)`` states."""
    comm = _comm(axis)
    x = jnp.swapaxes(xs, 0, 1)
    S0 = jnp.zeros((D,) + z0.shape, z0.dtype).at[0].set(z0)
    exact = (lambda S: _relay(p, x, z0, S, comm, D)) if fallback else None
    zs, _, info = _chunked.solve(p, x, None, z0, S0, comm, tol, max_iters, exact)
    return jnp.swapaxes(zs, 0, 1), info


def _backward_local(p, xs, z0, zs, g, axis):
    tm = lambda v: jnp.swapaxes(v, 0, 1)
    dp, dx, dz0 = _chunked.backward(p, tm(xs), None, tm(zs), z0, tm(g), _comm(axis))
    return dp, tm(dx), dz0


def _specs(axis):
    return P(), P(None, axis, None), P()


def _solve(p, xs, z0, mesh, axis, tol, max_iters, fallback):
    D = mesh.shape[axis]
    fn = functools.partial(
        _forward_local, axis=axis, D=D, tol=tol, max_iters=max_iters, fallback=fallback
    )
    rep, seq, _ = _specs(axis)
    f = jax.shard_map(
        fn, mesh=mesh, in_specs=(rep, seq, rep), out_specs=(seq, rep), check_vma=False
    )
    return f(p, xs, z0)


def _solve_fwd(p, xs, z0, mesh, axis, tol, max_iters, fallback):
    zs, info = _solve(p, xs, z0, mesh, axis, tol, max_iters, fallback)
    return (zs, info), (p, xs, z0, zs)


def _solve_bwd(mesh, axis, tol, max_iters, fallback, res, cts):
    p, xs, z0, zs = res
    rep, seq, _ = _specs(axis)
    f = jax.shard_map(
        functools.partial(_backward_local, axis=axis),
        mesh=mesh,
        in_specs=(rep, seq, rep, seq, seq),
        out_specs=(rep, seq, rep),
        check_vma=False,
    )
    return f(p, xs, z0, zs, cts[0])


_solve_vjp = jax.custom_vjp(_solve, nondiff_argnums=(3, 4, 5, 6, 7))
_solve_vjp.defvjp(_solve_fwd, _solve_bwd)


def _place(tree, mesh: Mesh, spec):
    """``tree`` laid out as ``spec`` over ``mesh`` (a reshard on a mesh of explicit axes, a
    sharding constraint on one of automatic axes)."""
    sharding = NamedSharding(mesh, spec)
    if all(t == AxisType.Explicit for t in mesh.axis_types):
        return jax.tree.map(lambda v: jax.sharding.reshard(v, sharding), tree)
    return lax.with_sharding_constraint(tree, sharding)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7, 8, 9))
def _run(p, xs, z0, mesh, axis, tol, max_iters, fallback, batch, dtypes):
    cdt, out = dtypes
    n, m = p.w_x.shape[1], p.w_x.shape[0]
    T = xs.shape[-2]
    B = int(np.prod(batch, dtype=np.int64))
    p = jax.tree.map(lambda v: jnp.asarray(v, cdt), p)
    xs_f = jnp.reshape(jnp.asarray(xs, cdt), (B, T, n))
    z0 = jnp.zeros(batch + (m,), cdt) if z0 is None else jnp.asarray(z0, cdt)
    z0_f = jnp.reshape(jnp.broadcast_to(z0, batch + (m,)), (B, m))
    xs_f = _place(xs_f, mesh, P(None, axis, None))
    p, z0_f = _place(p, mesh, P()), _place(z0_f, mesh, P())
    zs, info = _solve_vjp(p, xs_f, z0_f, mesh, axis, tol, max_iters, fallback)
    return jnp.reshape(zs, batch + (T, m)).astype(out), info


def sequence_parallel_scan(
    params: GatedParams,
    xs: jax.Array,
    z0: jax.Array | None = None,
    *,
    mesh: Mesh,
    axis_name: str,
    tol: float | None = None,
    max_iters: int | None = None,
    fallback: bool = True,
) -> tuple[jax.Array, DeerInfo]:
    r"""The gated recurrence with the time axis of ``xs`` sharded over mesh axis ``axis_name``.

    .. math::

        c[t] = \sigma(W_c x[t] + W_z z[t-1] + b_c), \qquad
        z[t] = c[t] \odot z[t-1] + (1 - c[t]) \odot (W_x x[t] + b_x),

    evaluated with each of the ``D`` devices of ``axis_name`` holding ``T / D`` consecutive
    steps of the inputs and of the states (module :mod:`gated_jax.cell.sharded`): minGRU
    exactly with one exchange (local affine summaries all-gathered, each device composes its
    start and runs its steps from it), the other cells by Newton on the ``D - 1`` device start
    states (the chunked hybrid, one chunk per device, all-gathered chunk Jacobian products). The
    result equals :func:`~gated_jax.cell.gated_scan` to the residual bound of
    :func:`~gated_jax.cell.gated_deer`; gradients (``jax.grad``, ``jax.vjp``) are those of the
    sequential recurrence, by a sharded adjoint. Works unchanged in a multi-process program
    (after :func:`jax.distributed.initialize`, ``xs`` a global array over every process's
    devices). Work and collectives per iteration: module docstring.

    Args:
      params: :class:`~gated_jax.cell.GatedParams` (replicated; any ``w_z`` structure).
      xs: inputs ``(..., T, n)``, best already sharded along ``T`` over ``axis_name``
        (``NamedSharding(mesh, P(None, ..., axis_name, None))``); ``T`` divisible by ``D``.
      z0: initial state ``(..., m)``; ``None`` means zeros.
      mesh: a :class:`jax.sharding.Mesh`; its other axes hold replicas.
      axis_name: the mesh axis the time axis is split over.
      tol: the residual tolerance (``None``: ``1e-12`` in float64, ``1e-5`` otherwise).
      max_iters: the most Newton updates, an int >= 1 (``None``: 100; at most ``D - 1``).
      fallback: without convergence, relay the exact states device to device (the sequential
        result; ``info.sequential``); ``False`` returns the last iterate (check
        ``info.converged``). A strict bool.

    Returns:
      ``(zs, info)``: the states ``(..., T, m)``, sharded like ``xs`` along ``T``, and a
      :class:`~gated_jax.cell.DeerInfo` (replicated).

    Raises:
      ValueError: naming the argument, for bad shapes or options, an axis not in ``mesh``, or
        ``T`` not divisible by the axis size.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gated_jax.cell import gated_scan, init_gated_params, sequence_parallel_scan
      >>> mesh = jax.make_mesh((1,), ("time",))  # on a host with D devices: (D,)
      >>> p = init_gated_params(jax.random.key(0), 3, 4, recurrent_gate="diagonal")
      >>> xs = jax.random.normal(jax.random.key(1), (2, 64, 3))
      >>> zs, info = sequence_parallel_scan(p, xs, mesh=mesh, axis_name="time")
      >>> bool(info.converged), bool(jnp.max(jnp.abs(zs - gated_scan(p, xs))) < 1e-5)
      (True, True)
    """
    p, n, m = check_params(params)
    batch, T = check_xs(xs, n)
    if z0 is not None:
        check_z0(z0, batch, m)
    _, tol, max_iters = check_solver_options("full", tol, max_iters)
    fallback = boolean("fallback", fallback)
    if not isinstance(mesh, Mesh):
        raise fail("mesh", mesh, "a jax.sharding.Mesh")
    if axis_name not in mesh.axis_names:
        raise fail("axis_name", axis_name, f"one of the mesh's axes {tuple(mesh.axis_names)}")
    D = int(mesh.shape[axis_name])
    if T == 0 or T % D:
        raise fail("xs", xs, f"of a length T > 0 divisible by the {D} devices of {axis_name!r}")
    cdt = compute_dtype(*p, xs, z0)
    tol = default_tol(cdt) if tol is None else tol
    max_iters = budget(max_iters, max(1, D - 1))
    dtypes = (jnp.dtype(cdt), jnp.dtype(output_dtype(*p, xs, z0)))
    return _run(p, xs, z0, mesh, axis_name, tol, max_iters, fallback, batch, dtypes)


def collective_bytes(params: GatedParams, batch: int, devices: int, itemsize: int) -> dict:
    """What one device receives per Newton iteration of :func:`sequence_parallel_scan` (its
    all-gathers, counting its own slice), from the shapes: ``{"states": D B m,
    "jacobians": D B |G|, "scalar": D}`` in bytes (``|G|``: ``m`` for minGRU and a diagonal
    ``w_z``, ``m h`` for heads, ``m^2`` dense); minGRU gathers once, ``2 D B m``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gated_jax.cell import GatedParams
      >>> from gated_jax.cell.sharded import collective_bytes
      >>> p = GatedParams(jnp.ones((64, 8)), jnp.ones((64, 8)), jnp.ones((64, 64)))
      >>> collective_bytes(p, 1, 4, 8)
      {'states': 2048, 'jacobians': 131072, 'scalar': 32}
    """
    m = int(np.shape(params.w_x)[0])
    form = _chunked.structure(params.w_z)
    w_z = params.w_z
    width = m if form == "dense" else 1 if w_z is None or form == "diagonal" else w_z.shape[-1]
    D, B = int(devices), int(batch)
    return {
        "states": D * B * m * itemsize,
        "jacobians": D * B * m * int(width) * itemsize,
        "scalar": D * itemsize,
    }
