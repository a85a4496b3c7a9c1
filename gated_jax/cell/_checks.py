"""Argument checks shared by the recurrence's public functions (one message format).

Every message reads `` `name` (=value) must be ... `` (:mod:`gated_jax._validate`), naming the
argument as the user wrote it. Checks run on static shapes and dtypes only, so they work on
tracers under ``jit`` and ``vmap``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gated_jax._validate import check_fits_in_memory, fail
from gated_jax.cell.params import GatedParams


def shape(a) -> tuple[int, ...]:
    return tuple(np.shape(a))


def check_array(name: str, a) -> None:
    """Arrays only (JAX or NumPy, or tracers): no lists, strings or other objects."""
    if isinstance(a, (jax.Array, np.ndarray, np.generic)):  # tracers are jax.Arrays
        if not (jnp.issubdtype(a.dtype, jnp.number) or a.dtype == jnp.bool_):
            raise fail(name, a, f"a numeric array (got dtype {a.dtype})")
        if jnp.issubdtype(a.dtype, jnp.complexfloating):
            raise fail(name, a, "a real array")
        return
    hint = " (wrap it with jnp.asarray)" if isinstance(a, (list, tuple, int, float)) else ""
    raise fail(name, a, f"a JAX or NumPy array; got {type(a).__name__}{hint}")


def as_params(params) -> GatedParams:
    """``params`` as :class:`GatedParams` (a plain 3- or 5-tuple is accepted)."""
    if isinstance(params, GatedParams):
        return params
    if isinstance(params, tuple) and len(params) in (2, 3, 4, 5) and not hasattr(params, "_fields"):
        return GatedParams(*params)
    raise fail("params", type(params).__name__, "a GatedParams")


def check_params(params) -> tuple[GatedParams, int, int]:
    """Validate the parameter shapes; returns ``(params, n, m)``."""
    p = as_params(params)
    for name in GatedParams._fields:
        a = getattr(p, name)
        if a is not None:
            check_array(f"params.{name}", a)
            if not jnp.issubdtype(jnp.result_type(a), jnp.inexact):
                if not jnp.issubdtype(jnp.result_type(a), jnp.integer):
                    raise fail(f"params.{name}", a, "a float array")
    sx = shape(p.w_x)
    if len(sx) != 2:
        raise fail("params.w_x", p.w_x, "a matrix of shape (m, n)")
    m, n = sx
    if m == 0 or n == 0:
        raise fail("params.w_x", p.w_x, "of shape (m, n) with m >= 1 and n >= 1")
    if shape(p.w_c) != (m, n):
        raise fail("params.w_c", p.w_c, f"of shape (m, n) = {(m, n)}, like w_x")
    if p.w_z is not None and shape(p.w_z) != (m, m):
        raise fail("params.w_z", p.w_z, f"None or of shape (m, m) = {(m, m)}")
    for name in ("b_c", "b_x"):
        b = getattr(p, name)
        if b is not None and shape(b) != (m,):
            raise fail(f"params.{name}", b, f"None or of shape (m,) = {(m,)}")
    return p, n, m


def check_xs(xs, n: int, name: str = "xs") -> tuple[tuple[int, ...], int]:
    """``xs`` of shape ``(..., T, n)``; returns ``(batch, T)``."""
    check_array(name, xs)
    s = shape(xs)
    if len(s) < 2:
        raise fail(name, xs, "of shape (..., T, n): rank >= 2")
    if s[-1] != n:
        raise fail(name, xs, f"of shape (..., T, n) with n = {n} (params.w_x is (m, n))")
    return s[:-2], s[-2]


def check_z0(z0, batch: tuple[int, ...], m: int, name: str = "z0") -> None:
    check_array(name, z0)
    s = shape(z0)
    if len(s) < 1 or s[-1] != m:
        raise fail(name, z0, f"of shape (..., m) with m = {m}")
    try:
        out = np.broadcast_shapes(s[:-1], batch)
    except ValueError:
        out = None
    if out != batch:
        raise fail(name, z0, f"of a batch shape that broadcasts to the inputs' {batch}")


def check_seq_lengths(seq_lengths, batch: tuple[int, ...], T: int) -> None:
    check_array("seq_lengths", seq_lengths)
    s = shape(seq_lengths)
    if s != batch:
        raise fail("seq_lengths", seq_lengths, f"of the batch shape of `xs`, {batch}")
    dt = jnp.result_type(seq_lengths)
    if not jnp.issubdtype(dt, jnp.integer) or dt == jnp.bool_:
        raise fail("seq_lengths", seq_lengths, f"integers (got dtype {dt})")
    if not isinstance(seq_lengths, jax.core.Tracer):
        v = np.asarray(seq_lengths)
        if v.size and (v.min() < 0 or v.max() > T):
            shown = v.tolist() if v.size <= 16 else "..."
            raise fail(
                "seq_lengths",
                shown,
                f"in [0, T] = [0, {T}] (got min {v.min()}, max {v.max()})",
            )


def step_operands(z_prev, x_t, n: int, m: int) -> tuple[int, ...]:
    """Validate one step's ``(z_prev, x_t)``; returns their broadcast batch shape."""
    check_array("z_prev", z_prev)
    check_array("x_t", x_t)
    sx, sz = shape(x_t), shape(z_prev)
    if len(sx) < 1 or sx[-1] != n:
        raise fail("x_t", x_t, f"of shape (..., n) with n = {n}")
    if len(sz) < 1 or sz[-1] != m:
        raise fail("z_prev", z_prev, f"of shape (..., m) with m = {m}")
    try:
        batch = np.broadcast_shapes(sx[:-1], sz[:-1])
    except ValueError:
        raise fail(
            "z_prev", z_prev, f"of a batch shape that broadcasts with `x_t`'s {sx[:-1]}"
        ) from None
    return tuple(batch)


def compute_dtype(*arrays):
    """The dtype the recurrence runs in: the promoted dtype, at least float32.

    bfloat16/float16 operands run in float32; integer operands in the default float dtype.
    """
    dt = jnp.result_type(*[a for a in arrays if a is not None])
    if not jnp.issubdtype(dt, jnp.floating):
        dt = jnp.result_type(dt, jnp.float32)
    return jnp.promote_types(dt, jnp.float32)


def output_dtype(*arrays):
    """The dtype results are returned in: the promoted dtype, floating."""
    dt = jnp.result_type(*[a for a in arrays if a is not None])
    return dt if jnp.issubdtype(dt, jnp.floating) else jnp.result_type(dt, jnp.float32)


def check_jacobians_fit(xs, batch: tuple[int, ...], T: int, m: int, dtype, copies: int = 1):
    """Refuse trajectories whose ``(..., T, m, m)`` Jacobians cannot fit in memory."""
    count = float(np.prod(batch, dtype=np.float64)) * T * m * m * copies
    check_fits_in_memory(
        "xs", xs, count * jnp.dtype(dtype).itemsize, f"the Jacobians {batch + (T, m, m)}"
    )
