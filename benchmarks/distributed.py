"""Sweep throughput: 1 process x 4 devices against 2 processes x 2 devices on this machine.

Run: ``python benchmarks/distributed.py`` (``--quick`` for small sizes, ``--rounds R``).

Both layouts run the same global program (one 1-D mesh of 4 CPU devices, ``map_configs`` of
the gated cell's gradient-flow function over a grid of configurations), so the difference is
the cost of being several processes: Gloo collectives gathering each chunk's result to every
process, the cross-process argument check, and two Python interpreters sharing the cores.
On one host with forced CPU devices both share the same cores, so no speed-up is expected.

Each layout is launched ``--rounds`` times, alternating (A, B, A, B, ...); within a launch the
first sweep (compilation included) is reported apart from the median of the timed repeats,
which start together on every process (``multihost_utils.sync_global_devices``). Start-up
(interpreter, imports, ``jax.distributed.initialize``) is reported separately too.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    t0 = time.perf_counter()
    if args.processes > 1:
        from gated_jax.experiments import distributed

        distributed.initialize(args.coordinator, args.processes, args.process_id, timeout=120)
    import jax
    import numpy as np

    from gated_jax.experiments.baselines import random_bases
    from gated_jax.experiments.flow import config_flow_fn, x64_scope
    from gated_jax.experiments.sharding import map_configs

    started = time.perf_counter() - t0
    assert jax.device_count() == 4, jax.devices()
    n, m, t = (4, 8, 16) if args.quick else (8, 16, 64)
    rhos = np.linspace(0.25, 8.0, 8 if args.quick else 16)
    biases = np.linspace(-2.0, 2.0, 4)
    scales = np.array([0.5, 1.0, 2.0, 4.0])
    seeds = np.arange(2 if args.quick else 4)
    grid = np.meshgrid(rhos, biases, scales, np.arange(seeds.size), indexing="ij")
    configs = [grid[3].ravel().astype(np.int32)] + [g.ravel() for g in grid[:3]]
    bases = random_bases(seeds, n=n, m=m, length=t)
    total = configs[0].size
    with x64_scope("float64"):
        # norm="power": batched matmuls only. With "svd", 4 CPU devices calling LAPACK at once
        # hung (every thread idle, the result never ready) in 2 of 3 full-size launches here.
        fn = config_flow_fn("gated", length=t, m=m, dtype="float64", norm="power")

        def sweep():
            return map_configs(fn, configs, shared=bases, chunk_size=args.chunk, progress=False)

        c0 = time.perf_counter()
        first = sweep()
        first_s = time.perf_counter() - c0
        times = []
        for _ in range(args.repeats):
            if args.processes > 1:
                from jax.experimental import multihost_utils

                multihost_utils.sync_global_devices("sweep")
            c0 = time.perf_counter()
            out = sweep()
            times.append(time.perf_counter() - c0)
        assert np.array_equal(out, first)
    if jax.process_index() == 0:
        checksum = float(np.sum(np.log(first)))
        print(
            json.dumps(
                dict(started=started, first=first_s, times=times, configs=total, check=checksum)
            )
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, args) -> dict:
    """One run of the layout; process 0's JSON line (wall time of the whole launch added)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={4 // processes}"
    addr = f"127.0.0.1:{_free_port()}"
    base = [sys.executable, __file__, "--worker", "--processes", str(processes)]
    base += ["--chunk", str(args.chunk), "--repeats", str(args.repeats)]
    base += ["--quick"] if args.quick else []
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            base + ["--coordinator", addr, "--process-id", str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    try:
        outs = [p.communicate(timeout=900) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode:
            raise SystemExit(f"a worker failed ({p.returncode}):\n{err[-3000:]}")
    row = json.loads(outs[0][0].strip().splitlines()[-1])
    row["wall"] = time.perf_counter() - t0
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--chunk", type=int, default=128)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    import numpy as np

    rows = {1: [], 2: []}
    for _ in range(args.rounds):
        for procs in (1, 2):
            rows[procs].append(launch(procs, args))
    checks = {r["check"] for rs in rows.values() for r in rs}
    total = rows[1][0]["configs"]
    print(
        f"gradient-flow sweep, gated cell, norm='power', float64, {total} configurations, "
        f"chunks of {args.chunk}"
    )
    print(f"{os.cpu_count()} CPU cores; results identical across layouts: {len(checks) == 1}\n")
    print(
        "| layout | start-up (s) | first sweep, compile incl. (s) | sweep, median (s) |"
        " configs/s | time vs 1 process |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    med = {k: float(np.median([t for r in rs for t in r["times"]])) for k, rs in rows.items()}
    for procs, name in ((1, "1 process x 4 devices"), (2, "2 processes x 2 devices")):
        rs = rows[procs]
        start = np.median([r["started"] for r in rs])
        first = np.median([r["first"] for r in rs])
        print(
            f"| {name} | {start:.2f} | {first:.2f} | {med[procs]:.3f} | "
            f"{total / med[procs]:.0f} | {med[procs] / med[1]:.2f}x |"
        )


if __name__ == "__main__":
    main()
