"""A capability module small enough to run in `write_report`'s worker processes (they import it
by name): its section records which process ran it."""

import os

from gated_jax.lab import Check
from gated_jax.lab._harness import Table

TITLE = "Fake capability"


def section(ctx) -> str:
    (ctx.out_dir / "section.pid").write_text(str(os.getpid()))
    return f"fake body, seed {ctx.seed}, quick {ctx.quick}"


def checks(seed: int) -> list:
    return [Check("fake", "f", "r", 0.0, seed + 1), Check("fake", "g", "r", 2.0, seed + 2)]


def bench(quick: bool = False) -> Table:
    return Table("fake bench", ["quick", "pid"], [[quick, os.getpid()]])
