"""The safe parallel solver against plain DEER on the predictability grid, and warm starts.

Part 1 (``grid``): every cell of ``lab.parallel.PredictabilityConfig`` (one seed) plus the
exploding counterexample, float32 and float64, DEER and quasi-DEER with ``max_iters = T``: the
default solver (``safeguard=True``) against plain DEER (``safeguard=False``): converged cells,
iterates outside the box every trajectory stays in (or not finite), and the work in step
evaluations over ``T`` (the sequential loop's work is ``T``), per LLE bin.

Part 2 (``time``): wall time of one expanding cell, interleaved medians: the sequential scan, the
safe solver, plain DEER (compile excluded).

Part 3 (``warm``): a training loop (20 Adam steps, diagonal gate, ``T = 1024``, ``B = 16``,
``m = 64``): Newton updates per step with ``init=`` the previous step's trajectory and without.

    python benchmarks/solver_safe.py [grid|grid-safe|time|warm ...]

(``grid-safe``: the default solver only, both dtypes.)
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np


def grid(dtype: str, variants=(True, False)) -> None:
    from gated_jax import cell
    from gated_jax.experiments import counterexample
    from gated_jax.experiments.baselines import FAMILIES, random_bases
    from gated_jax.lab.parallel import PredictabilityConfig

    cfg = PredictabilityConfig()
    init = FAMILIES["gated"].init
    bases = random_bases((0,), n=cfg.n, m=cfg.m, length=max(cfg.lengths))
    base = {k: jnp.asarray(v[0], dtype) for k, v in bases.items() if k != "xs"}
    stats: dict = defaultdict(lambda: [0, 0, 0, 0.0, 0])  # cells, converged, outside, work, its
    for T in cfg.lengths:
        cases = [(*counterexample(T, dtype=jnp.dtype(dtype)),)]
        for rho in cfg.wz_norms:
            for bias in cfg.gate_biases:
                p = jax.tree.map(lambda a: jnp.asarray(a, dtype), init(base, rho, bias))
                cases.append((p, jnp.asarray(bases["xs"][0, :T], dtype), None))
        for p, xs, z0 in cases:
            lle = float(cell.lyapunov_exponent(p, xs, z0))
            u = np.asarray(xs, np.float64) @ np.asarray(p.w_x, np.float64).T
            box = max(np.max(np.abs(u)), 0.0 if z0 is None else float(np.max(np.abs(z0))))
            kind = "LLE > 0" if lle > 0 else ("-0.1 <= LLE <= 0" if lle >= -0.1 else "LLE < -0.1")
            for jac in ("full", "diagonal"):
                for safe in variants:
                    _, info = cell.gated_deer(p, xs, z0, jacobian=jac, max_iters=T, safeguard=safe)
                    row = stats[(jac, safe, kind)]
                    row[0] += 1
                    row[1] += bool(info.converged)
                    row[2] += not float(info.peak) <= box * (1 + 1e-6)
                    row[3] = max(row[3], int(info.work) / T)
                    row[4] = max(row[4], int(info.iterations))
    print(f"grid, {dtype}: cells, converged, outside the box, max work / T, max updates")
    for (jac, safe, kind), (n, ok, out, work, its) in sorted(stats.items()):
        name = ("safe " if safe else "plain ") + ("DEER" if jac == "full" else "quasi-DEER")
        print(f"  {name:16s} {kind:18s} {n:3d} {ok:3d} {out:3d} {work:7.2f} {its:5d}")


def timing() -> None:
    from gated_jax import cell
    from gated_jax.experiments.baselines import FAMILIES, random_bases

    T, B = 1024, 16
    bases = random_bases((0,), n=8, m=16, length=T)
    base = {k: jnp.asarray(v[0], "float32") for k, v in bases.items() if k != "xs"}
    p = FAMILIES["gated"].init(base, 16.0, 2.0)
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(B, T, 8)), jnp.float32)
    runs = {
        "sequential": lambda: cell.gated_scan(p, xs),
        "safe DEER": lambda: cell.gated_deer(p, xs, max_iters=T)[0],
        "plain DEER": lambda: cell.gated_deer(p, xs, max_iters=T, safeguard=False)[0],
    }
    for f in runs.values():
        f().block_until_ready()
    times = defaultdict(list)
    for _ in range(5):
        for name, f in runs.items():
            t0 = time.perf_counter()
            f().block_until_ready()
            times[name].append(time.perf_counter() - t0)
    seq = np.median(times["sequential"])
    print(f"expanding cell (rho 16, bias 2), T={T}, B={B}, m=16, float32, medians of 5:")
    for name, ts in times.items():
        print(f"  {name:12s} {1e3 * np.median(ts):9.1f} ms  ({np.median(ts) / seq:6.1f}x)")


def warm(scale: float) -> None:
    import optax

    from gated_jax import cell

    T, B, n, m, steps = 1024, 16, 8, 64, 20
    p = cell.init_gated_params(jax.random.key(0), n, m, recurrent_gate="diagonal", use_bias=True)
    p = p._replace(w_z=scale * p.w_z)
    xs = jax.random.normal(jax.random.key(1), (B, T, n))
    target = jnp.sin(jnp.cumsum(xs[..., :1], axis=1) / 4)
    readout = jax.random.normal(jax.random.key(2), (m, 1)) / np.sqrt(m)
    opt = optax.adam(1e-2)

    def loss(params, guess):
        zs, info = cell.gated_deer(params[0], xs, init=guess, max_iters=T)
        return jnp.mean((zs @ params[1] - target) ** 2), (zs, info)

    @jax.jit
    def train_step(params, state, guess):
        (val, (zs, info)), g = jax.value_and_grad(loss, has_aux=True)(params, guess)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), state, val, zs, info

    for use_warm in (False, True):
        params, zs = (p, readout), jnp.zeros((B, T, m))
        state = opt.init(params)
        its, secs = [], []
        for _ in range(steps):
            t0 = time.perf_counter()
            guess = zs if use_warm else jnp.zeros_like(zs)
            params, state, val, zs, info = train_step(params, state, guess)
            val.block_until_ready()
            secs.append(time.perf_counter() - t0)
            assert bool(info.converged)
            its.append(int(info.iterations))
        print(
            f"warm={use_warm!s:5s} |w_z| x{scale}: updates per step {its}; steps 2-{steps}: "
            f"{sum(its[1:])}; median step {1e3 * np.median(secs[1:]):.0f} ms; loss {float(val):.4f}"
        )


if __name__ == "__main__":
    parts = sys.argv[1:] or ["grid", "time", "warm"]
    for part, variants in (("grid", (True, False)), ("grid-safe", (True,))):
        if part in parts:
            grid("float32", variants)
            with jax.enable_x64(True):
                grid("float64", variants)
    if "time" in parts:
        timing()
    if "warm" in parts:
        for scale in (1.0, 2.0):
            warm(scale)
