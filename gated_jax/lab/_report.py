"""The report: every capability's section, then the verification table and the benchmarks."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from gated_jax._validate import output_dir, positive_int
from gated_jax.lab import _run


@dataclasses.dataclass
class Context:
    """What a section gets: where to write, how big to run, and a figure saver."""

    out_dir: Path
    quick: bool = False
    seed: int = 0

    def save_figure(self, fig, name: str) -> str:
        """Save a matplotlib figure as ``out_dir/name.png``; return the Markdown image link."""
        import matplotlib.pyplot as plt

        path = self.out_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return f"![{name}]({path.name})"


@dataclasses.dataclass(frozen=True)
class Matrix:
    """A labelled table of numbers; in a template (``{name}``) it renders as Markdown."""

    values: Any
    rows: Sequence[str]
    cols: Sequence[str]

    def to_markdown(self) -> str:
        """``| | col ... |`` then one bold-labelled row per row of ``values`` (``%g``)."""
        import numpy as np

        lines = ["| | " + " | ".join(self.cols) + " |", "|---" * (len(self.cols) + 1) + "|"]
        for name, row in zip(self.rows, np.asarray(self.values), strict=True):
            lines.append(f"| **{name}** | " + " | ".join(f"{v:g}" for v in row) + " |")
        return "\n".join(lines)

    def __format__(self, spec: str) -> str:
        return self.to_markdown()


def render(template: str, values: Mapping[str, Any]) -> str:
    """The one section template: ``template.format(**values)``.

    A section is data (numbers, :class:`Matrix` tables, figure links, short phrases computed
    from the results) plus its Markdown prose with ``{name}`` / ``{name:.1e}`` fields; the
    section function computes the data and calls this.
    """
    return template.format(**values)


def yes(ok: bool) -> str:
    """``"yes"``, or a bold ``"**no**"`` (a claim checked in a section's prose)."""
    return "yes" if ok else "**no**"


def max_abs_diff(a, b) -> float:
    """``max |a - b|`` over all entries, as a Python float."""
    import numpy as np

    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


VERIFICATION_TITLE = "Verification: every closed form against JAX autodiff (float64)"
BENCHMARKS_TITLE = "Benchmarks"


def verification_section(ctx: Context, capabilities: Sequence[ModuleType]) -> str:
    """Every capability's verify rows as one table, with a one-line verdict."""
    from gated_jax.lab._verify import TOLERANCE, format_table

    rows = _run.run_checks(ctx.seed, None, capabilities=capabilities)
    bad = [r for r in rows if not r.ok]
    verdict = (
        f"All {len(rows)} formulas agree with autodiff to within {TOLERANCE:g} relative error."
        if not bad
        else f"**{len(bad)} of {len(rows)} formulas exceed the tolerance.**"
    )
    return format_table(rows) + "\n\n" + verdict


def benchmarks_section(ctx: Context, capabilities: Sequence[ModuleType]) -> str:
    """Every capability's benchmark table at quick sizes (full sizes: ``gated-jax bench``)."""
    from gated_jax.lab._harness import device_line

    # Quick sizes keep `make demo` to a few minutes; full sizes take several minutes per suite.
    tables = _run.run_benchmarks(True, None, capabilities=capabilities)
    head = (
        f"Measured on {device_line()}, variants interleaved in one process; medians, and ratios "
        "to the baseline in the same run (absolute times on a shared machine mean little). "
        "These are the quick sizes; `gated-jax bench` or the scripts in `benchmarks/` give the "
        "full-size figures."
    )
    return head + "\n\n" + "\n\n".join(t.to_markdown() for t in tables)


def write_report(
    out_dir: str | Path,
    *,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
    capabilities: Sequence[ModuleType],
) -> Path:
    """Write ``report.md`` (and its PNG figures) into ``out_dir``; return the report's path.

    The sections are each capability's ``section(ctx)``, in the order of
    :data:`gated_jax.lab.CAPABILITIES`, then the verification table and the benchmark tables.
    """
    import matplotlib
    from tqdm.auto import tqdm

    matplotlib.use("Agg")
    seed = positive_int("seed", seed, minimum=0, maximum=2**32 - 1)
    out = output_dir("out_dir", out_dir)
    caps = tuple(capabilities)
    ctx = Context(out_dir=out, quick=quick, seed=seed)
    parts = [
        "# gated_jax report: the homework reproduced and verified",
        "",
        "Every number below is computed by the library when this report is written; every closed "
        "form is checked against JAX autodiff in float64. Where the homework's answer is "
        "incomplete or wrong, the section says so and shows the evidence.",
        "",
    ]
    jobs: list[tuple[str, Callable[[Context], str]]] = [(m.TITLE, m.section) for m in caps]
    jobs.append((VERIFICATION_TITLE, lambda c: verification_section(c, caps)))
    jobs.append((BENCHMARKS_TITLE, lambda c: benchmarks_section(c, caps)))
    bar = tqdm(jobs, desc="report", unit="section", disable=not progress)
    for title, section in bar:
        bar.set_postfix_str(title[:40])
        t0 = time.perf_counter()
        body = section(ctx)
        parts += [f"## {title}", "", body.strip(), ""]
        parts += [f"<sub>section computed in {time.perf_counter() - t0:.1f} s</sub>", ""]
    path = out / "report.md"
    path.write_text("\n".join(parts))
    return path
