"""The application layer: one module per capability, listed once in :data:`CAPABILITIES`.

Each capability module (``gated_jax.lab.<name>``) owns everything the command line and the
report show of that capability, behind the same three functions:

* ``TITLE`` and ``section(ctx) -> str``: its section of ``gated-jax report`` (Markdown);
* ``checks(seed) -> list[Check]``: its rows of ``gated-jax verify`` (float64; each closed form
  against autodiff or an independent reference);
* ``bench(quick=False) -> Table``: its table of ``gated-jax bench``.

A capability without verify rows or without a benchmark sets ``checks = None`` or
``bench = None``.

Adding a capability is writing one module with those names and listing it in
:data:`CAPABILITIES`; the report, ``verify`` and ``bench`` follow that order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType

import jax

from gated_jax._validate import positive_int
from gated_jax.lab import cell, conv, diagram, flow, modules, shapes
from gated_jax.lab._harness import Table
from gated_jax.lab._report import Context, write_report
from gated_jax.lab._verify import TOLERANCE, Check, format_table

CAPABILITIES: tuple[ModuleType, ...] = (shapes, conv, diagram, cell, modules, flow)

__all__ = [
    "CAPABILITIES",
    "TOLERANCE",
    "Check",
    "Context",
    "Table",
    "bench_names",
    "format_table",
    "name",
    "run_benchmarks",
    "run_checks",
    "write_report",
]


def name(capability: ModuleType) -> str:
    """The capability's short name (``"shapes"``, ``"cell"``, ...): its module's last part."""
    return capability.__name__.rsplit(".", 1)[-1]


def run_checks(
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    capabilities: Sequence[ModuleType] = CAPABILITIES,
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


def bench_names(capabilities: Sequence[ModuleType] = CAPABILITIES) -> list[str]:
    """Names of the capabilities that have a benchmark (what ``gated-jax bench --only`` takes)."""
    return [name(c) for c in capabilities if c.bench is not None]


def run_benchmarks(
    quick: bool = False,
    only: Sequence[str] | None = None,
    capabilities: Sequence[ModuleType] = CAPABILITIES,
) -> list[Table]:
    """Every capability's benchmark table (or only those named in ``only``)."""
    tables = []
    for cap in capabilities:
        if cap.bench is None or (only and name(cap) not in only):
            continue
        tables.append(cap.bench(quick=quick))
    return tables
