"""``gated-jax verify``: every closed form against autodiff, as a table of max errors."""

from __future__ import annotations

import sys

HELP = "check every closed form in the library against JAX autodiff (float64)"


def add_arguments(p) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of the randomized configs")


def run(args) -> int:
    from gated_jax import lab
    from gated_jax._validate import positive_int

    seed = positive_int("--seed", args.seed, minimum=0, maximum=2**32 - 1)
    rows = lab.run_checks(seed=seed, progress=lambda s: print(f"checking {s} ...", file=sys.stderr))
    print(lab.format_table(rows))
    bad = [r for r in rows if not r.ok]
    if bad:
        print(
            f"{len(bad)} of {len(rows)} formulas exceed {lab.TOLERANCE:g}",
            file=sys.stderr,
        )
        return 1
    print(f"\nall {len(rows)} formulas within {lab.TOLERANCE:g} of autodiff")
    return 0
