"""``gated-jax bench``: the benchmark tables."""

from __future__ import annotations

HELP = "run the side-by-side benchmarks and print their tables"


def add_arguments(p) -> None:
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and fewer rows (under a minute on 2 CPU cores, for smoke tests)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        default=None,
        help="capabilities whose benchmark to run (conv, cell, modules, flow, parallel, speed)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    import time

    from tqdm.auto import tqdm

    from gated_jax import lab
    from gated_jax._validate import fail
    from gated_jax.lab._harness import device_line

    known = lab.bench_names()
    for name in args.only or []:
        if name not in known:
            raise fail("--only", name, "one of " + ", ".join(known))
    names = [n for n in known if not args.only or n in args.only]
    print(device_line(), flush=True)
    # one step per table (the bar on stderr, each table on stdout as soon as it is measured)
    bar = tqdm(names, desc="bench", unit="table", disable=args.no_progress)
    for name in bar:
        bar.set_postfix_str(name)
        t0 = time.perf_counter()
        (table,) = lab.run_benchmarks(quick=args.quick, only=[name])
        bar.write(
            f"\n{table.to_markdown()}\n\n({name}: measured in {time.perf_counter() - t0:.1f} s)"
        )
    return 0
