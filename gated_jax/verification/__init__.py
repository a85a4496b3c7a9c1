"""Every closed form in the library checked against JAX autodiff, as a table.

Each module in this package contributes rows: it defines ``ORDER`` (an int that places its rows
in the table) and ``checks(seed: int) -> list[Check]``. Modules are discovered, so adding a file
adds rows to ``gated-jax verify`` and to the report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from gated_jax._plugins import discover
from gated_jax.testing import max_rel_error as max_rel_error

TOLERANCE = 1e-10


@dataclasses.dataclass(frozen=True)
class Check:
    """One verified formula: ``max_rel_error`` of the closed form against autodiff (float64)."""

    capability: str
    formula: str
    reference: str
    max_rel_error: float
    cases: int
    tolerance: float = TOLERANCE

    @property
    def ok(self) -> bool:
        return bool(self.max_rel_error <= self.tolerance)


def _suites() -> list:
    return discover(__name__, __path__)


def run_all(seed: int = 0, progress: Callable[[str], None] | None = None) -> list[Check]:
    """Run every registered check in float64 and return the rows."""
    rows: list[Check] = []
    with jax.enable_x64(True):
        for mod in _suites():
            if progress is not None:
                progress(mod.__name__.rsplit(".", 1)[-1])
            rows.extend(mod.checks(seed))
    return rows


def _fmt_error(v: float) -> str:
    # Ratios near 1 (a bound's actual/bound) need digits that scientific .2e rounds away.
    return f"{v:.2e}" if v < 1e-2 or v == float("inf") else f"{v:.6f}"


def format_table(rows: list[Check]) -> str:
    """Markdown table of the checks."""
    lines = [
        "| capability | formula | reference | cases | max rel. error | ok |",
        "|---|---|---|---:|---:|:-:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.capability} | {r.formula} | {r.reference} | {r.cases} | "
            f"{_fmt_error(r.max_rel_error)} | {'yes' if r.ok else '**NO**'} |"
        )
    return "\n".join(lines)
