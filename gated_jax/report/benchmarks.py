"""Report section: the benchmark tables (quick sizes unless the report runs at full size)."""

from __future__ import annotations

ORDER = 95
TITLE = "Benchmarks"


def section(ctx) -> str:
    from gated_jax import bench
    from gated_jax.bench.harness import device_line

    tables = bench.run_all(quick=ctx.quick)
    head = (
        f"Measured on {device_line()}, variants interleaved in one process; medians, and ratios "
        "to the baseline in the same run (absolute times on a shared machine mean little). "
        "Run `gated-jax bench` or the scripts in `benchmarks/` for the full-size figures."
    )
    return head + "\n\n" + "\n\n".join(t.to_markdown() for t in tables)
