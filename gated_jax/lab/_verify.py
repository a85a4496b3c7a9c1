"""Verify rows: one verified formula per row, and the table ``gated-jax verify`` prints."""

from __future__ import annotations

import dataclasses

TOLERANCE = 1e-10


@dataclasses.dataclass(frozen=True)
class Check:
    """One verified formula: ``max_rel_error`` of the closed form against its reference."""

    capability: str
    formula: str
    reference: str
    max_rel_error: float
    cases: int
    tolerance: float = TOLERANCE

    @property
    def ok(self) -> bool:
        return bool(self.max_rel_error <= self.tolerance)


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
