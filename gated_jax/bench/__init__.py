"""Side-by-side benchmarks: harness (:mod:`gated_jax.bench.harness`) and suites.

Each suite module defines ``ORDER``, ``TITLE`` and ``run(quick: bool = False) -> Table``. Suites
are discovered, so ``gated-jax bench`` and the report pick up a new file without edits here. The
scripts in the repository's ``benchmarks/`` folder run the suites at full size.
"""

from __future__ import annotations

from gated_jax._plugins import discover
from gated_jax.bench.harness import Table


def suites() -> list:
    """Suite modules, in ``ORDER``."""
    return discover(__name__, __path__, skip=("harness",))


def run_all(quick: bool = False, only: list[str] | None = None) -> list[Table]:
    """Run every suite (or those named in ``only``) and return their tables."""
    tables = []
    for mod in suites():
        name = mod.__name__.rsplit(".", 1)[-1]
        if only and name not in only:
            continue
        tables.append(mod.run(quick=quick))
    return tables


__all__ = ["Table", "run_all", "suites"]
