"""``gated-jax report``: the main job, the homework reproduced and verified."""

from __future__ import annotations

HELP = "write the report (Markdown + PNG): the homework reproduced and verified end to end"


def add_arguments(p) -> None:
    from gated_jax.cli.flow_cmd import add_distributed_arguments

    p.add_argument("--out", default="report", help="output folder (default: report/)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes everywhere (seconds)")
    size.add_argument(
        "--full",
        action="store_true",
        help="the benchmark tables at `gated-jax bench`'s full sizes (minutes; the default "
        "report has them at `bench --quick`'s sizes)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="worker processes for the sections and the verification rows (default: 2, or 1 "
        "on a one-core machine or in a multi-process job); the benchmarks run last, alone",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed (>= 0) of the random configs in the conv, diagram, cell, Flax-module and "
        "verification sections; the gradient-flow section uses its fixed, documented seeds "
        "(`gated-jax flow` takes --seeds)",
    )
    add_distributed_arguments(p)


def run(args) -> int:
    import os
    import tempfile

    from gated_jax._validate import positive_int
    from gated_jax.cli.flow_cmd import check_out_dir, start_distributed

    seed = positive_int("--seed", args.seed, minimum=0, maximum=2**32 - 1)
    if args.jobs is not None:
        positive_int("--jobs", args.jobs)
    wanted = args.distributed or any(
        v is not None for v in (args.coordinator, args.num_processes, args.process_id)
    )
    main = start_distributed(args)
    # the gradient-flow sweeps are collective in a multi-process job: one process each
    jobs = 1 if wanted else (args.jobs or min(2, os.cpu_count() or 1))
    from gated_jax.lab import write_report

    check_out_dir(args.out, main)
    if not main:  # the gradient-flow sweeps are collective: every process runs them
        with tempfile.TemporaryDirectory(prefix="gated-jax-report-") as scratch:
            write_report(scratch, quick=args.quick, full=args.full, seed=seed, progress=False)
        return 0
    path = write_report(args.out, quick=args.quick, full=args.full, seed=seed, jobs=jobs)
    print(f"report written to {path.resolve()}")
    return 0
