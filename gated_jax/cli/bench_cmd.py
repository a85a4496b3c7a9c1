"""``gated-jax bench``: the benchmark tables."""

from __future__ import annotations

HELP = "run the side-by-side benchmarks and print their tables"


def add_arguments(p) -> None:
    p.add_argument("--quick", action="store_true", help="small sizes (seconds, for smoke tests)")
    p.add_argument("--only", nargs="+", default=None, help="suite names to run")


def run(args) -> int:
    from gated_jax import bench
    from gated_jax.bench.harness import device_line

    known = [m.__name__.rsplit(".", 1)[-1] for m in bench.suites()]
    for name in args.only or []:
        if name not in known:
            raise ValueError(f"--only: unknown suite {name!r}; known: {', '.join(known)}")
    print(device_line())
    for table in bench.run_all(quick=args.quick, only=args.only):
        print()
        print(table.to_markdown(), flush=True)
    return 0
