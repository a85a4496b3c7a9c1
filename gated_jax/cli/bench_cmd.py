"""``gated-jax bench``: the benchmark tables."""

from __future__ import annotations

HELP = "run the side-by-side benchmarks and print their tables"


def add_arguments(p) -> None:
    p.add_argument("--quick", action="store_true", help="small sizes (seconds, for smoke tests)")
    p.add_argument(
        "--only",
        nargs="+",
        default=None,
        help="capabilities whose benchmark to run (conv, cell, modules, flow, parallel)",
    )


def run(args) -> int:
    from gated_jax import lab
    from gated_jax._validate import fail
    from gated_jax.lab._harness import device_line

    known = lab.bench_names()
    for name in args.only or []:
        if name not in known:
            raise fail("--only", name, "one of " + ", ".join(known))
    print(device_line())
    for table in lab.run_benchmarks(quick=args.quick, only=args.only):
        print()
        print(table.to_markdown(), flush=True)
    return 0
