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


# --- experiments and command line ---


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
    """``jnp.dtype(value)`` if it is a floating dtype (one of ``options`` when given).

    Anything ``jnp.dtype`` cannot read (``"foo"``, an object) is refused with a
    ``ValueError`` naming ``name``, never an ``AttributeError`` or ``TypeError`` later.
    """
    import jax.numpy as jnp

    try:
        dt = np.dtype(jnp.dtype(value))
    except (TypeError, ValueError):
        dt = None
    if options is not None:
        ok = dt is not None and dt.name in options
        requirement = " or ".join(options)
    else:
        ok = dt is not None and bool(jnp.issubdtype(dt, jnp.floating))
        requirement = "a floating dtype"
    if not ok:
        raise fail(name, value, requirement)
    assert dt is not None
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
