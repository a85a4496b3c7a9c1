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
    """What a section gets: where to write, how big to run, and a figure saver.

    ``quick``: small sizes everywhere; ``full``: the benchmarks at their full sizes.
    """

    out_dir: Path
    quick: bool = False
    full: bool = False
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


def verification_table(rows: Sequence[Any]) -> str:
    """The verify rows as one table, with a one-line verdict."""
    from gated_jax.lab._verify import TOLERANCE, format_table

    bad = [r for r in rows if not r.ok]
    verdict = (
        f"All {len(rows)} formulas agree with autodiff to within {TOLERANCE:g} relative error."
        if not bad
        else f"**{len(bad)} of {len(rows)} formulas exceed the tolerance.**"
    )
    return format_table(list(rows)) + "\n\n" + verdict


def verification_section(ctx: Context, capabilities: Sequence[ModuleType]) -> str:
    """Every capability's verify rows as one table, with a one-line verdict."""
    return verification_table(_run.run_checks(ctx.seed, None, capabilities=capabilities))


def benchmarks_section(ctx: Context, capabilities: Sequence[ModuleType]) -> str:
    """Every capability's benchmark table: quick sizes, or ``gated-jax bench``'s with ``full``."""
    from gated_jax.lab._harness import device_line

    # Quick sizes keep `make demo` to a few minutes; full sizes take minutes per table.
    tables = _run.run_benchmarks(not ctx.full, None, capabilities=capabilities)
    size = (
        "These are the full sizes of `gated-jax bench`."
        if ctx.full
        else "These are the quick sizes (`gated-jax bench --quick`); `gated-jax bench`, "
        "`gated-jax report --full` or the scripts in `benchmarks/` give the full-size figures."
    )
    head = (
        f"Measured on {device_line()}, variants interleaved in one process; medians, and ratios "
        "to the baseline in the same run (absolute times on a shared machine mean little). "
        "The benchmarks run last, alone, after every other section has finished. " + size
    )
    return head + "\n\n" + "\n\n".join(t.to_markdown() for t in tables)


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """``fn(*args)`` and the seconds it took (a worker's job: both travel back)."""
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def _checks_of(module_name: str, seed: int) -> list:
    """One capability's verify rows, found by its module's name (picklable for a worker)."""
    import importlib

    return _run.run_checks(seed, None, capabilities=(importlib.import_module(module_name),))


def _start_worker() -> None:
    import matplotlib

    matplotlib.use("Agg")


def _in_workers(ctx: Context, caps: Sequence[ModuleType], jobs: int, bar) -> tuple[dict, dict]:
    """Every section and every capability's verify rows, ``jobs`` processes at a time.

    Each job is independent (its own seeds, its own figure files), so the report's text is the
    same as in one process. The two heaviest sections, listed last, are started first.
    Returns ``({title: (body, seconds)}, {capability: (rows, seconds)})``.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    work = [("section", m) for m in reversed(caps)] + [
        ("checks", m) for m in reversed(caps) if m.checks is not None
    ]
    spawn = multiprocessing.get_context("spawn")  # a forked JAX runtime is not safe
    sections: dict = {}
    checks: dict = {}
    with ProcessPoolExecutor(jobs, mp_context=spawn, initializer=_start_worker) as pool:
        futures = {
            (
                pool.submit(_timed, m.section, ctx)
                if kind == "section"
                else pool.submit(_timed, _checks_of, m.__name__, ctx.seed)
            ): (kind, m)
            for kind, m in work
        }
        for fut in as_completed(futures):
            kind, m = futures[fut]
            (sections if kind == "section" else checks)[m.__name__] = fut.result()
            bar.update(1)
    return sections, checks


def _job_count(caps: Sequence[ModuleType]) -> int:
    """Each section, each capability's verify rows, and the benchmarks."""
    return len(caps) + sum(m.checks is not None for m in caps) + 1


def write_report(
    out_dir: str | Path,
    *,
    quick: bool = False,
    full: bool = False,
    seed: int = 0,
    progress: bool = True,
    jobs: int = 1,
    capabilities: Sequence[ModuleType],
) -> Path:
    """Write ``report.md`` (and its PNG figures) into ``out_dir``; return the report's path.

    The sections are each capability's ``section(ctx)``, in the order of
    :data:`gated_jax.lab.CAPABILITIES`, then the verification table and the benchmark tables.
    ``quick``: small sizes everywhere; ``full``: the benchmarks at ``gated-jax bench``'s full
    sizes (otherwise at its quick sizes). ``jobs > 1`` computes the sections and the verify
    rows in that many worker processes (the capabilities must be importable modules); the
    benchmarks always run last, alone in this process.
    """
    import matplotlib
    from tqdm.auto import tqdm

    matplotlib.use("Agg")
    seed = positive_int("seed", seed, minimum=0, maximum=2**32 - 1)
    jobs = positive_int("jobs", jobs)
    out = output_dir("out_dir", out_dir)
    caps = tuple(capabilities)
    ctx = Context(out_dir=out, quick=quick, full=full, seed=seed)
    bar = tqdm(total=_job_count(caps), desc="report", unit="job", disable=not progress)
    if jobs > 1:
        sections, checks = _in_workers(ctx, caps, jobs, bar)
    else:
        sections, checks = {}, {}
        for m in caps:
            bar.set_postfix_str(m.TITLE[:40])
            sections[m.__name__] = _timed(m.section, ctx)
            bar.update(1)
        for m in caps:
            if m.checks is not None:
                bar.set_postfix_str(f"verify {_run.name(m)}")
                checks[m.__name__] = _timed(_checks_of_module, m, seed)
                bar.update(1)
    bar.set_postfix_str(BENCHMARKS_TITLE)
    bench = _timed(benchmarks_section, ctx, caps)
    bar.update(1)
    bar.close()
    path = out / "report.md"
    path.write_text(_assemble(caps, sections, checks, bench))
    return path


def _checks_of_module(module: ModuleType, seed: int) -> list:
    return _run.run_checks(seed, None, capabilities=(module,))


def _assemble(caps, sections: dict, checks: dict, bench: tuple[str, float]) -> str:
    """The report's Markdown: the sections in the listed order, verification, benchmarks."""
    parts = [
        "# gated_jax report: the homework reproduced and verified",
        "",
        "Every number below is computed by the library when this report is written; every closed "
        "form is checked against JAX autodiff in float64. Where the homework's answer is "
        "incomplete or wrong, the section says so and shows the evidence.",
        "",
    ]
    rows = [r for m in caps if m.__name__ in checks for r in checks[m.__name__][0]]
    verify_s = sum(s for _, s in checks.values())
    done = [(m.TITLE, *sections[m.__name__]) for m in caps]
    done += [(VERIFICATION_TITLE, verification_table(rows), verify_s), (BENCHMARKS_TITLE, *bench)]
    for title, body, seconds in done:
        parts += [f"## {title}", "", body.strip(), ""]
        parts += [f"<sub>section computed in {seconds:.1f} s</sub>", ""]
    return "\n".join(parts)
