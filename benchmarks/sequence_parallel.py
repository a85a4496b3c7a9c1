"""Sequence parallelism: per-device memory and collective volume of ``sequence_parallel_scan``.

Run: ``python benchmarks/sequence_parallel.py`` (``--devices D``, ``--T``, ``--m``, ``--B``,
``--run`` to also execute each program once and time it; ``--quick`` for small sizes).

The script re-launches itself with ``D`` forced CPU devices (``XLA_FLAGS``) unless JAX already
sees ``D`` devices (a GPU host, a TPU slice). For each cell structure (minGRU, diagonal, 8
heads, dense) and for the forward pass and forward+backward (``jax.grad`` of a sum of the
states) it compiles

* the single-device sequential scan (``gated_scan``, one device),
* the single-device chunked hybrid (``gated_scan(method="chunked")``),
* ``sequence_parallel_scan`` with the time axis split over the ``D`` devices,

and prints XLA's compiled memory (``memory_analysis``: arguments + outputs + temporaries, per
device) and, for the sharded program, the bytes one device receives from its all-gathers per
Newton iteration: from the shapes (``collective_bytes``) and as found in the compiled HLO (the
all-gathers inside the Newton loop's body; the others run once). Compilation only, unless
``--run``: on forced CPU devices all devices share the host's cores, so times say nothing of
a real multi-device speed-up.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_BYTES = {"f32": 4, "f64": 8, "s32": 4, "pred": 1, "u32": 4, "bf16": 2}


def _shape_bytes(text: str) -> int:
    """Bytes of every ``dtype[dims]`` in an HLO shape string (tuples summed)."""
    total = 0
    for dt, dims in re.findall(r"\b(f32|f64|s32|pred|u32|bf16)\[([0-9,]*)\]", text):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        total += n * _BYTES[dt]
    return total


def hlo_all_gathers(hlo: str) -> tuple[int, int]:
    """``(bytes per trip of the Newton loop, bytes elsewhere)`` of the all-gather results in the
    compiled ``hlo``. The Newton loop is the ``while`` whose trip count XLA does not know (the
    relay fallback and the sequential loops inside a chunk have known trip counts)."""
    newton = {
        m.group(1)
        for line in hlo.splitlines()
        if " while(" in line and "known_trip_count" not in line
        for m in [re.search(r"body=%?([\w.\-]+)", line)]
        if m
    }
    loop = once = 0
    current = None
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY\s+)?%([\w.\-]+)\s*\(", line)
        if head:
            current = head.group(1)
            continue
        m = re.match(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s+all-gather(?:-start)?\(", line)
        if m:
            if current in newton:
                loop += _shape_bytes(m.group(1))
            else:
                once += _shape_bytes(m.group(1))
    return loop, once


def _memory(compiled) -> int:
    ma = compiled.memory_analysis()
    return int(ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes)


def _time(fn, *args) -> float:
    import jax

    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def measure(args) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from gated_jax.cell import gated_scan, init_gated_params, sequence_parallel_scan
    from gated_jax.cell.sharded import collective_bytes

    D, T, m, B, n = args.devices, args.T, args.m, args.B, args.n
    mesh = Mesh(np.array(jax.devices()[:D]), ("time",))
    one = jax.devices()[0]
    rng = np.random.default_rng(0)
    xs_h = rng.standard_normal((B, T, n)).astype(np.float32)
    xs_1 = jax.device_put(xs_h, one)
    xs_d = jax.device_put(xs_h, NamedSharding(mesh, P(None, "time", None)))
    kinds = {
        "minGRU": dict(recurrent_gate=False),
        "diagonal": dict(recurrent_gate="diagonal"),
        "heads 8x8": dict(recurrent_gate="heads", heads=m // 8),
        "dense": {},
    }
    rows = []
    for name, kw in kinds.items():
        p = init_gated_params(jax.random.key(1), n, m, **kw)
        p = p._replace(w_z=None if p.w_z is None else 0.5 * p.w_z)  # contractive
        fns = {
            "sequential": lambda p, x: gated_scan(p, x),
            "chunked": lambda p, x: gated_scan(p, x, method="chunked"),
            f"sharded x{D}": lambda p, x: sequence_parallel_scan(p, x, mesh=mesh, axis_name="time")[
                0
            ],
        }
        for label, fn in fns.items():
            x = xs_d if label.startswith("sharded") else xs_1
            fwd = jax.jit(fn)
            both = jax.jit(jax.grad(lambda p, x, fn=fn: jnp.sum(fn(p, x)), argnums=(0, 1)))
            cf, cb = fwd.lower(p, x).compile(), both.lower(p, x).compile()
            row = dict(cell=name, program=label, fwd_MiB=_memory(cf) / 2**20)
            row["fwd_bwd_MiB"] = _memory(cb) / 2**20
            if label.startswith("sharded"):
                cb_ = collective_bytes(p, B, D, 4)
                row["gather_per_iter_B"] = cb_["states"] + cb_["jacobians"] + cb_["scalar"]
                row["hlo_loop_B"], row["hlo_once_B"] = hlo_all_gathers(cf.as_text())
            if args.run:
                row["fwd_s"] = _time(cf, p, x)
            rows.append(row)
            print(_line(row), flush=True)
    return rows


COLUMNS = (
    ("cell", "{}"),
    ("program", "{}"),
    ("fwd_MiB", "{:.2f}"),
    ("fwd_bwd_MiB", "{:.2f}"),
    ("gather_per_iter_B", "{}"),
    ("hlo_loop_B", "{}"),
    ("hlo_once_B", "{}"),
    ("fwd_s", "{:.3f}"),
)


def _line(row: dict) -> str:
    return "| " + " | ".join(f.format(row[k]) if k in row else "" for k, f in COLUMNS) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--T", type=int, default=2**16)
    parser.add_argument("--m", type=int, default=64)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--B", type=int, default=1)
    parser.add_argument("--run", action="store_true", help="also run each program once, timed")
    parser.add_argument("--quick", action="store_true", help="T = 1024, m = 16")
    args = parser.parse_args()
    if args.quick:
        args.T, args.m = 1024, 16
    if os.environ.get("_GATED_JAX_SP_CHILD") is None:
        env = dict(os.environ, _GATED_JAX_SP_CHILD="1", PYTHONPATH=str(ROOT))
        flags = env.get("XLA_FLAGS", "")
        if "device_count" not in flags and env.get("JAX_PLATFORMS", "cpu") == "cpu":
            env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}"
        sys.exit(subprocess.call([sys.executable, __file__, *sys.argv[1:]], env=env))
    import jax

    print(
        f"JAX {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}; "
        f"float32, B = {args.B}, T = {args.T}, n = {args.n}, m = {args.m}, "
        f"D = {args.devices}"
    )
    print("| " + " | ".join(k for k, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    measure(args)


if __name__ == "__main__":
    main()
