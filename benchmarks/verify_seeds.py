"""Every ``gated-jax verify`` row over a range of seeds, in one process.

``gated-jax verify --seed S`` must pass for every seed; the suite runs a sample. This runs the
rows of every capability (or ``--only`` some) for seeds ``--start`` .. ``--stop - 1`` and prints
each failing row, the count of rows checked and the time per capability. The cell, module and
parallel rows draw fixed shapes, so after the first seed they reuse their compiled programs.

    python benchmarks/verify_seeds.py --start 0 --stop 201
"""

import argparse
import time

from gated_jax import lab

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--stop", type=int, default=201)
    parser.add_argument("--only", nargs="*", help="capability names (default: all with rows)")
    args = parser.parse_args()
    caps = [c for c in lab.CAPABILITIES if c.checks is not None]
    if args.only:
        caps = [c for c in caps if lab.name(c) in args.only]
    seconds = {lab.name(c): 0.0 for c in caps}
    rows = failed = 0
    for seed in range(args.start, args.stop):
        for cap in caps:
            t0 = time.perf_counter()
            got = lab.run_checks(seed, capabilities=[cap])
            seconds[lab.name(cap)] += time.perf_counter() - t0
            rows += len(got)
            for row in got:
                if not row.ok:
                    failed += 1
                    print(f"FAIL seed {seed}: {row}", flush=True)
        if (seed - args.start) % 20 == 0:
            print(f"seed {seed} done, {rows} rows, {failed} failed", flush=True)
    n = args.stop - args.start
    print(f"seeds {args.start}..{args.stop - 1}: {rows} rows checked, {failed} failed")
    for k, s in seconds.items():
        print(f"  {k}: {s:.0f} s ({s / n:.2f} s a seed)")
