"""Validation of static arguments shared by every layer (imports nothing from ``gated_jax``).

Messages name the argument and its value, e.g. "`features` (=0) must be a positive int".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["nonempty_sequence", "output_dir", "positive_int"]


def nonempty_sequence(name: str, value: Any) -> Sequence:
    """``value`` if it is a non-empty sequence (or array), not a string or a bare number."""
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, (Sequence, np.ndarray))
        or len(value) == 0
    ):
        raise ValueError(f"`{name}` (={value!r}) must be a non-empty sequence")
    return value


def output_dir(name: str, path) -> Path:
    """``Path(path)``, created if missing; a ``ValueError`` naming ``name`` if it is a file."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`{name}` (={str(path)!r}) is a file, not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def positive_int(
    name: str, value: Any, *, minimum: int = 1, allow_none: bool = False
) -> int | None:
    """``int(value)`` if ``value`` is an int (Python or NumPy, not ``bool``) ``>= minimum``.

    ``allow_none`` lets ``None`` through (returned as ``None``). Otherwise raises
    ``ValueError("`name` (=value) must be a positive int")``; with ``minimum != 1`` the
    message reads "must be an int >= minimum", and with ``allow_none`` it ends "or None".
    """
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        tail = " or None" if allow_none else ""
        raise ValueError(f"`{name}` (={value!r}) must be {what}{tail}")
    return int(value)
