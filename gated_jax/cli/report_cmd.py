"""``gated-jax report``: the main job, the homework reproduced and verified."""

from __future__ import annotations

HELP = "write the report (Markdown + PNG): the homework reproduced and verified end to end"


def add_arguments(p) -> None:
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


def run(args) -> int:
    from gated_jax._validate import output_dir, positive_int
    from gated_jax.lab import write_report

    seed = positive_int("--seed", args.seed, minimum=0, maximum=2**32 - 1)
    output_dir("--out", args.out)
    path = write_report(args.out, quick=args.quick, seed=seed)
    print(f"report written to {path.resolve()}")
    return 0
