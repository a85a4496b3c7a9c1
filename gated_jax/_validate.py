"""The one validation module: checks of user-given arguments, shared by every layer.

Imports nothing from ``gated_jax``. Every message has one format, naming the argument as the
user wrote it and its value::

    `features` (=0) must be a positive int
    `xs` (=array of shape (3,), dtype float32) must have shape (..., T, n) with n = 4

Use :func:`fail` to build a message for a rule not covered here, so the format stays one.
The checks of the gated cell's arguments (arrays, parameter shapes, dtypes) are in the last
section; they read static shapes and dtypes only, so they work on tracers under ``jit`` and
``vmap``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, overload

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "boolean",
    "check_fits_in_memory",
    "choice",
    "describe",
    "fail",
    "finite_float",
    "host_port",
    "integer",
    "nonempty_sequence",
    "output_dir",
    "positive_int",
]


def describe(value: Any) -> str:
    """The ``=...`` part of a message: ``repr`` for small values, shape and dtype for arrays."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None and not isinstance(value, (np.generic,)):
        return f"array of shape {tuple(shape)}, dtype {dtype}"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def fail(name: str, value: Any, requirement: str, *, error: type = ValueError) -> Exception:
    """The exception ``` `name` (=value) must be requirement ``` (raise what it returns)."""
    return error(f"`{name}` (={describe(value)}) must be {requirement}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@overload
def positive_int(
    name: str,
    value: Any,
    *,
    minimum: int = 1,
    maximum: int | None = None,
    allow_none: Literal[False] = False,
) -> int: ...


@overload
def positive_int(
    name: str, value: Any, *, minimum: int = 1, maximum: int | None = None, allow_none: bool
) -> int | None: ...


def positive_int(
    name: str, value: Any, *, minimum: int = 1, maximum: int | None = None, allow_none=False
) -> int | None:
    """``int(value)`` if ``value`` is an int (Python or NumPy, not ``bool``) in range.

    The range is ``minimum <= value`` (and ``value <= maximum`` when given); ``allow_none``
    lets ``None`` through. Otherwise raises ``` `name` (=value) must be a positive int ```
    (``an int >= minimum`` when ``minimum != 1``; ``... or None`` with ``allow_none``).
    """
    if allow_none and value is None:
        return None
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        if maximum is not None:
            what = f"an int in [{minimum}, {maximum}]"
        raise fail(name, value, what + (" or None" if allow_none else ""))
    return int(value)


def integer(name: str, value: Any) -> int:
    """``int(value)`` if ``value`` is an int (Python or NumPy, not ``bool``), of any sign."""
    if not _is_int(value):
        raise fail(name, value, "an int")
    return int(value)


def host_port(name: str, value: Any) -> tuple[str, int]:
    """``(host, port)`` from ``"HOST:PORT"`` (IPv6 as ``"[::1]:PORT"``), else a ``ValueError``.

    Returns the host (brackets of an IPv6 literal removed) and the port, ``1 <= port <= 65535``.

    Examples:
      >>> host_port("coordinator", "10.0.0.1:1234")
      ('10.0.0.1', 1234)
      >>> host_port("coordinator", "node-7")
      Traceback (most recent call last):
      ...
      ValueError: `coordinator` (='node-7') must be HOST:PORT with a port in 1..65535
    """
    requirement = "HOST:PORT with a port in 1..65535"
    if not isinstance(value, str) or ":" not in value:
        raise fail(name, value, requirement)
    host, _, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise fail(name, value, requirement)
    return host, int(port)


def boolean(name: str, value: Any) -> bool:
    """``bool(value)`` if ``value`` is ``True`` / ``False`` (or a NumPy bool), else an error.

    Truthy strings such as ``"no"`` are refused: a flag is a bool, never a guess.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise fail(name, value, "a bool (True or False)")
    return bool(value)


def choice(name: str, value: Any, options: Sequence[Any]) -> Any:
    """``value`` if it is one of ``options`` (compared with ``==``, strings exactly)."""
    if not isinstance(value, (str, int, type(None))) or value not in options:
        raise fail(name, value, "one of " + ", ".join(repr(o) for o in options))
    return value


def finite_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict: bool = False,
    allow_none: bool = False,
) -> float | None:
    """``float(value)`` if it is a finite real number (not a bool) in range.

    ``minimum`` / ``maximum`` bound it (exclusive with ``strict``). NaN, infinities, bools,
    strings and bytes are refused.
    """
    if allow_none and value is None:
        return None
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
    if ok:
        v = float(value)
        ok = math.isfinite(v)
        if ok and minimum is not None:
            ok = v > minimum if strict else v >= minimum
        if ok and maximum is not None:
            ok = v < maximum if strict else v <= maximum
    if not ok:
        parts = ["a finite number"]
        op_lo, op_hi = (">", "<") if strict else (">=", "<=")
        if minimum is not None:
            parts.append(f"{op_lo} {minimum:g}")
        if maximum is not None:
            parts.append(f"{op_hi} {maximum:g}")
        raise fail(name, value, " ".join(parts) + (" or None" if allow_none else ""))
    return float(value)


def nonempty_sequence(name: str, value: Any) -> Sequence | np.ndarray:
    """``value`` if it is a non-empty sequence (or array), not a string or a bare number."""
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, (Sequence, np.ndarray))
        or len(value) == 0
    ):
        raise fail(name, value, "a non-empty sequence")
    return value


def output_dir(name: str, path: Any) -> Path:
    """``Path(path)``, created if missing; a ``ValueError`` naming ``name`` if it cannot be.

    Refuses a path that is a file, and one that cannot be created or written (a missing
    parent that cannot be made, no permission): the error names the path, never an
    ``OSError`` traceback.
    """
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise fail(name, path, "a folder path")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise fail(name, str(path), "a folder, not a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fail(name, str(path), f"a folder that can be created ({e.strerror or e})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise fail(name, str(path), "a writable folder")
    return out


def _memory_limit() -> int:
    """Bytes one allocation may plausibly take: the default device's memory, else the host's."""
    try:
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if stats.get("bytes_limit"):
            return int(stats["bytes_limit"])
    except Exception:  # no backend detail available: fall back to the host's memory
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 2**40


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_fits_in_memory(name: str, value: Any, nbytes: float, what: str = "the arrays") -> None:
    """Raise ``` `name` (=value) must be small enough... ``` if ``nbytes`` exceed memory.

    Call it before allocating from a user-given size, so that an impossible size fails fast
    with the bytes it needs instead of aborting the process later.
    """
    limit = _memory_limit()
    if not math.isfinite(nbytes) or nbytes > limit:
        raise fail(
            name,
            value,
            f"small enough to fit in memory: {what} need {_fmt_bytes(nbytes)}, "
            f"more than the {_fmt_bytes(limit)} available",
        )


# --- module options ---
# Options of the Flax modules (gated_jax.nn, gated_jax.nnx) and their call arguments. jax is
# imported on use, as in `_memory_limit`: this module's top imports stay numpy only.

__all__ += [
    "Shown",
    "as_numeric_array",
    "brief",
    "check_dtype",
    "check_initializer",
    "check_remat",
    "check_unroll",
    "flag",
    "optional_flag",
    "size",
]


class Shown:
    """A value shown in a message by a short description (``repr`` is ``text``)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def brief(value: Any) -> Any:
    """``value`` for a message: a mapping by its keys, a multi-line ``repr`` by its type."""
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        return Shown(f"{type(value).__name__} with keys {sorted(map(str, value))}")
    if not hasattr(value, "shape") and "\n" in repr(value):
        return Shown(f"{type(value).__name__}(...)")
    return value


def _flag(name: str, value: Any, *, allow_none: bool) -> bool | None:
    import jax

    if allow_none and value is None:
        return None
    if isinstance(value, jax.core.Tracer):
        raise fail(name, value, "a Python bool, not a traced value (make it static under jit)")
    if not isinstance(value, (bool, np.bool_)):
        raise fail(name, value, "a bool (True or False)" + (" or None" if allow_none else ""))
    return bool(value)


def flag(name: str, value: Any) -> bool:
    """A strict bool option: ``True`` / ``False`` (or a NumPy bool), never a truthy value.

    A traced value is refused with a hint to make it static under ``jit``.
    """
    out = _flag(name, value, allow_none=False)
    assert out is not None
    return out


def optional_flag(name: str, value: Any) -> bool | None:
    """A call argument overriding a flag: ``None`` ("use the attribute") or a strict bool."""
    return _flag(name, value, allow_none=True)


def size(name: str, value: Any) -> int:
    """A positive int size (:func:`positive_int` without its ``None`` case)."""
    return positive_int(name, value)


def check_unroll(value: Any) -> int:
    """``unroll``: steps per loop iteration of a scan, a positive int."""
    return size("unroll", value)


def check_remat(value: Any) -> bool | int:
    """``remat``: a strict bool, or a block length (an int >= 1)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if _is_int(value) and value >= 1:
        return int(value)
    raise fail("remat", value, "a bool or a block length (an int >= 1)")


def check_dtype(name: str, value: Any, *, allow_none: bool = False) -> None:
    """``value`` names a real floating dtype (``None`` allowed with ``allow_none``)."""
    import jax.numpy as jnp

    if allow_none and value is None:
        return
    try:
        ok = value is not None and jnp.issubdtype(jnp.dtype(value), jnp.floating)
    except TypeError:
        ok = False
    if not ok:
        raise fail(name, value, "a floating dtype" + (" or None" if allow_none else ""))


def check_initializer(name: str, value: Any, *, allow_none: bool = False) -> None:
    """``value`` is an ``init(key, shape, dtype)`` callable (``None`` with ``allow_none``).

    Raises ``TypeError`` (a class, or anything not callable, is refused).
    """
    if allow_none and value is None:
        return
    if not callable(value) or isinstance(value, type):
        raise fail(
            name,
            value,
            "an initializer, a callable init(key, shape, dtype) such as "
            "flax.linen.initializers.zeros_init()",
            error=TypeError,
        )


def as_numeric_array(name: str, value: Any) -> Any:
    """An operand as a JAX array: arrays pass, lists and NumPy arrays of numbers convert.

    Integer and bool arrays pass (a computation promotes them). Strings, ragged lists,
    ``None`` and object arrays are refused with a message naming ``name`` (``TypeError`` for
    a non-numeric dtype, ``ValueError`` for what NumPy cannot convert).
    """
    import jax
    import jax.numpy as jnp

    arr: Any = value
    if not isinstance(value, (jax.Array, jax.core.Tracer)):
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            raise fail(name, value, "an array (or nested list) of numbers") from None
    if not (jnp.issubdtype(arr.dtype, jnp.number) or jnp.issubdtype(arr.dtype, jnp.bool_)):
        raise fail(name, value, "an array (or nested list) of numbers", error=TypeError)
    return jnp.asarray(arr)


# --- the gated cell's arguments ---


def array_shape(a: Any) -> tuple[int, ...]:
    """The static shape of ``a`` as a tuple (works on tracers)."""
    return tuple(np.shape(a))


def check_array(name: str, a: Any) -> None:
    """Arrays only (JAX or NumPy, or tracers), real and numeric or bool: no lists, strings,
    complex arrays or other objects."""
    if isinstance(a, (jax.Array, np.ndarray, np.generic)):  # tracers are jax.Arrays
        if not (jnp.issubdtype(a.dtype, jnp.number) or a.dtype == jnp.bool_):
            raise fail(name, a, f"a numeric array (got dtype {a.dtype})")
        if jnp.issubdtype(a.dtype, jnp.complexfloating):
            raise fail(name, a, "a real array")
        return
    hint = " (wrap it with jnp.asarray)" if isinstance(a, (list, tuple, int, float)) else ""
    raise fail(name, a, f"a JAX or NumPy array; got {type(a).__name__}{hint}")


def _check_cell_weights(p: Any) -> None:
    for name in p._fields:
        a = getattr(p, name)
        if a is not None:
            check_array(f"params.{name}", a)
            dt = jnp.result_type(a)
            if not jnp.issubdtype(dt, jnp.inexact) and not jnp.issubdtype(dt, jnp.integer):
                raise fail(f"params.{name}", a, "a float array")


def check_cell_params(p: Any) -> tuple[int, int]:
    """Validate the arrays and shapes of the cell's parameters; returns ``(n, m)``.

    ``p`` has the fields of :class:`gated_jax.cell.GatedParams`: ``w_x``, ``w_c`` ``(m, n)``,
    ``w_z`` ``None``, ``(m, m)`` (dense), ``(m,)`` (diagonal) or ``(H, h, h)`` with ``H h = m``
    (block-diagonal, ``H`` heads); ``b_c``, ``b_x`` ``None`` or ``(m,)``.
    """
    _check_cell_weights(p)
    sx = array_shape(p.w_x)
    if len(sx) != 2:
        raise fail("params.w_x", p.w_x, "a matrix of shape (m, n)")
    m, n = sx
    if m == 0 or n == 0:
        raise fail("params.w_x", p.w_x, "of shape (m, n) with m >= 1 and n >= 1")
    if array_shape(p.w_c) != (m, n):
        raise fail("params.w_c", p.w_c, f"of shape (m, n) = {(m, n)}, like w_x")
    if p.w_z is not None:
        check_recurrent_shape("params.w_z", p.w_z, m)
    for name in ("b_c", "b_x"):
        b = getattr(p, name)
        if b is not None and array_shape(b) != (m,):
            raise fail(f"params.{name}", b, f"None or of shape (m,) = {(m,)}")
    return n, m


def check_recurrent_shape(name: str, w_z: Any, m: int) -> None:
    """A recurrent weight of shape ``(m, m)`` (dense), ``(m,)`` (diagonal) or ``(H, h, h)`` with
    ``H h = m`` (block-diagonal heads)."""
    s = array_shape(w_z)
    if s in ((m, m), (m,)) or (len(s) == 3 and s[1] == s[2] and s[0] * s[1] == m and m > 0):
        return
    raise fail(
        name,
        w_z,
        f"None or of shape (m, m) = {(m, m)} (dense), (m,) = {(m,)} (diagonal) or (H, h, h) "
        f"with H h = m = {m} (heads)",
    )


RECURRENT_GATES = ("dense", "diagonal", "heads")


def recurrent_structure(recurrent_gate: Any, heads: Any, m: int) -> tuple[str | None, int]:
    """The recurrent gate option of ``init_gated_params`` and the Flax cells:
    ``recurrent_gate`` ``True`` (= ``"dense"``), ``False`` (no ``W_z``, minGRU), ``"dense"``,
    ``"diagonal"`` or ``"heads"`` with ``heads`` a positive int dividing ``m`` (``None``
    otherwise). Returns ``(structure or None, H)`` (``H = 0`` unless heads)."""
    if isinstance(recurrent_gate, (bool, np.bool_)):
        kind: str | None = "dense" if recurrent_gate else None
    elif isinstance(recurrent_gate, str) and recurrent_gate in RECURRENT_GATES:
        kind = recurrent_gate
    else:
        raise fail(
            "recurrent_gate", recurrent_gate, "a bool or one of 'dense', 'diagonal', 'heads'"
        )
    if kind != "heads":
        if heads is not None:
            raise fail("heads", heads, f"None unless recurrent_gate='heads' (got {kind!r})")
        return kind, 0
    if heads is None:
        raise fail("heads", heads, "the number of heads H (an int dividing m) with 'heads'")
    H = positive_int("heads", heads)
    if m % H:
        raise fail("heads", heads, f"a divisor of m = {m} (each head has h = m / H units)")
    return kind, H


def check_xs(xs: Any, n: int, name: str = "xs") -> tuple[tuple[int, ...], int]:
    """``xs`` of shape ``(..., T, n)``; returns ``(batch, T)``."""
    check_array(name, xs)
    s = array_shape(xs)
    if len(s) < 2:
        raise fail(name, xs, "of shape (..., T, n): rank >= 2")
    if s[-1] != n:
        raise fail(name, xs, f"of shape (..., T, n) with n = {n} (params.w_x is (m, n))")
    return s[:-2], s[-2]


def check_z0(z0: Any, batch: tuple[int, ...], m: int, name: str = "z0") -> None:
    """``z0`` of shape ``(..., m)`` whose batch dims broadcast to ``batch``."""
    check_array(name, z0)
    s = array_shape(z0)
    if len(s) < 1 or s[-1] != m:
        raise fail(name, z0, f"of shape (..., m) with m = {m}")
    try:
        out = np.broadcast_shapes(s[:-1], batch)
    except ValueError:
        out = None
    if out != batch:
        raise fail(name, z0, f"of a batch shape that broadcasts to the inputs' {batch}")


def check_seq_lengths(seq_lengths: Any, batch: tuple[int, ...], T: int) -> None:
    """Integer ``seq_lengths`` of shape ``batch``, in ``[0, T]`` when concrete."""
    check_array("seq_lengths", seq_lengths)
    if array_shape(seq_lengths) != batch:
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


def check_step_operands(z_prev: Any, x_t: Any, n: int, m: int) -> tuple[int, ...]:
    """Validate one step's ``(z_prev, x_t)``; returns their broadcast batch shape."""
    check_array("z_prev", z_prev)
    check_array("x_t", x_t)
    sx, sz = array_shape(x_t), array_shape(z_prev)
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


def compute_dtype(*arrays: Any) -> Any:
    """The dtype the recurrence runs in: the promoted dtype, at least float32.

    bfloat16/float16 operands run in float32; integer operands in the default float dtype.
    ``None`` entries are skipped.
    """
    dt = jnp.result_type(*[a for a in arrays if a is not None])
    if not jnp.issubdtype(dt, jnp.floating):
        dt = jnp.result_type(dt, jnp.float32)
    return jnp.promote_types(dt, jnp.float32)


def output_dtype(*arrays: Any) -> Any:
    """The dtype results are returned in: the promoted dtype, floating (``None`` skipped)."""
    dt = jnp.result_type(*[a for a in arrays if a is not None])
    return dt if jnp.issubdtype(dt, jnp.floating) else jnp.result_type(dt, jnp.float32)


def check_jacobians_fit(
    xs: Any,
    batch: tuple[int, ...],
    T: int,
    m: int,
    dtype: Any,
    copies: int = 1,
    width: int | None = None,
) -> None:
    """Refuse trajectories whose ``copies`` x ``(..., T, m, width)`` Jacobians cannot fit in
    memory (:func:`check_fits_in_memory`, naming ``xs``); ``width`` ``None``: ``m`` (dense),
    a head's ``h`` for block-diagonal Jacobians, 1 for diagonal ones."""
    width = m if width is None else width
    count = float(np.prod(batch, dtype=np.float64)) * T * m * width * copies
    check_fits_in_memory(
        "xs", xs, count * jnp.dtype(dtype).itemsize, f"the Jacobians {batch + (T, m, width)}"
    )


# --- experiments and command line ---
# Arguments of gated_jax.experiments and of the `gated-jax` command line (its text options).

__all__ += [
    "among",
    "device_list",
    "finite_floats",
    "float_dtype",
    "index",
    "int_array",
    "int_text",
    "ints_text",
    "number_array",
    "present",
]


def number_array(name: str, values: Any, kind: str = "numbers") -> np.ndarray:
    """``values`` as a non-empty 1-D NumPy array of real numbers (ints or floats).

    A scalar becomes a length-1 array. Strings, bytes, bools, ``None`` entries and complex
    numbers are refused with ``` `name` (=values) must be a non-empty 1-D sequence of kind ```.
    """
    what = f"a non-empty 1-D sequence of {kind}"
    if isinstance(values, (str, bytes, bool, np.bool_)) or values is None:
        raise fail(name, values, what)
    items = values if isinstance(values, (list, tuple)) else None
    if items is not None and any(
        isinstance(v, (str, bytes, bool, np.bool_)) or v is None for v in items
    ):
        raise fail(name, values, what)
    try:
        a = np.atleast_1d(np.asarray(values))
    except (TypeError, ValueError):
        raise fail(name, values, what) from None
    if a.ndim != 1 or a.size == 0 or a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.number):
        raise fail(name, values, what)
    if np.issubdtype(a.dtype, np.complexfloating):
        raise fail(name, values, what)
    return a


def finite_floats(
    name: str, values: Any, *, minimum: float | None = None, strict: bool = False
) -> np.ndarray:
    """``values`` as a non-empty 1-D float64 array of finite numbers, each ``>= minimum``.

    ``strict`` makes the bound exclusive (``> minimum``).
    """
    a = number_array(name, values, "finite numbers").astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise fail(name, values, "finite numbers (no NaN or infinity)")
    if minimum is not None and (a.min() <= minimum if strict else a.min() < minimum):
        raise fail(name, values, f"numbers {'>' if strict else '>='} {minimum:g}")
    return a


def int_array(name: str, values: Any, *, minimum: int = 1) -> np.ndarray:
    """``values`` as a non-empty 1-D int64 array of ints ``>= minimum`` (no floats, no bools)."""
    a = number_array(name, values, "ints")
    if not np.issubdtype(a.dtype, np.integer):
        raise fail(name, values, "a non-empty 1-D sequence of ints")
    if a.min() < minimum:
        raise fail(name, values, f"ints >= {minimum}")
    return a.astype(np.int64)


def float_dtype(name: str, value: Any, options: Sequence[str] | None = None) -> np.dtype:
    """``value`` as a NumPy dtype: a floating dtype (:func:`check_dtype`), one of ``options``
    (names such as ``"float32"``) when given.

    Anything ``jnp.dtype`` cannot read (``"foo"``, an object, ``None``) is refused with a
    ``ValueError`` naming ``name``, never an ``AttributeError`` or ``TypeError`` later.
    """
    import jax.numpy as jnp

    check_dtype(name, value)
    dt = np.dtype(jnp.dtype(value))
    if options is not None and dt.name not in options:
        raise fail(name, value, " or ".join(options))
    return dt


def device_list(name: str, value: Any) -> list | None:
    """``None``, or ``value`` as a list if it is a non-empty list/tuple of ``jax.Device``."""
    import jax

    if value is None:
        return None
    requirement = 'None or a list of jax.Device (e.g. jax.devices("cpu"))'
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise fail(name, value, requirement)
    if not value or not all(isinstance(d, jax.Device) for d in value):
        raise fail(name, value, requirement)
    return list(value)


def index(name: str, value: Any, size: int) -> int:
    """``int(value)`` if it is an int (not a bool) in ``[0, size)``."""
    if not _is_int(value) or not 0 <= value < size:
        raise fail(name, value, f"an int in [0, {size})")
    return int(value)


def among(name: str, values: Any, options: Sequence[str]) -> tuple:
    """``tuple(values)`` if it is a non-empty sequence whose entries are all in ``options``."""
    ok = isinstance(values, (list, tuple)) and len(values) > 0
    if not ok or any(not isinstance(v, str) or v not in options for v in values):
        raise fail(name, values, "among " + ", ".join(options))
    return tuple(values)


def int_text(option: str, text: str | None) -> int | None:
    """A command-line integer: ``int(text)`` (``None`` passes through)."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise fail(option, text, "an integer") from None


def ints_text(option: str, text: str) -> tuple[int, ...]:
    """Command-line sizes: ``"3x3"`` (or ``"3×3"``, ``"7"``) as a tuple of ints."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise fail(option, text, "an integer or integers joined by 'x', e.g. 3x3") from None


def present(name: str, value: Any, options: Any, what: str) -> Any:
    """``value`` if ``value in options`` (a dict's keys, a sequence), else ``` must be what ```.

    Unlike :func:`choice` it takes any hashable ``value`` (a NumPy int for an int key).
    """
    try:
        ok = value in options
    except TypeError:  # unhashable value for a dict or set
        ok = False
    if not ok:
        raise fail(name, value, what)
    return value
