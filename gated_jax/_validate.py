"""The one validation module: checks of user-given arguments, shared by every layer.

Imports nothing from ``gated_jax``. Every message has one format, naming the argument as the
user wrote it and its value::

    `features` (=0) must be a positive int
    `xs` (=array of shape (3,), dtype float32) must have shape (..., T, n) with n = 4

Use :func:`fail` to build a message for a rule not covered here, so the format stays one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

__all__ = [
    "boolean",
    "check_fits_in_memory",
    "choice",
    "describe",
    "fail",
    "finite_float",
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
