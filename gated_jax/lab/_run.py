"""Running every capability's verify rows and benchmarks; the capabilities are passed in.

Below both :mod:`gated_jax.lab` (which lists the capabilities) and :mod:`gated_jax.lab._report`
(which writes them into the report), so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType

import jax

from gated_jax._validate import positive_int
from gated_jax.lab._harness import Table
from gated_jax.lab._verify import Check


def name(capability: ModuleType) -> str:
    """The capability's short name (``"shapes"``, ``"cell"``, ...): its module's last part."""
    return capability.__name__.rsplit(".", 1)[-1]


def run_checks(
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    *,
    capabilities: Sequence[ModuleType],
) -> list[Check]:
    """Every capability's verify rows, computed in float64 (``seed`` in ``[0, 2**32)``)."""
    positive_int("seed", seed, minimum=0, maximum=2**32 - 1)
    rows: list[Check] = []
    with jax.enable_x64(True):
        for cap in capabilities:
            if cap.checks is None:
                continue
            if progress is not None:
                progress(name(cap))
            rows.extend(cap.checks(seed))
    return rows


def run_benchmarks(
    quick: bool = False,
    only: Sequence[str] | None = None,
    *,
    capabilities: Sequence[ModuleType],
) -> list[Table]:
    """Every capability's benchmark table (or only those named in ``only``)."""
    tables = []
    for cap in capabilities:
        if cap.bench is None or (only and name(cap) not in only):
            continue
        tables.append(cap.bench(quick=quick))
    return tables
