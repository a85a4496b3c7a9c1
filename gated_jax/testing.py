"""Helpers for checking results: the scale-free error the tests and verify rows report.

Examples:
  >>> import numpy as np
  >>> from gated_jax.testing import max_rel_error
  >>> max_rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
  0.0
  >>> max_rel_error(np.array([np.nan]), np.array([1.0]))
  inf
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["max_rel_error"]


def max_rel_error(actual: Any, expected: Any) -> float:
    r"""The largest error of a pytree relative to the scale of its reference.

    .. math::

        \max_\text{leaves} \frac{\max |a - e|}{\max(\max |e|, 10^{-300})}

    A leaf whose shapes differ, or that holds a NaN or an infinity on either side, gives
    ``inf``: a NaN never matches. Empty leaves are skipped.

    Args:
      actual: a pytree of arrays.
      expected: a pytree of the same structure (the reference).

    Returns:
      The error as a Python float, computed in float64.
    """
    worst = 0.0
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        a = np.asarray(a, dtype=np.float64)
        e = np.asarray(e, dtype=np.float64)
        if a.shape != e.shape:
            return float("inf")
        if e.size == 0:
            continue
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(e))):
            return float("inf")
        scale = max(float(np.max(np.abs(e))), 1e-300)
        worst = max(worst, float(np.max(np.abs(a - e))) / scale)
    return worst
