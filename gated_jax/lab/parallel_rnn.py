"""Any Flax cell in parallel over time: verify rows, report section and benchmark.

Verify rows (``checks``): :class:`gated_jax.nn.ParallelRNN` (DEER) against ``nn.RNN`` for
Flax's cells with different carries (a vector, the LSTM's ``(c, h)`` tuple), and
:func:`gated_jax.cell_lyapunov_exponent` (JVPs of any step) against the gated cell's closed-form
:func:`gated_jax.cell.lyapunov_exponent`; float64.

Report section (``section``): for each cell and a few weight scales, the largest Lyapunov
exponent of the cell along the trajectory (:func:`gated_jax.cell_lyapunov_exponent`) against the
Newton iterations ``ParallelRNN(method="deer")`` needs: the predictability rule of the gated
cell's section, measured on cells that have no closed form.

Benchmark (``bench``): ``ParallelRNN(cell, method="deer" | "quasi_deer")`` against
``nn.RNN(cell)`` for Flax's ``GRUCell``, ``LSTMCell``, ``OptimizedLSTMCell``, ``MGUCell``,
``SimpleCell`` and gated_jax's ``GatedCell`` (dense, diagonal, heads), on contractive random
weights (every parameter of ``nn.RNN(cell).init`` times 0.5), T = 256, 1024, 4096, float32:
iterations, forward and forward+backward medians (interleaved), and the work of the solver
counted in step evaluations from XLA's cost analysis of one step and one Jacobian.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.flatten_util import ravel_pytree

from gated_jax import cell as gcell
from gated_jax import nn as gnn
from gated_jax.lab._harness import Table, compiled_with_stats, device_line, time_interleaved
from gated_jax.lab._report import render
from gated_jax.lab._verify import Check
from gated_jax.testing import max_rel_error

TITLE = "Any Flax cell in parallel over time: ParallelRNN, its iterations and its Lyapunov exponent"

CELLS: dict[str, Callable[..., nn.RNNCellBase]] = {
    "GRUCell": lambda m, dt: nn.GRUCell(m, param_dtype=dt),
    "LSTMCell": lambda m, dt: nn.LSTMCell(m, param_dtype=dt),
    "OptimizedLSTMCell": lambda m, dt: nn.OptimizedLSTMCell(m, param_dtype=dt),
    "MGUCell": lambda m, dt: nn.MGUCell(m, param_dtype=dt),
    "SimpleCell": lambda m, dt: nn.SimpleCell(m, param_dtype=dt),
    "GatedCell dense": lambda m, dt: gnn.GatedCell(m, param_dtype=dt),
    "GatedCell diagonal": lambda m, dt: gnn.GatedCell(m, recurrent_gate="diagonal", param_dtype=dt),
    "GatedCell heads": lambda m, dt: gnn.GatedCell(
        m, recurrent_gate="heads", heads=max(1, m // 4), param_dtype=dt
    ),
}
"""The benchmarked cells, ``name -> factory(features, param_dtype)`` (linen)."""

SCALE = 0.5
"""Every parameter of ``nn.RNN(cell).init`` is multiplied by this: contractive random weights."""


def case(name: str, *, B: int, T: int, n: int, m: int, scale: float = SCALE, dtype=jnp.float32):
    """``(cell, variables, xs)``: the cell, ``nn.RNN(cell)``'s variables (the cell's under
    ``'cell'``) times ``scale`` and normal inputs ``(B, T, n)`` (fixed keys)."""
    cell = CELLS[name](m, dtype)
    xs = jax.random.normal(jax.random.key(1), (B, T, n), dtype)
    carry = cell.initialize_carry(jax.random.key(0), (n,))
    v = {"params": {"cell": cell.init(jax.random.key(0), carry, xs[0, 0])["params"]}}
    return cell, jax.tree.map(lambda a: scale * a, v), xs


def probe(cell, max_iters: int | None = None) -> Callable:
    """``jax.jit``-ed ``(variables, xs) -> (lle, iterations, converged)`` for ``cell``: the
    mean over the batch of :func:`gated_jax.cell_lyapunov_exponent` of the cell's step from its
    default carry, and the most Newton updates over the batch of ``ParallelRNN(cell,
    "deer")`` with whether all converged (its sown ``DeerInfo``). One compilation per cell:
    the variables (any weight scale) are an argument."""
    layer = gnn.ParallelRNN(cell, method="deer", max_iters=max_iters)

    @jax.jit
    def run(v, xs):
        params = {"params": v["params"]["cell"]}
        step = lambda c, x: cell.apply(params, c, x)[0]
        carry = cell.initialize_carry(jax.random.key(0), xs.shape[-1:])
        lle = jax.vmap(lambda x: gcell.cell_lyapunov_exponent(step, carry, x))(xs)
        info = layer.apply(v, xs, mutable="intermediates")[1]["intermediates"]["deer_info"][0]
        return jnp.mean(lle), jnp.max(info.iterations), jnp.all(info.converged)

    return run


# ---- verify rows -----------------------------------------------------------------------------


def checks(seed: int) -> list[Check]:
    """ParallelRNN == nn.RNN for two carries, cell_lyapunov_exponent == the closed form."""
    rows, err = [], 0.0
    names = ("GRUCell", "LSTMCell")
    for k, name in enumerate(names):
        cell, v, xs = case(name, B=2, T=24, n=3, m=4, dtype=jnp.float64)
        xs = jax.random.normal(jax.random.key(seed + k), xs.shape, jnp.float64)
        both = jax.jit(
            lambda v, x, cell=cell: (
                gnn.ParallelRNN(cell, method="deer").apply(v, x),
                nn.RNN(cell).apply(v, x),
            )
        )
        err = max(err, max_rel_error(*both(v, xs)))
    rows.append(
        Check(
            "parallel_rnn",
            "ParallelRNN(cell, 'deer') (Flax GRU; LSTM, a tuple carry)",
            "nn.RNN(cell)",
            err,
            len(names),
        )
    )
    err = 0.0
    kinds: tuple[dict[str, Any], ...] = (
        {},
        {"recurrent_gate": "diagonal"},
        {"recurrent_gate": "heads", "heads": 2},
    )
    for k, kind in enumerate(kinds):
        keys = jax.random.split(jax.random.key(seed + 10 + k), 3)
        p = gcell.init_gated_params(keys[0], 3, 4, **kind)
        xs = jax.random.normal(keys[1], (32, 3), jnp.float64)
        z0 = jax.random.normal(keys[2], (4,), jnp.float64)
        want = gcell.lyapunov_exponent(p, xs, z0)
        step: Callable = functools.partial(gcell.gated_step, p)
        got = gcell.cell_lyapunov_exponent(step, z0, xs)
        err = max(err, max_rel_error(got, want))
    rows.append(
        Check(
            "parallel_rnn",
            "cell_lyapunov_exponent (JVPs; dense, diagonal, heads)",
            "lyapunov_exponent (closed form)",
            err,
            len(kinds),
        )
    )
    return rows


# ---- report section --------------------------------------------------------------------------

SECTION = "\n".join(
    [
        "`ParallelRNN(cell)` runs any Flax cell with DEER: Newton over the whole sequence, the "
        "Jacobians by autodiff of the cell. How many iterations it needs is set by how fast "
        "the cell forgets, its largest Lyapunov exponent along the trajectory, measured here "
        "for cells without a closed form by `cell_lyapunov_exponent` (one JVP per step). "
        "Each cell's recurrent kernels (of `nn.RNN(cell).init`) are multiplied by 0.5 x the "
        "scale; B = {B}, "
        "T = {T}, m = {m}, float64, `max_iters = T`; DEER iterations are the most over the "
        "batch (-1: not converged).",
        "",
        "{table}",
        "",
        "Rank correlation (Spearman) of exponent and iterations over all rows: {rho:.2f}. "
        "Within a cell, a larger exponent that took fewer iterations: {exceptions}. The "
        "exponent is measured along the solution; Newton starts from zeros, so a cell that "
        "saturates (a tanh driven hard) can have a negative exponent on its saturated "
        "trajectory and still need many iterations to get there. {n_pos} rows have a positive "
        'exponent (an expanding cell: use `method="sequential"`).',
    ]
)


def recurrent_scaled(variables, s: float):
    """``variables`` with the recurrent kernels times ``s``: Flax's cells and ``GatedCell``
    name the submodules acting on the carry ``h*`` (``hr``, ``hf``, ``h``, ``hc``, ...)."""

    def scale(path, a):
        names = [str(getattr(k, "key", "")) for k in path]
        return s * a if names[-1] == "kernel" and names[-2].startswith("h") else a

    return jax.tree_util.tree_map_with_path(scale, variables)


def lyapunov_rows(names, scales, *, B: int, T: int, n: int, m: int) -> list[dict]:
    """``{cell, scale, lle, deer}`` for each cell and weight scale (float64, ``max_iters = T``;
    ``deer = -1``: not converged)."""
    out = []
    with jax.enable_x64(True):
        for name in names:
            cell, v, xs = case(name, B=B, T=T, n=n, m=m, scale=1.0, dtype=jnp.float64)
            v = recurrent_scaled(v, 0.5)  # then times each scale: 0.5 s in all
            run = probe(cell, max_iters=T)
            for s in scales:
                lle, k, ok = run(recurrent_scaled(v, s), xs)
                out.append(
                    {"cell": name, "scale": s, "lle": float(lle), "deer": int(k) if ok else -1}
                )
    return out


def exceptions(rows: list[dict]) -> list[str]:
    """The rows where, within one cell, a larger exponent took fewer iterations than a
    smaller one (unconverged counts as the most): ``"cell scale a < scale b"``."""
    out = []
    for name in dict.fromkeys(r["cell"] for r in rows):
        sub = sorted(
            (r["lle"], r["deer"] if r["deer"] >= 0 else 10**9, r["scale"])
            for r in rows
            if r["cell"] == name
        )
        out += [
            f"{name} scale {b[2]:g} < scale {a[2]:g}"
            for a, b in zip(sub, sub[1:], strict=False)
            if b[1] < a[1]
        ]
    return out


def _rank_correlation(rows: list[dict]) -> float:
    """Spearman's rank correlation of exponent and iterations over all rows."""
    lle = np.argsort(np.argsort([r["lle"] for r in rows]))
    its = np.argsort(np.argsort([r["deer"] if r["deer"] >= 0 else 10**9 for r in rows]))
    return float(np.corrcoef(lle, its)[0, 1]) if len(rows) > 2 else float("nan")


def section(ctx) -> str:
    names = ("SimpleCell",) if ctx.quick else tuple(CELLS)
    scales = (1.0, 2.0, 4.0, 8.0)
    B, T, n, m = (2, 64, 3, 4) if ctx.quick else (2, 256, 4, 8)
    rows = lyapunov_rows(names, scales, B=B, T=T, n=n, m=m)
    lines = [
        "| cell | weight scale | Lyapunov exponent | DEER iterations |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r['cell']} | {r['scale']:g} | {r['lle']:.3f} | {r['deer']} |" for r in rows]
    exc = exceptions(rows)
    data = {"B": B, "T": T, "m": m, "table": "\n".join(lines), "rho": _rank_correlation(rows)}
    data.update(exceptions="; ".join(exc) if exc else "none", n_pos=sum(r["lle"] > 0 for r in rows))
    return render(SECTION, data)


# ---- benchmark -------------------------------------------------------------------------------


def _cost(fn, *args) -> float:
    """Flops plus transcendentals of ``jax.jit(fn)(*args)`` by XLA's cost analysis."""
    ca: Any = jax.jit(fn).lower(*args).compile().cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return float(ca.get("flops", 0.0)) + float(ca.get("transcendentals", 0.0))


def step_costs(cell, variables, n: int) -> tuple[float, float, int]:
    """``(f, jac, d)``: the cost of one unbatched step of the cell, of its Jacobian
    ``jax.jacfwd`` with respect to the flattened carry (``d`` JVPs and the step), and ``d``."""
    params = {"params": variables["params"]["cell"]}
    carry = cell.initialize_carry(jax.random.key(0), (n,))
    c0, unravel = ravel_pytree(carry)
    x = jnp.ones((n,), c0.dtype)
    flat = lambda c, x: ravel_pytree(cell.apply(params, unravel(c), x)[0])[0]
    return _cost(flat, c0, x), _cost(jax.jacfwd(flat), c0, x), int(c0.shape[0])


def deer_work(T: int, k: int, f: float, jac: float, d: int, method: str) -> float:
    """Forward work of ``ParallelRNN`` with ``k`` Newton updates, in sequential steps (``T f``).

    ``k + 1`` linearisations at all ``T`` steps (the last one finds the residual within the
    bound), each ``T jac`` (both methods take the ``d`` JVPs of the Jacobian, ``"quasi_deer"``
    keeps the diagonal); ``k`` associative scans of about ``2 T`` compositions, ``2 d^3 + 2 d^2``
    flops each with full Jacobians, ``3 d`` with diagonals; ``T f`` for the outputs.

    Examples:
      >>> from gated_jax.lab.parallel_rnn import deer_work
      >>> deer_work(10, 2, 1.0, 5.0, 1, "quasi_deer")  # (3 * 5 * 10 + 2 * 2 * 10 * 3 + 10) / 10
      28.0
    """
    compose = 2 * d**3 + 2 * d**2 if method == "deer" else 3 * d
    return ((k + 1) * T * jac + k * 2 * T * compose + T * f) / (T * f)


_NOTES = [
    "nn.RNN is Flax's lax.scan over the cell (the baseline); ParallelRNN's speed-ups are "
    "nn.RNN time / its time in the same run (> 1: faster). Loss mean(ys**2), gradient with "
    "respect to all parameters (ParallelRNN: implicit differentiation at the solution).",
    "iterations: Newton updates, the most over the batch (per-sequence DeerInfo sown by "
    "ParallelRNN); -1: some sequence did not converge, and under jit the sequential scan ran.",
    "work: the forward pass counted in sequential steps (deer_work: (k+1) T Jacobians by "
    "jacfwd, k associative scans of ~2T compositions, T output steps, over T steps), with one "
    "step's and one Jacobian's cost (flops + transcendentals) from XLA's cost analysis; "
    "'jac/step' is that Jacobian's cost in steps (~ d JVPs).",
    "compile s and temp MiB: the fwd+bwd program's compile time and XLA's temporary buffers "
    "(quick: the forward program's; no fwd+bwd timing).",
]


def _programs(cell, v, xs, methods, grad: bool):
    """Compiled forward (and fwd+bwd) programs of ``nn.RNN`` and each ``ParallelRNN`` method,
    and the compile statistics of the fwd+bwd program (of the forward one without ``grad``)."""
    fns: dict[tuple[str, str], Callable] = {}
    stats: dict[str, Any] = {}
    layers: dict[str, nn.Module] = {"nn.RNN": nn.RNN(cell)}
    layers.update({m: gnn.ParallelRNN(cell, method=m) for m in methods})
    for name, layer in layers.items():
        kw = {} if name == "nn.RNN" else {"mutable": "intermediates"}  # ParallelRNN sows info
        fwd, stats[name] = compiled_with_stats(
            lambda v, x, layer=layer, kw=kw: layer.apply(v, x, **kw), v, xs
        )
        fns[("fwd", name)] = lambda f=fwd: f(v, xs)
        if grad:
            loss = lambda v, x, layer=layer: jnp.mean(layer.apply(v, x) ** 2)
            fb, stats[name] = compiled_with_stats(jax.grad(loss), v, xs)
            fns[("fb", name)] = lambda f=fb: f(v, xs)
    return fns, stats


def _iterations(out) -> tuple[int, bool]:
    info = out[1]["intermediates"]["deer_info"][0]
    return int(jnp.max(info.iterations)), bool(jnp.all(info.converged))


def _rows(name, T, cell, v, xs, methods, rounds, costs, grad: bool) -> list[list]:
    fns, stats = _programs(cell, v, xs, methods, grad)
    times = time_interleaved(fns, rounds=rounds, warmup=1)
    f, jac, d = costs
    out = []
    for meth in ("nn.RNN", *methods):
        k, ok = (0, True) if meth == "nn.RNN" else _iterations(fns[("fwd", meth)]())
        work = 1.0 if meth == "nn.RNN" else deer_work(T, k, f, jac, d, meth)
        fwd = times[("fwd", meth)]
        fb: list[Any] = [""] * 2
        if grad:
            t = times[("fb", meth)]
            fb = [t * 1e3, times[("fb", "nn.RNN")] / t]
        out.append(
            [name, d, T, meth, k if ok else -1, fwd * 1e3, times[("fwd", "nn.RNN")] / fwd]
            + [*fb, f"{work:.1f}", f"{jac / f:.1f}"]
            + [stats[meth].compile_s, stats[meth].temp_bytes / 2**20]
        )
    return out


def bench(
    quick: bool = False,
    *,
    lengths: tuple[int, ...] | None = None,
    cells: tuple[str, ...] | None = None,
) -> Table:
    """``ParallelRNN`` (DEER, quasi-DEER) against ``nn.RNN`` for each cell, float32.

    Full: every cell of :data:`CELLS`, ``T`` in ``(256, 1024, 4096)``, B = 4, n = 8, m = 16.
    Quick: ``GRUCell``, DEER only, forward only, ``T = 64``, B = 2, n = m = 4 (seconds).
    """
    load0 = os.getloadavg()[0]
    B, n, m = (2, 4, 4) if quick else (4, 8, 16)
    lengths = lengths or ((64,) if quick else (256, 1024, 4096))
    cells = cells or (("GRUCell",) if quick else tuple(CELLS))
    methods = ("deer",) if quick else ("deer", "quasi_deer")
    table = Table(
        title=f"ParallelRNN vs nn.RNN for each cell (B={B}, n={n}, m={m}, weights x{SCALE}, "
        "float32)",
        columns=["cell", "d", "T", "layer", "iterations", "fwd ms", "fwd speed-up"]
        + ["fwd+bwd ms", "fwd+bwd speed-up", "work (steps)", "jac/step", "compile s"]
        + ["temp MiB"],
    )
    for name in cells:
        cell, v, _ = case(name, B=B, T=1, n=n, m=m)
        costs = step_costs(cell, v, n)
        for T in lengths:
            xs = jax.random.normal(jax.random.key(1), (B, T, n), jnp.float32)
            rounds = 2 if quick else 5
            table.rows += _rows(name, T, cell, v, xs, methods, rounds, costs, not quick)
    table.notes += [
        device_line() + f"; 1-minute load average {load0:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end, on {os.cpu_count()} CPUs (shared).",
        *_NOTES,
    ]
    return table
