"""The gated recurrence: closed-form BPTT scan against a plain ``lax.scan`` and Flax's RNNs.

Float32, batch 32, T = 256, n = m = 256 (quick: 8, 64, 64, 64). Every variant is timed
interleaved in one process. The loss is ``mean(zs**2)``, differentiated with respect to the
parameters. FLOPs count ``2 B n m`` per ``(B, n) x (n, m)`` matmul: the gated cell does 3 per
step forward and 7 forward+backward (the backward adds ``W_z^T`` on the adjoint and three weight
gradients); Flax's ``GRUCell`` does 6 / 15 and ``MGUCell`` 4 / 10.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from gated_jax import cell
from gated_jax.bench.harness import (
    Table,
    compile_stats,
    device_line,
    matmul_gflops,
    mib,
    ratios,
    time_interleaved,
)
from gated_jax.testing import plain_scan

ORDER = 30
TITLE = "Gated recurrence: closed-form BPTT vs plain scan vs Flax"


def _loss(f):
    return lambda p, xs: jnp.mean(f(p, xs) ** 2)


def _flax(kind: str, m: int, xs):
    import flax.linen as nn

    cell_cls = {"GRU": nn.GRUCell, "MGU": nn.MGUCell}[kind]
    rnn = nn.RNN(cell_cls(features=m))
    params = rnn.init(jax.random.key(0), xs)
    return params, rnn.apply


def _load() -> float:
    """1-minute load average (NaN where the OS has none): ratios drift when the CPUs are busy."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def run(quick: bool = False) -> Table:
    load0 = _load()
    B, T, n, m = (8, 64, 64, 64) if quick else (32, 256, 256, 256)
    T_mem = 512 if quick else 4096
    rounds = 3 if quick else 9
    p = cell.init_gated_params(jax.random.key(0), n, m)
    xs = jax.random.normal(jax.random.key(1), (B, T, n), jnp.float32)

    variants = {
        "plain lax.scan (3 matmuls in step), jax.grad": plain_scan,
        "gated_scan (closed-form BPTT)": cell.gated_scan,
        "gated_scan remat=True": lambda p, x: cell.gated_scan(p, x, remat=True),
        "gated_scan unroll=2": lambda p, x: cell.gated_scan(p, x, unroll=2),
        "gated_scan unroll=4": lambda p, x: cell.gated_scan(p, x, unroll=4),
        "gated_scan backward='autodiff'": lambda p, x: cell.gated_scan(p, x, backward="autodiff"),
    }
    mm = 2.0 * B * n * m  # FLOPs of one matmul (n = m here)
    fns, flops, meta = {}, {}, {}
    for name, f in variants.items():
        g = jax.jit(jax.grad(_loss(f)))
        cs = compile_stats(jax.grad(_loss(f)), p, xs)
        fns[name] = lambda g=g: g(p, xs)
        flops[name], meta[name] = 7 * mm * T, (3 * mm, cs.compile_s)
    for name, f in [("plain lax.scan", plain_scan), ("gated_scan", cell.gated_scan)]:
        key = f"forward only: {name}"
        fj = jax.jit(f)
        cs = compile_stats(f, p, xs)
        fns[key] = lambda fj=fj: fj(p, xs)
        flops[key], meta[key] = 3 * mm * T, (3 * mm, cs.compile_s)
    for kind, per_step, per_step_fb in [("GRU", 6, 15), ("MGU", 4, 10)]:
        fp, apply = _flax(kind, m, xs)
        key = f"flax.linen.RNN({kind}Cell), jax.grad"
        loss = lambda q, x, apply=apply: jnp.mean(apply(q, x) ** 2)
        g = jax.jit(jax.grad(loss))
        cs = compile_stats(jax.grad(loss), fp, xs)
        fns[key] = lambda g=g, fp=fp: g(fp, xs)
        flops[key], meta[key] = per_step_fb * mm * T, (per_step * mm, cs.compile_s)

    dot = matmul_gflops(512 if quick else 1024)
    times = time_interleaved(fns, rounds=rounds)
    base = "plain lax.scan (3 matmuls in step), jax.grad"
    speed = ratios(times, base)
    fwd_speed = times["forward only: plain lax.scan"] / times["forward only: gated_scan"]

    # compiled temporary memory of forward+backward at a long sequence (compiled, not run)
    xl = jax.ShapeDtypeStruct((B, T_mem, n), jnp.float32)
    mem = {
        name: compile_stats(jax.grad(_loss(variants[name])), p, xl).temp_bytes
        for name in [
            base,
            "gated_scan (closed-form BPTT)",
            "gated_scan remat=True",
            "gated_scan backward='autodiff'",
        ]
    }

    table = Table(
        title=f"{TITLE} (B={B}, T={T}, n=m={n}, float32)",
        columns=[
            "variant",
            "median ms",
            "speed-up vs plain",
            "GFLOP/s",
            "fraction of jnp.dot",
            "fwd MFLOP/step",
            "compile s",
            f"temp MiB at T={T_mem}",
        ],
    )
    for name in fns:
        gf = flops[name] / times[name] / 1e9
        row_speed = fwd_speed if name == "forward only: gated_scan" else speed[name]
        if name == "forward only: plain lax.scan":
            row_speed = 1.0
        table.rows.append(
            [
                name,
                times[name] * 1e3,
                row_speed,
                gf,
                gf / dot,
                meta[name][0] / 1e6,
                meta[name][1],
                f"{mib(mem[name]):.0f} ({mem[name] / mem[base]:.2f}x)" if name in mem else "",
            ]
        )
    table.notes += [
        device_line() + f"; large jnp.dot: {dot:.1f} GFLOP/s in the same run; 1-minute load "
        f"average {load0:.2f} at the start, {_load():.2f} at the end, on {os.cpu_count()} CPUs "
        "(a busy machine slows the large matmuls and lowers the speed-ups).",
        "Forward+backward rows: speed-up vs the plain scan's jax.grad; forward-only rows: vs the "
        "plain forward. Loss mean(zs**2), gradient w.r.t. all parameters.",
        "FLOPs: 2*B*n*m per matmul; gated cell 3/step forward, 7/step forward+backward; GRUCell "
        "6 / 15, MGUCell 4 / 10 (input and hidden denses; elementwise work not counted).",
        "unroll=k copies the loop bodies k times (lax.scan unroll): compare the compile s and "
        "ms columns of the unroll rows with the unroll=1 row.",
    ]
    return table
