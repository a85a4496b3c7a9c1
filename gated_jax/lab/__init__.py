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
from pathlib import Path
from types import ModuleType

from gated_jax.lab import (
    _report,
    _run,
    cell,
    conv,
    diagram,
    flow,
    modules,
    parallel,
    parallel_rnn,
    platform,
    shapes,
    speed,
)
from gated_jax.lab._harness import Table
from gated_jax.lab._report import Context
from gated_jax.lab._run import name
from gated_jax.lab._verify import TOLERANCE, Check, format_table

CAPABILITIES: tuple[ModuleType, ...] = (
    *(shapes, conv, diagram, cell, modules, flow, parallel),
    parallel_rnn,
    platform,
    speed,
)

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


def run_checks(
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    capabilities: Sequence[ModuleType] = CAPABILITIES,
) -> list[Check]:
    """Every capability's verify rows, computed in float64 (``seed`` in ``[0, 2**32)``)."""
    return _run.run_checks(seed, progress, capabilities=capabilities)


def run_benchmarks(
    quick: bool = False,
    only: Sequence[str] | None = None,
    capabilities: Sequence[ModuleType] = CAPABILITIES,
) -> list[Table]:
    """Every capability's benchmark table (or only those named in ``only``)."""
    return _run.run_benchmarks(quick, only, capabilities=capabilities)


def bench_names(capabilities: Sequence[ModuleType] = CAPABILITIES) -> list[str]:
    """Names of the capabilities that have a benchmark (what ``gated-jax bench --only`` takes)."""
    return [name(c) for c in capabilities if c.bench is not None]


def write_report(
    out_dir: str | Path,
    *,
    quick: bool = False,
    full: bool = False,
    seed: int = 0,
    progress: bool = True,
    jobs: int = 1,
    capabilities: Sequence[ModuleType] = CAPABILITIES,
) -> Path:
    """Write ``report.md`` (and its PNG figures) into ``out_dir``; return the report's path.

    The sections are each capability's ``section(ctx)``, in the order of
    :data:`CAPABILITIES`, then the verification table and the benchmark tables. ``quick``:
    small sizes everywhere; ``full``: the benchmarks at ``gated-jax bench``'s full sizes (else
    its quick sizes); ``jobs``: worker processes for the sections and verify rows (the
    benchmarks run last, alone).
    """
    return _report.write_report(
        out_dir,
        quick=quick,
        full=full,
        seed=seed,
        progress=progress,
        jobs=jobs,
        capabilities=capabilities,
    )
