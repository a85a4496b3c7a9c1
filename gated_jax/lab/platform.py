"""When to go parallel: the platform constants of ``method="auto"`` and its decisions.

Benchmark (``bench``, ``gated-jax bench --only platform``): measures the constants of
:class:`gated_jax.cell.cost.PlatformConstants` on this machine (float32, interleaved, medians)
from eight small programs: the sequential loop at two lengths (the per-step latency) and at a
wide state (the loop's multiply-add rate), one large matmul (the bulk rate), diagonal affine
scans at two lengths (the per-level latency) and at a large size (the scan rate), and a
diagonal-cell Newton solve (the per-iteration overhead). It also checks the
model: predicted against measured forward+backward time of the sequential loop and the
parallel methods at ``T = 1024, B = 16, m = 256``, and saves the constants to the cache that
``auto`` reads (:func:`gated_jax.cell.cost.cache_path`); the quick one saves nothing.

The quick variant measures nothing (it lists the constants in use): the report runs it.

Report section (``section``): the decision table of ``auto`` over structures and lengths for
this platform's constants and for the shipped GPU guesses.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp

from gated_jax import cell
from gated_jax.cell import cost
from gated_jax.cell.parallel import scan_levels
from gated_jax.lab._harness import Table, device_line, time_interleaved
from gated_jax.lab._report import render

TITLE = "When to go parallel: the cost model of method='auto'"
NAME = "platform"
checks = None


def _scan_fn(p, method: str, grad: bool = False):
    if grad:
        loss = lambda p, x: jnp.mean(cell.gated_scan(p, x, method=method) ** 2)  # noqa: E731
        return jax.jit(jax.grad(loss))
    return jax.jit(lambda p, x: cell.gated_scan(p, x, method=method))


def _params(n: int, m: int, gate="dense", heads: int | None = None, scale: float = 1.0):
    kw = {} if gate == "dense" else {"recurrent_gate": gate}
    if heads is not None:
        kw["heads"] = heads
    p = cell.init_gated_params(jax.random.key(0), n, m, **kw)
    return p if p.w_z is None else p._replace(w_z=scale * p.w_z)


def _xs(B: int, T: int, n: int):
    return jax.random.normal(jax.random.key(1), (B, T, n), jnp.float32)


def _programs() -> dict:
    """The timed programs (zero-argument functions) and what each needs to be read."""
    T1, T2 = 256, 4096
    tiny = _params(4, 4)
    seq = _scan_fn(tiny, "sequential")
    mat = jnp.ones((4096, 256), jnp.float32), jnp.ones((256, 256), jnp.float32)
    dot = jax.jit(jnp.dot)
    x1, x2 = _xs(1, T1, 4), _xs(1, T2, 4)
    progs = {
        "loop_short": (lambda: seq(tiny, x1), T1),
        "loop_long": (lambda: seq(tiny, x2), T2),
        "dot": (lambda: dot(*mat), 4096 * 256 * 256),
    }
    wide, diag = _params(8, 128), _params(4, 4, "diagonal")
    seq_wide = _scan_fn(wide, "sequential")
    deer = jax.jit(lambda p, x: cell.gated_deer(p, x))
    scan = jax.jit(cell.affine_scan)
    a_big = jax.nn.sigmoid(jax.random.normal(jax.random.key(2), (16, 1024, 256)))
    a1, a2 = jnp.full((1, 64, 1), 0.5), jnp.full((1, 4096, 1), 0.5)
    xw, xd = _xs(16, 256, 8), _xs(1, 64, 4)
    return progs | {
        "loop_wide": (lambda: seq_wide(wide, xw), (wide, 256, 16)),
        "scan_short": (lambda: scan(a1, a1), 64),
        "scan_long": (lambda: scan(a2, a2), 4096),
        "scan_big": (lambda: scan(a_big, a_big), a_big.shape),
        "newton": (lambda: deer(diag, xd), (diag, xd, deer)),
    }


def _loop_rate(progs, times, step_s: float, bulk: float) -> float:
    wide, T, B = progs["loop_wide"][1]
    s = cost.shape_of(wide, T, B)
    loop_macs = T * (s.r + cost.ELEMENTWISE * s.B * s.m)
    rest = times["loop_wide"] - T * step_s - 2.0 * T * B * s.n * s.m / bulk
    return loop_macs / max(rest, loop_macs / (100 * bulk))


def measure() -> tuple[cost.PlatformConstants, dict[str, float]]:
    """The platform's constants and the median seconds of each program they come from."""
    progs = _programs()
    times = time_interleaved({k: v[0] for k, v in progs.items()}, rounds=7)
    (_, T1), (_, T2) = progs["loop_short"], progs["loop_long"]
    step_s = max((times["loop_long"] - times["loop_short"]) / (T2 - T1), 1e-9)
    bulk = progs["dot"][1] / times["dot"]
    c = cost.platform_constants()._replace(step_s=step_s, bulk_macs_per_s=bulk, source="measured")
    level_s = max((times["scan_long"] - times["scan_short"]) / (2 * (12 - 6)), 1e-9)
    B, T, m = progs["scan_big"][1]
    scan_rate = 6.0 * B * T * m / max(times["scan_big"] - 2 * scan_levels(T) * level_s, 1e-9)
    c = c._replace(
        level_s=level_s,
        loop_macs_per_s=_loop_rate(progs, times, step_s, bulk),
        scan_elems_per_s=scan_rate,
        iteration_s=0.0,
    )
    diag, xd, deer = progs["newton"][1]
    k = int(deer(diag, xd)[1].iterations)
    base = cost.predict(c, "deer", cost.shape_of(diag, 64, 1), k, grad=False)
    return c._replace(iteration_s=max((times["newton"] - base) / max(k, 1), 1e-7)), times


def _check_rows(c: cost.PlatformConstants, rounds: int) -> list[list]:
    """Predicted against measured forward+backward seconds at ``T = 1024, B = 16, m = 256``."""
    T, B, n, m = 1024, 16, 256, 256
    xs = _xs(B, T, n)
    cases = [
        ("dense", _params(n, m, scale=0.5), ("sequential", "quasi_deer")),
        ("diagonal", _params(n, m, "diagonal"), ("sequential", "deer")),
        ("minGRU", _params(n, m, False), ("sequential", "deer")),
    ]
    rows = []
    for label, p, methods in cases:
        fns = {meth: _scan_fn(p, meth, grad=True) for meth in methods}
        calls = {k: (lambda f=f, p=p: f(p, xs)) for k, f in fns.items()}
        times = time_interleaved(calls, rounds=rounds)
        est = cost.estimate_iterations(p, xs)
        chosen = cost.decide(cost.shape_of(p, T, B), c, est).method
        for meth in methods:
            _, info = cell.gated_deer(
                p, xs, jacobian="diagonal" if meth == "quasi_deer" else "full"
            )
            k = 0 if meth == "sequential" else int(info.iterations)
            pred = cost.predict(c, meth, cost.shape_of(p, T, B), k)
            rows.append(
                [
                    f"{label}: {meth} fwd+bwd (k = {k})",
                    pred * 1e3,
                    times[meth] * 1e3,
                    "ms",
                    f"auto picks {chosen}"
                    if meth == "sequential"
                    else f"{times['sequential'] / times[meth]:.2f}x the sequential loop",
                ]
            )
    return rows


CONSTANT_NOTES = {
    "step_s": ("us", 1e6, "sequential loop, T = 256 vs 4096 at n = m = 4, B = 1"),
    "level_s": ("us", 1e6, "diagonal affine scan, T = 64 vs 4096, one unit"),
    "iteration_s": ("us", 1e6, "diagonal-cell Newton at T = 64, less the model's other terms"),
    "loop_macs_per_s": ("GMAC/s", 1e-9, "sequential loop at B = 16, m = 128, less its latency"),
    "bulk_macs_per_s": ("GMAC/s", 1e-9, "(4096, 256) x (256, 256) matmul"),
    "scan_elems_per_s": ("G elements/s", 1e-9, "diagonal affine scan, B = 16, T = 1024, m = 256"),
}


def bench(quick: bool = False) -> Table:
    """The platform's constants, measured, against the model and saved (``quick``: the
    constants in use, nothing measured: the report's benchmark section stays fast)."""
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    in_use = cost.platform_constants()
    c = in_use if quick else measure()[0]
    label = f"in use ({in_use.source})" if quick else "measured"
    table = Table(
        title=f"Platform constants of the cost model ({c.backend}, float32)",
        columns=["constant", label, "shipped", "unit", "measured from"],
    )
    shipped = cost.SHIPPED.get(c.backend, cost.SHIPPED["gpu"])
    for key, (unit, scale, how) in CONSTANT_NOTES.items():
        table.rows.append([key, getattr(c, key) * scale, getattr(shipped, key) * scale, unit, how])
    if not quick:
        table.rows += _check_rows(c, rounds=3)
        path = cost.save_constants(c)
        table.notes.append(f"saved to {path}: method='auto' reads it on this backend.")
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    table.notes.append(
        device_line() + f"; 1-minute load average {load0:.2f} at the start, {load1:.2f} at the "
        f"end, on {os.cpu_count()} CPUs (a loaded machine measures slower constants)."
    )
    if quick:
        table.notes.append(
            "quick: nothing measured; `gated-jax bench --only platform` measures the constants "
            "(a few minutes), checks the model against measured times and saves them."
        )
    else:
        table.notes.append(
            "Check rows: the model's prediction (ms) against the measured median (ms) with the "
            "iterations the solver used; 'auto picks' is the decision from its own probe."
        )
    return table


# ---- report section: the decision table ------------------------------------------------------

STRUCTURES = (
    ("minGRU", None, 0),
    ("diagonal", "diagonal", 0),
    ("heads h=16", "heads", 16),
    ("dense", "dense", 0),
)
LENGTHS = (256, 1024, 4096, 16384)


def decision_table(
    c: cost.PlatformConstants, rate: float = math.exp(-0.5), B: int = 16, m: int = 256
) -> list[str]:
    """Markdown rows: ``auto``'s choice per structure and ``T`` (forward+backward, contraction
    ``rate``, float32 tolerance), with the best parallel method's predicted speed-up."""
    out = [
        "| structure | " + " | ".join(f"T = {T}" for T in LENGTHS) + " |",
        "|---|" + "---|" * len(LENGTHS),
    ]
    for label, kind, h in STRUCTURES:
        cells = []
        for T in LENGTHS:
            newton, quasi = cost.iterations_from_rate(rate, 1e-5, T)
            it = (
                cost.Iterations(1, 1, 0.0, "exact")
                if kind is None
                else cost.Iterations(newton, quasi, rate, "given")
            )
            d = cost.decide(cost.Shape(T, B, m, m, kind, h), c, it)
            par = {k: v for k, v in d.seconds.items() if k != "sequential"}
            best = min(par, key=lambda k: par[k])
            cells.append(f"{d.method} ({best} {d.seconds['sequential'] / par[best]:.2f}x)")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


SECTION = "\n".join(
    [
        "`gated_scan(method='auto')` predicts each method's time from platform constants "
        "(`gated-jax bench --only platform` measures and caches them), the structure of `W_z`, "
        "the shapes and an iteration estimate (`gated_jax.cell.cost`), and runs a parallel method "
        "only where it is predicted {margin}x faster than the sequential loop. Constants in use "
        "here: {source}.",
        "",
        "Decisions at B = 16, n = m = 256, forward+backward, a contractive cell (rate e^-0.5 per "
        "step: {newton} Newton / {quasi} quasi-Newton iterations at T = 4096); in brackets the "
        "best parallel method's predicted speed-up over the sequential loop:",
        "",
        "On this platform ({backend}):",
        "",
        "{table}",
        "",
        "With the shipped GPU guesses (unmeasured):",
        "",
        "{gpu}",
    ]
)


def section(ctx) -> str:
    c = cost.platform_constants()
    newton, quasi = cost.iterations_from_rate(math.exp(-0.5), 1e-5, 4096)
    data = {
        "margin": cost.MARGIN,
        "source": c.source,
        "backend": c.backend,
        "newton": newton,
        "quasi": quasi,
        "table": "\n".join(decision_table(c)),
        "gpu": "\n".join(decision_table(cost.SHIPPED["gpu"])),
    }
    return render(SECTION, data)
