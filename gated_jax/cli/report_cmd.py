"""``gated-jax report``: the main job, the homework reproduced and verified."""

from __future__ import annotations

HELP = "write the report (Markdown + PNG): the homework reproduced and verified end to end"


def add_arguments(p) -> None:
    from gated_jax.cli.flow_cmd import add_distributed_arguments

    p.add_argument("--out", default="report", help="output folder (default: report/)")
    p.add_argument("--quick", action="store_true", help="small sizes everywhere (seconds)")
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
    import tempfile

    from gated_jax._validate import positive_int
    from gated_jax.cli.flow_cmd import check_out_dir, start_distributed

    seed = positive_int("--seed", args.seed, minimum=0, maximum=2**32 - 1)
    main = start_distributed(args)
    from gated_jax.lab import write_report

    check_out_dir(args.out, main)
    if not main:  # the gradient-flow sweeps are collective: every process runs them
        with tempfile.TemporaryDirectory(prefix="gated-jax-report-") as scratch:
            write_report(scratch, quick=args.quick, seed=seed, progress=False)
        return 0
    path = write_report(args.out, quick=args.quick, seed=seed)
    print(f"report written to {path.resolve()}")
    return 0
