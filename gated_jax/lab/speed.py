"""The speed map: where each path of the gated recurrence wins, over a grid of shapes.

Verify rows: none (every path's gradients are checked in float64 by tests/test_speed_rule.py
and the cell capability's rows).

Report section (``section``): the rule ``backward="auto"`` follows
(:func:`gated_jax.cell.resolve_backward`) and the quick map.

Benchmark (``bench``): forward+backward (the gradient of ``mean(zs**2)`` with respect to the
parameters and the inputs) of ``gated_scan`` against the leanest autodiff scan (three
``x @ W.T`` / ``z @ W.T`` matmuls in a ``lax.scan`` step, ``jax.grad``), and of ``GatedRNN``
against ``nn.RNN(GatedCell)``, per shape ``(B, T, n, m)``. Every variant of one shape is timed
interleaved in one process (round robin, medians); the noise of a ratio is the two variants'
relative half interquartile ranges added. Compile time is the first
``jax.jit(jax.grad(f)).lower(...).compile()`` of each variant. In bfloat16 the parameters and
inputs are bfloat16, the lean scan runs in bfloat16 throughout, ``gated_scan`` in float32
inside (its documented upcast), and the gradients' relative error (Frobenius norm, worst
leaf) is measured against the float64 gradient of the same values.

The full grid is ``benchmarks/speed_map.py`` (resumable by shape subset); the quick variant
measures one small shape.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gated_jax import cell
from gated_jax.lab._harness import Table, device_line
from gated_jax.lab._report import render
from gated_jax.lab.cell import lean_scan

TITLE = "The speed map: where each path of the gated recurrence wins"

GRID_B = (1, 8, 32, 128)
GRID_T = (32, 256, 2048)
GRID_NM = ((16, 16), (64, 64), (256, 256), (512, 512), (1, 64), (16, 64))

LEAN = "lean lax.scan"
SCAN = "gated_scan"
FLAX = "nn.RNN(GatedCell)"
RNN = "GatedRNN(backward='auto')"
FORCED = {"gated_scan closed_form": "closed_form", "gated_scan stepwise": "stepwise"}
"""The paths ``"auto"`` chooses between, each forced, timed beside it (the rule's evidence)."""


class Shape(NamedTuple):
    """One cell of the map: batch ``B``, length ``T``, input width ``n``, state width ``m``."""

    B: int
    T: int
    n: int
    m: int


def grid(
    Bs: Iterable[int] = GRID_B, Ts: Iterable[int] = GRID_T, nms: Iterable = GRID_NM
) -> list[Shape]:
    """Every shape of the grid, the cheapest first (so a partial run covers the small ones)."""
    shapes = [Shape(B, T, n, m) for B in Bs for T in Ts for n, m in nms]
    return sorted(shapes, key=lambda s: (s.B * s.T * s.m * (s.n + s.m), s))


def _mean_sq(f):
    return lambda p, xs: jnp.mean(f(p, xs).astype(jnp.float32) ** 2)


def _scan_losses() -> dict[str, Callable]:
    losses = {LEAN: _mean_sq(lean_scan), SCAN: _mean_sq(cell.gated_scan)}
    for name, path in FORCED.items():
        losses[name] = _mean_sq(lambda p, x, path=path: cell.gated_scan(p, x, backward=path))
    return losses


def _modules(m: int, xs, dtype) -> dict[str, tuple[Any, Callable]]:
    """``nn.RNN(GatedCell)`` and ``GatedRNN``, one parameter tree (cast to ``dtype``)."""
    import flax.linen as nn

    from gated_jax.nn import GatedCell, GatedRNN

    fp = nn.RNN(GatedCell(m)).init(jax.random.key(0), xs)
    fp = jax.tree.map(lambda a: a.astype(dtype), fp)
    out = {}
    for name, mod in [(FLAX, nn.RNN(GatedCell(m))), (RNN, GatedRNN(m, backward="auto"))]:
        loss = lambda q, x, apply=mod.apply: jnp.mean(apply(q, x).astype(jnp.float32) ** 2)
        out[name] = (fp, loss)
    return out


def _inputs(s: Shape, dtype):
    p = cell.init_gated_params(jax.random.key(0), s.n, s.m)
    p = jax.tree.map(lambda a: a.astype(dtype), p)
    xs = jax.random.normal(jax.random.key(1), (s.B, s.T, s.n), jnp.float32).astype(dtype)
    return p, xs


def compiled_variants(s: Shape, dtype, *, modules: bool = True, forced: bool = True):
    """``{name: (call, compile seconds)}`` for one shape: each variant's gradient with respect
    to its parameters and inputs, jitted, lowered and compiled once (the baseline of each pair
    first, then the library's default, then the forced paths)."""
    p, xs = _inputs(s, dtype)
    jobs: list[tuple[str, Any, Callable]] = []
    losses = _scan_losses()
    jobs += [(LEAN, p, losses[LEAN]), (SCAN, p, losses[SCAN])]
    if modules:
        jobs += [(k, q, f) for k, (q, f) in _modules(s.m, xs, dtype).items()]
    if forced:
        jobs += [(k, p, losses[k]) for k in FORCED]
    out = {}
    for name, q, loss in jobs:
        t0 = time.perf_counter()
        g = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(q, xs).compile()
        out[name] = (lambda g=g, q=q: g(q, xs), time.perf_counter() - t0)
    return out


def time_samples(fns: dict[str, Callable], *, budget_s: float, max_rounds: int, min_rounds=3):
    """Per-call seconds of each function, round robin in a rotating order after one warm-up
    call each; as many rounds as fit ``budget_s`` (estimated from the warm-up), between
    ``min_rounds`` and ``max_rounds``."""
    names = list(fns)
    t0 = time.perf_counter()
    for k in names:
        jax.block_until_ready(fns[k]())
    per_round = time.perf_counter() - t0
    rounds = int(min(max_rounds, max(min_rounds, budget_s // max(per_round, 1e-9))))
    samples: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            jax.block_until_ready(fns[k]())
            samples[k].append(time.perf_counter() - t)
    return samples


def _spread(xs: Sequence[float]) -> float:
    """Half the interquartile range relative to the median."""
    q1, med, q3 = np.percentile(xs, [25, 50, 75])
    return float((q3 - q1) / 2 / med)


def _rel_err(g, ref) -> float:
    """Worst leaf's ``||g - ref|| / ||ref||`` (Frobenius), in float64."""
    errs = [
        np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64))
        / max(np.linalg.norm(np.asarray(b, np.float64)), 1e-300)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref), strict=True)
    ]
    return float(max(errs))


ERROR_FLOP_CAP = 2e9
"""bfloat16 errors are computed where one float64 gradient costs at most this many FLOPs."""


def _flops(s: Shape) -> float:
    """FLOPs of one forward+backward: 7 matmuls per step, ``2 B max(n, m) m`` each (bound)."""
    return 14.0 * s.B * s.T * max(s.n, s.m) * s.m


def bf16_errors(s: Shape) -> dict[str, float]:
    """Relative gradient errors of the lean scan and ``gated_scan`` with bfloat16 operands
    against the float64 gradient of the same (bfloat16-valued) operands."""
    p, xs = _inputs(s, jnp.bfloat16)
    losses = _scan_losses()
    grads = {k: jax.jit(jax.grad(losses[k], (0, 1)))(p, xs) for k in (LEAN, SCAN)}
    with jax.enable_x64(True):
        p64, x64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (p, xs))
        loss = lambda q, x: jnp.mean(lean_scan(q, x) ** 2)
        ref = jax.jit(jax.grad(loss, (0, 1)))(p64, x64)
        return {k: _rel_err(g, ref) for k, g in grads.items()}


def measure(
    s: Shape,
    dtype: str = "float32",
    *,
    budget_s: float = 3.0,
    max_rounds: int = 15,
    modules: bool = True,
    forced: bool = True,
) -> dict[str, Any]:
    """One shape of the map: medians (ms), spreads, compile seconds, the path ``"auto"``
    chose, and for bfloat16 the gradients' errors (``None`` above :data:`ERROR_FLOP_CAP`)."""
    dt = jnp.dtype(dtype)
    fns = compiled_variants(s, dt, modules=modules, forced=forced)
    samples = time_samples(
        {k: f for k, (f, _) in fns.items()}, budget_s=budget_s, max_rounds=max_rounds
    )
    rec: dict[str, Any] = dict(s._asdict(), dtype=dtype)
    rec["path"] = cell.resolve_backward("auto", s.B, s.T, s.n, s.m)
    rec["rounds"] = len(next(iter(samples.values())))
    rec["ms"] = {k: 1e3 * statistics.median(v) for k, v in samples.items()}
    rec["spread"] = {k: _spread(v) for k, v in samples.items()}
    rec["compile_s"] = {k: c for k, (_, c) in fns.items()}
    rec["load"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if dt == jnp.bfloat16:
        rec["rel_err"] = bf16_errors(s) if _flops(s) <= ERROR_FLOP_CAP else None
    return rec


PAIRS = ((SCAN, LEAN), (RNN, FLAX))
"""(library variant, its baseline): the two ratios of the map."""


def ratio(rec: dict, name: str, base: str) -> tuple[float, float] | None:
    """``(baseline time / variant time, its noise)`` for one record, ``None`` if unmeasured."""
    ms, sp = rec["ms"], rec["spread"]
    if name not in ms or base not in ms:
        return None
    return ms[base] / ms[name], sp[name] + sp[base]


def _fmt(r: tuple[float, float] | None) -> str:
    return "n/a" if r is None else f"{r[0]:.2f} ± {r[1]:.2f}"


def _compile_ratio(rec: dict, name: str, base: str) -> str:
    cs = rec["compile_s"]
    return "n/a" if name not in cs or base not in cs else f"{cs[name] / cs[base]:.2f}"


def _row(rec: dict) -> list:
    row = [rec["B"], rec["T"], rec["n"], rec["m"], rec["path"], rec["ms"][LEAN], rec["ms"][SCAN]]
    row += [_fmt(ratio(rec, SCAN, LEAN)), _fmt(ratio(rec, RNN, FLAX))]
    row += [_compile_ratio(rec, SCAN, LEAN), _compile_ratio(rec, RNN, FLAX)]
    err = rec.get("rel_err", "")
    if err is None:
        row += ["not computed (size cap)"]
    elif err:
        row += [f"{err[LEAN]:.1e} / {err[SCAN]:.1e}"]
    return row


def table(records: Sequence[dict], title: str) -> Table:
    """The map as a table, one row per shape, with the grid's summary in the notes."""
    cols = ["B", "T", "n", "m", "auto path", "lean ms", "gated_scan ms"]
    cols += ["gated_scan / lean (x, ± noise)", "GatedRNN / nn.RNN (x, ± noise)"]
    cols += ["compile x lean", "compile x nn.RNN"]
    if any("rel_err" in r for r in records):
        cols += ["bf16 grad rel. err. lean / gated_scan"]
    t = Table(title=title, columns=cols, rows=[_row(r) for r in records])
    t.notes += summary(records) + rule_check(records)
    return t


def summary(records: Sequence[dict]) -> list[str]:
    """Per pair: the median ratio, the worst, how many shapes are below 1 beyond the noise,
    and the worst compile-time ratio."""
    out = []
    for name, base in PAIRS:
        rs = [r for r in (ratio(rec, name, base) for rec in records) if r is not None]
        if not rs:
            continue
        vals = [v for v, _ in rs]
        losing = sum(v + e < 1.0 for v, e in rs)
        comp = [
            rec["compile_s"][name] / rec["compile_s"][base]
            for rec in records
            if name in rec["compile_s"] and base in rec["compile_s"]
        ]
        out.append(
            f"{name} vs {base}: median {statistics.median(vals):.2f}x, worst {min(vals):.2f}x, "
            f"best {max(vals):.2f}x over {len(rs)} shapes; {losing} below 1 beyond the noise; "
            f"compile time at most {max(comp):.2f}x the baseline's"
        )
    return out


def rule_check(records: Sequence[dict]) -> list[str]:
    """The rule's choice against the measured best of the paths it chooses between (forced):
    how often it picked the faster one, or one within the noise of it, and where not."""
    forced = {path: name for name, path in FORCED.items()}
    agree, wrong = 0, []
    for rec in records:
        ms, sp = rec["ms"], rec["spread"]
        if not all(name in ms for name in FORCED):
            continue
        best = min(FORCED, key=lambda k: ms[k])
        chosen = forced[rec["path"]]
        slower = ms[chosen] / ms[best] - 1.0
        if slower <= sp[chosen] + sp[best]:
            agree += 1
        else:
            wrong.append(
                f"{(rec['B'], rec['T'], rec['n'], rec['m'])}: {rec['path']} "
                f"{slower:.0%} slower than {FORCED[best]}"
            )
    total = agree + len(wrong)
    if not total:
        return []
    out = [
        f"backward='auto' picked the faster path (or one within the noise) on {agree} of "
        f"{total} shapes"
    ]
    return out + (["where it did not: " + "; ".join(wrong)] if wrong else [])


def heatmap(records: Sequence[dict], path, title: str = "", full_grid: bool = True) -> None:
    """Two panels (``gated_scan`` / lean scan, ``GatedRNN`` / ``nn.RNN``): rows ``(n, m)``,
    columns ``(B, T)``, each cell the speed-up (green faster, red slower; grey unmeasured).
    ``full_grid``: every row and column of the grid, measured or not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    nm_set = {(r["n"], r["m"]) for r in records} | (set(GRID_NM) if full_grid else set())
    nms = sorted(nm_set, key=lambda nm: (nm[1], nm[0]))
    bt_set = {(r["B"], r["T"]) for r in records}
    bts = sorted(bt_set | ({(B, T) for B in GRID_B for T in GRID_T} if full_grid else set()))
    fig, axes = plt.subplots(2, 1, figsize=(1.0 + 0.8 * len(bts), 2.0 + 1.2 * len(nms)))
    for ax, (name, base) in zip(axes, PAIRS, strict=True):
        M = np.full((len(nms), len(bts)), np.nan)
        for rec in records:
            r = ratio(rec, name, base)
            if r is not None:
                M[nms.index((rec["n"], rec["m"])), bts.index((rec["B"], rec["T"]))] = r[0]
        ax.set_facecolor("0.85")
        im = ax.imshow(M, cmap="RdYlGn", norm=LogNorm(1 / 3, 3), aspect="auto")
        for (i, j), v in np.ndenumerate(M):
            ax.text(
                j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7
            )
        ax.set_xticks(range(len(bts)), [f"B={b}\nT={t}" for b, t in bts], fontsize=7)
        ax.set_yticks(range(len(nms)), [f"n={n}, m={m}" for n, m in nms], fontsize=7)
        ax.set_title(f"{name} speed-up over {base}", fontsize=9)
        bar = fig.colorbar(im, ax=ax, shrink=0.8, ticks=[1 / 3, 0.5, 1, 2, 3])
        bar.ax.minorticks_off()
        bar.ax.set_yticklabels(["1/3", "1/2", "1", "2", "3"])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _computations(text: str) -> dict[str, list[str]]:
    """An optimised HLO program's computations: name -> the opcodes of its instructions."""
    import re

    comps: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        head = re.match(r"(?:ENTRY )?%([\w.\-]+) .*\{$", line)
        if head:
            current = comps.setdefault(head.group(1), [])
            continue
        op = re.match(r"\s*(?:ROOT )?%[\w.\-]+ = .*? ([a-z][\w\-]*)\(", line)
        if op:
            current.append(op.group(1))
    return comps


def _hlo_counts(compiled) -> dict[str, int]:
    """Instructions of an optimised HLO program outside fused computations (a fusion counts
    once): all of them, those in loop bodies, and of those the matmuls (``dot``, or a library
    call), layout changes (``copy``, ``transpose``) and slices (``dynamic-slice``,
    ``dynamic-update-slice``)."""
    import re

    text = compiled.as_text()
    comps = _computations(text)
    bodies = set(re.findall(r"body=%?([\w.\-]+)", text))
    top = {k: v for k, v in comps.items() if "fused" not in k and "wrapped" not in k}
    loop = [op for k in bodies for op in comps.get(k, [])]
    kinds = {"matmuls": ("dot", "custom-call"), "layout": ("copy", "transpose")}
    kinds["slices"] = ("dynamic-slice", "dynamic-update-slice")
    out = {"instructions": sum(map(len, top.values())), "loops": len(bodies)}
    out["in loop bodies"] = len(loop)
    out |= {f"{k} in loops": sum(op in v for op in loop) for k, v in kinds.items()}
    return out


def pieces(s: Shape, rounds: int = 15) -> dict[str, dict[str, Any]]:
    """Where the time goes at one shape: per path (the lean scan, the closed form, the plain
    autodiff loop), the forward pass alone and forward+backward (median ms, interleaved), and
    the optimised program's instruction counts (:func:`_hlo_counts`)."""
    p, xs = _inputs(s, jnp.float32)
    paths: dict[str, Callable] = {"lean": lean_scan}
    for path in ("closed_form", "stepwise"):
        paths[path] = lambda q, x, path=path: cell.gated_scan(q, x, backward=path)
    fns: dict[str, Callable] = {}
    out: dict[str, dict[str, Any]] = {}
    for name, f in paths.items():
        fwd = jax.jit(f).lower(p, xs).compile()
        g = jax.jit(jax.grad(_mean_sq(f), (0, 1))).lower(p, xs).compile()
        fns[f"{name} forward"] = lambda fwd=fwd: fwd(p, xs)
        fns[f"{name} forward+backward"] = lambda g=g: g(p, xs)
        out[name] = dict(_hlo_counts(g))
    samples = time_samples(fns, budget_s=60.0, max_rounds=rounds, min_rounds=rounds)
    for name in paths:
        fwd = 1e3 * statistics.median(samples[f"{name} forward"])
        both = 1e3 * statistics.median(samples[f"{name} forward+backward"])
        out[name] |= {"forward ms": fwd, "forward+backward ms": both}
    return out


QUICK = (Shape(4, 16, 8, 8),)
BENCH_TITLE = "Speed map: gated_scan vs the lean scan, GatedRNN vs nn.RNN(GatedCell)"


def bench(quick: bool = False) -> Table:
    """The map at a few shapes (quick: one small shape, ``gated_scan`` and the lean scan
    only, a few seconds; the whole grid is ``benchmarks/speed_map.py``)."""
    shapes = QUICK if quick else grid(GRID_B[:2], GRID_T[:2], GRID_NM[:2] + GRID_NM[4:])
    # quick: the scan pair only, few rounds (two small programs to compile)
    recs = [
        measure(s, budget_s=0.2, max_rounds=5, forced=False, modules=False) if quick else measure(s)
        for s in shapes
    ]
    t = table(recs, f"{BENCH_TITLE} (float32{', quick' if quick else ''})")
    t.notes.insert(
        0,
        device_line() + "; shared machine: ratios drift with its load "
        f"(1-minute load average at the end {recs[-1]['load']:.2f}).",
    )
    t.notes.append(
        "The full grid (B up to 128, T up to 2048, n = m up to 512, bfloat16, "
        "compile times): python benchmarks/speed_map.py."
    )
    return t


checks = None

SECTION = """
`backward="auto"` (the default of `gated_scan`) picks the backward pass by a fixed rule of
the shapes and the platform, {rule}. Every path gives the same gradients (float64 tests for
each). The quick map on this machine:

{table}
"""


def section(ctx) -> str:
    t = bench(quick=True)
    rule = "with no timing at run time (`gated_jax.cell.resolve_backward`)"
    return render(SECTION, dict(rule=rule, table=t.to_markdown()))
