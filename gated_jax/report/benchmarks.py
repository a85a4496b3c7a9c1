"""Report section: the benchmark tables at quick sizes (the full-size run is `gated-jax bench`)."""

from __future__ import annotations

ORDER = 95
TITLE = "Benchmarks"


def section(ctx) -> str:
    from gated_jax import bench
    from gated_jax.bench.harness import device_line

    # Quick sizes keep `make demo` to a few minutes; full sizes take several minutes per suite.
    tables = bench.run_all(quick=True)
    head = (
        f"Measured on {device_line()}, variants interleaved in one process; medians, and ratios "
        "to the baseline in the same run (absolute times on a shared machine mean little). "
        "These are the quick sizes; `gated-jax bench` or the scripts in `benchmarks/` give the "
        "full-size figures the issues target."
    )
    return head + "\n\n" + "\n\n".join(t.to_markdown() for t in tables)
