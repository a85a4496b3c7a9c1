"""The gated recurrence and its closed-form BPTT: the capability's verify rows, report section and
benchmark.

Verify rows (``checks``): Verification rows for the gated recurrence (:mod:`gated_jax.cell`),
float64.

Each closed form is compared with an independent reference: the seed's equations as a NumPy
loop, and JAX autodiff (``jax.vjp`` / ``jax.jacfwd``) of a plain ``lax.scan`` with the whole
cell inside its step.

Report section (``section``): seed 1.2(b), (c): the gated recurrence's dimensions and its
closed-form BPTT.

Benchmark (``bench``): The gated recurrence: closed-form BPTT scan against the lean autodiff
``lax.scan`` a user would write, ``nn.RNN(GatedCell)`` and Flax's RNNs.

Float32, batch 32, T = 256, n = m = 256 (quick: 8, 64, 64, 64, fewer rows). Every variant is timed
interleaved in one process. The loss is ``mean(zs**2)``, differentiated with respect to the
parameters. Then every path (default, remat, final state) at several lengths, and the
final-state path from ``T = 10^3`` to ``10^6``. FLOPs count ``2 B n m`` per
``(B, n) x (n, m)`` matmul: the gated cell does 3 per step forward and 7 forward+backward
(the backward adds ``W_z^T`` on the adjoint and three weight gradients); Flax's ``GRUCell``
does 6 / 15 and ``MGUCell`` 4 / 10.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gated_jax import cell
from gated_jax.lab._harness import (
    Table,
    compile_stats,
    compiled_with_stats,
    device_line,
    matmul_gflops,
    mib,
    time_interleaved,
)
from gated_jax.lab._report import render
from gated_jax.lab._verify import Check
from gated_jax.testing import max_rel_error, numpy_loop, plain_scan

# --- from verification/cell.py ------------------------------------------------------------


class _Config(NamedTuple):
    """One verify case of the scan and its backward pass."""

    B: int
    T: int
    n: int
    m: int
    bias: bool
    reverse: bool
    lengths: bool


# Two cases cover every row: the seed's cell (no bias, forward, one segment loop), and biases
# with seq_lengths, run in reverse over two segment loops of 35 steps (the remat path pads it).
_CONFIGS = [
    _Config(B=3, T=8, n=3, m=4, bias=False, reverse=False, lengths=False),
    _Config(B=2, T=70, n=2, m=3, bias=True, reverse=True, lengths=True),
]


def _case(seed: int, B, T, n, m, bias):
    rng = np.random.default_rng(seed)
    shapes = [(m, n), (m, n), (m, m)] + ([(m,), (m,)] if bias else [])
    p = cell.GatedParams(*[jnp.asarray(rng.normal(size=s)) for s in shapes])
    xs = jnp.asarray(rng.normal(size=(B, T, n)))
    z0 = jnp.asarray(rng.normal(size=(B, m)))
    lengths = jnp.asarray(rng.integers(0, T + 1, size=B))
    ct = jnp.asarray(rng.normal(size=(B, T, m)))
    return p, xs, z0, lengths, ct


def _perturbed_states(p, xs, z0, deltas):
    """Plain-scan states ``z[1..T]`` with ``deltas[k]`` added to ``z[k]``.

    ``jax.jacfwd`` with respect to ``deltas`` gives every ``dz[e]/dz[k]`` at once.
    """

    def step(z, inp):
        x, d = inp
        out = plain_scan(p, x[None, None], (z + d)[None])[0, 0]
        return out, out

    return lax.scan(step, z0, (xs, deltas))[1]


# The references are jitted once per shape: autodiff of the plain scan (reverse mode for the
# backward pass, forward mode for every product of Jacobians), then compared eagerly.
_all_products = jax.jit(jax.jacfwd(_perturbed_states, argnums=3))


@jax.jit(static_argnames=("reverse",))
def _scan_and_vjps(p, xs, z0, lengths, ct, *, reverse):
    """The library's scan, ``gated_bptt`` and custom VJP (without and with remat), and the
    reference VJP of the plain scan: one compiled program per case, not one per call."""
    plain = lambda p, xs, z0: plain_scan(p, xs, z0, seq_lengths=lengths, reverse=reverse)
    ref = jax.vjp(plain, p, xs, z0)[1](ct)
    kw = dict(seq_lengths=lengths, reverse=reverse)
    zs = cell.gated_scan(p, xs, z0, **kw)
    bptt = cell.gated_bptt(p, xs, z0, ct, **kw)
    vjps = [
        jax.vjp(lambda p, xs, z0, r=r: cell.gated_scan(p, xs, z0, remat=r, **kw), p, xs, z0)[1](ct)
        for r in (False, True)
    ]
    return zs, bptt, ref, vjps


# the verify rows: (key of the worst error, formula, reference)
_ROWS = [
    ("scan", "gated_scan: z[t] = c z[t-1] + (1-c) W_x x[t]", "NumPy loop of seed 1.2"),
    ("masked", "gated_scan, seq_lengths (held states), reverse", "NumPy loop with lengths"),
    ("vjp", "jax.vjp(gated_scan): custom-VJP closed-form BPTT", "jax.vjp of plain lax.scan"),
    ("remat", "jax.vjp(gated_scan, remat=True)", "jax.vjp of plain lax.scan"),
]
_ROWS += [
    (
        f"bptt_{name}",
        f"gated_bptt dl/d{name} = sum_t {term}",
        "jax.vjp of plain lax.scan",
    )
    for name, term in [
        ("w_x", "ubar[t] x[t]^T, shape (m, n)"),
        ("w_c", "pbar[t] x[t]^T"),
        ("w_z", "pbar[t] z[t-1]^T"),
        ("b_c", "pbar[t]"),
        ("b_x", "ubar[t]"),
    ]
]
_ROWS += [
    (
        "bptt_dxs",
        "gated_bptt dl/dx[t] = W_c^T pbar[t] + W_x^T ubar[t]",
        "jax.vjp of plain lax.scan",
    ),
    ("bptt_dz0", "gated_bptt dl/dz0 = J[1]^T delta[1]", "jax.vjp of plain lax.scan"),
    ("step", "step_jacobian: diag(c) + diag((z-u) c (1-c)) W_z", "jax.jacfwd of plain scan"),
    ("states", "state_jacobians J[1..T]", "jax.jacfwd of plain scan"),
    ("product", "jacobian_product dz[end]/dz[start]", "jax.jacfwd of plain scan"),
    ("flow", "gradient_flow: spectral norm of dz[T]/dz[k]", "SVD of jax.jacfwd of plain scan"),
]


class _Worst:
    """The worst error and the case count of each verify row, recorded as cases run."""

    def __init__(self) -> None:
        self.worst: dict[str, float] = {}
        self.cases: dict[str, int] = {}

    def __call__(self, key: str, err: float) -> None:
        self.worst[key] = max(self.worst.get(key, 0.0), err)
        self.cases[key] = self.cases.get(key, 0) + 1


def _scan_cases(seed: int, record: _Worst) -> None:
    """Scans, masks, BPTT and the VJPs against the NumPy loop and ``jax.vjp`` of ``lax.scan``."""
    for i, (B, T, n, m, bias, reverse, with_len) in enumerate(_CONFIGS):
        p, xs, z0, lengths, ct = _case(seed * 100 + i, B, T, n, m, bias)
        L = lengths if with_len else None
        zs, (dp, dx, dz0), (dp_ref, dx_ref, dz0_ref), vjps = _scan_and_vjps(
            p, xs, z0, L, ct, reverse=reverse
        )
        ref = numpy_loop(
            p, xs, z0, seq_lengths=None if L is None else np.asarray(L), reverse=reverse
        )
        record("masked" if with_len else "scan", max_rel_error(zs, ref))
        for name in cell.GatedParams._fields:
            if getattr(p, name) is not None:
                record(f"bptt_{name}", max_rel_error(getattr(dp, name), getattr(dp_ref, name)))
        record("bptt_dxs", max_rel_error(dx, dx_ref))
        record("bptt_dz0", max_rel_error(dz0, dz0_ref))
        for remat, g in zip((False, True), vjps, strict=True):
            record("remat" if remat else "vjp", max_rel_error(g, (dp_ref, dx_ref, dz0_ref)))


def _jacobian_cases(seed: int, record: _Worst) -> float:
    """The Jacobian diagnostics against ``jacfwd``; returns the worst norm / bound ratio.

    One sequence each, one shape and structure for the three cases (recurrent weights x1, x3,
    x5), so each compiles once.
    """
    ratio = 0.0
    for j in range(3):
        p, xs, z0, _, _ = _case(seed * 100 + 50 + j, 1, 6, 3, 4, True)
        p = p._replace(w_z=p.w_z * (1 + 2 * j))
        xs, z0 = xs[0], z0[0]
        T, m = xs.shape[0], z0.shape[0]
        # indexed in NumPy: an eager jnp index per (t, k) would compile a program each
        D = np.asarray(_all_products(p, xs, z0, jnp.zeros((T, m))))
        record("step", max_rel_error(cell.step_jacobian(p, z0, xs[0]), D[0, :, 0]))
        Js = cell.state_jacobians(p, xs, z0)
        record("states", max_rel_error(Js, np.stack([D[t, :, t] for t in range(T)])))
        for s, e in [(0, T), (1, 4)]:
            prod = cell.jacobian_product(p, xs, z0, start=s, end=e)
            record("product", max_rel_error(prod, D[e - 1, :, s]))
        flow = [np.linalg.norm(D[T - 1, :, k], 2) for k in range(T)] + [1.0]
        record("flow", max_rel_error(cell.gradient_flow(p, xs, z0), np.array(flow)))
        actual = np.linalg.norm(np.asarray(Js), 2, axis=(-2, -1))
        bound = np.asarray(cell.jacobian_norm_bound(p, xs, z0))
        ratio = max(ratio, float(np.max(actual / bound)))
    return ratio


def checks(seed: int) -> list[Check]:
    record = _Worst()
    _scan_cases(seed, record)
    ratio = _jacobian_cases(seed, record)
    out = [
        Check("gated cell", formula, reference, record.worst[key], record.cases[key])
        for key, formula, reference in _ROWS
        if key in record.worst
    ]
    out.append(
        Check(
            "gated cell",
            "jacobian_norm_bound: norm(J) <= max c + max abs(s) norm(W_z); max of actual/bound",
            "SVD of state_jacobians",
            ratio,
            3 * 6,
            tolerance=1.0,
        )
    )
    return out


# --- from report/cell.py ------------------------------------------------------------------

TITLE = "Seed 1.2(b), (c): the gated recurrence and backpropagation through time"


SECTION = """
**Dimensions (1.2(b)).** `x[t]` is in R^n, the state `z[t]` and the gate `c[t]` in R^m,
`W_x, W_c` are `m x n` and `W_z` is `m x m`. The homework's answer `c[t] in R^m` is right: `c[t]`
multiplies `z[t-1]` elementwise. Here `n = {n}`, `m = {m}`, `T = {T}`.

**The gradient's shape (1.2(c)).** The homework writes `dl/dW_x in R^(n x m)`. A gradient has the
shape of its parameter: `gated_bptt` returns `dl/dW_x` of shape `{dp_shape}` = `(m, n)`,
the same as `jax.grad`'s `{auto_shape}`. The seed's shape is the transpose.

**The closed form.** With `u[t] = W_x x[t]` and `s[t] = (z[t-1] - u[t]) c[t] (1 - c[t])`,
the one-step Jacobian is `J[t] = diag(c[t]) + diag(s[t]) W_z`. The adjoint
`delta[t] = dl/dz[t]` obeys `delta[t] = g[t] + J[t+1]^T delta[t+1]`, where `g[t]` is the
loss's direct dependence on `z[t]`. Then
`dl/dW_x = sum_t ((1 - c[t]) delta[t]) x[t]^T`,
`dl/dW_c = sum_t (s[t] delta[t]) x[t]^T`, `dl/dW_z = sum_t (s[t] delta[t]) z[t-1]^T`,
`dl/dx[t] = W_c^T (s[t] delta[t]) + W_x^T ((1 - c[t]) delta[t])`, `dl/dz[0] = J[1]^T delta[1]`.

**The homework's formula is the special case of a loss on one state.** For `l = v . z[t*]`
(`t* = {t_star}`), `g` is zero except at `t*`, and unrolling the adjoint gives exactly the
homework's sum `dl/dz[t*] sum_k (prod_(i=k+1..t*) J[i]) dz[k]/dW_x`, with `dz[k]/dW_x` the
direct dependence `(1 - c[k]) x[k]^T` on each row. Computed term by term with the library's
`jacobian_product`, in `W_x`'s own `(m, n)` layout, it matches `jax.grad`:

| quantity | max rel. error vs `jax.grad` of a plain `lax.scan` (float64) |
|---|---:|
| seed 1.2(c) sum, loss on `z[{t_star}]` | {err_seed:.1e} |
| `gated_bptt` `dl/dW_x`, same loss | {err_bptt:.1e} |
| `gated_bptt`, all parameters, loss on every state | {err_all:.1e} |

A loss on every state (as in training) needs the sum over `t*` of such sums; the adjoint
recurrence computes all of them in one reverse pass, `O(T)` rather than `O(T^2)` Jacobian
products.

**Forward and backward passes (1.2(c), second part).** The homework says both passes "keep
memory of previous states". More precisely, the backward pass is the forward pass run in reverse
time with the transposed one-step map: the forward loop carries `z[t]` forward through
`z @ W_z^T` (one matmul per step), the backward loop carries `delta[t]` backward through
`(s delta) @ W_z` (one matmul per step, the transpose), and the per-step weight contributions,
which do not depend on each other, are summed as large matmuls over all steps afterwards, just as
the forward pass computes the input projections `W_c x`, `W_x x` for all steps before its loop.
The backward pass needs the forward's states (`z`, `c`, `s`), so it runs after the forward pass;
`gated_scan(..., remat=True)` keeps only every `K`-th state and recomputes the rest.
"""


def section(ctx) -> str:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gated_jax import cell

    n, m, T, t_star = 3, 5, 12, 8
    with jax.enable_x64(True):
        rng = np.random.default_rng(ctx.seed)
        p = cell.GatedParams(
            jnp.asarray(rng.normal(size=(m, n))),
            jnp.asarray(rng.normal(size=(m, n))),
            jnp.asarray(0.5 * rng.normal(size=(m, m))),
        )
        xs = jnp.asarray(rng.normal(size=(T, n)))
        z0 = jnp.zeros(m)
        zs = cell.gated_scan(p, xs, z0)
        v = jnp.asarray(rng.normal(size=m))

        # loss on ONE state: l = v . z[t*]  ->  dzs is v at step t* and zero elsewhere
        dzs = jnp.zeros((T, m)).at[t_star - 1].set(v)
        dp, dxs, dz0 = cell.gated_bptt(p, xs, z0, dzs)
        auto = jax.grad(
            lambda w: v @ plain_scan(p._replace(w_x=w), xs[None], z0[None])[0, t_star - 1]
        )(p.w_x)

        # the seed's 1.2(c) sum: dl/dz[t] sum_k (prod_{i=k+1}^t J[i]) dz[k]/dW_x (direct part),
        # with dz[k]/dW_x[a, b] = (1 - c[k])_a x[k]_b on row a: a row vector times an outer product
        zprev = jnp.concatenate([z0[None], zs[:-1]])
        c = cell.step.step_with_factors(p, zprev, xs)[1]
        seed_sum = jnp.zeros((m, n))
        for k in range(1, t_star + 1):
            prod = cell.jacobian_product(p, xs, z0, start=k, end=t_star)
            row = (v @ prod) * (1 - c[k - 1])
            seed_sum = seed_sum + jnp.outer(row, xs[k - 1])
        err_seed = max_rel_error(seed_sum, auto)
        err_bptt = max_rel_error(dp.w_x, auto)

        # a loss on every state: the adjoint sums the seed's expression over t
        g = jnp.asarray(rng.normal(size=(T, m)))
        full = cell.gated_bptt(p, xs, z0, g)
        ref = jax.vjp(lambda q: plain_scan(q, xs[None], z0[None])[0], p)[1](g)[0]
        err_all = max_rel_error(full[0], ref)

    return render(
        SECTION,
        dict(n=n, m=m, T=T, t_star=t_star, err_seed=err_seed, err_bptt=err_bptt, err_all=err_all)
        | {"dp_shape": tuple(dp.w_x.shape), "auto_shape": tuple(auto.shape)},
    )


# --- benchmark ----------------------------------------------------------------------------

BENCH_TITLE = "Gated recurrence: closed-form BPTT vs the lean autodiff scan vs Flax"


def lean_scan(p, xs):
    """The leanest honest autodiff baseline: the cell written the obvious way in a
    ``lax.scan`` (three ``@ W.T`` matmuls in the step), differentiated by ``jax.grad``."""

    def step(z, x):
        c = jax.nn.sigmoid(x @ p.w_c.T + z @ p.w_z.T)
        z = c * z + (1 - c) * (x @ p.w_x.T)
        return z, z

    z0 = jnp.zeros((xs.shape[0], p.w_x.shape[0]), xs.dtype)
    return jnp.swapaxes(lax.scan(step, z0, jnp.swapaxes(xs, 0, 1))[1], 0, 1)


def _mean_sq(f):
    return lambda p, xs: jnp.mean(f(p, xs) ** 2)


def _final(f):
    """A loss on the final state only, ``mean(z[T]**2)``."""
    return lambda p, xs: jnp.mean(f(p, xs)[:, -1] ** 2)


def _gated_final(p, xs):
    return jnp.mean(cell.gated_scan(p, xs, return_sequence=False) ** 2)


def _flax(kind: str, m: int, xs):
    import flax.linen as nn

    from gated_jax.nn import GatedCell, GatedRNN

    mod = {
        "GRU": lambda: nn.RNN(nn.GRUCell(features=m)),
        "MGU": lambda: nn.RNN(nn.MGUCell(features=m)),
        "Gated": lambda: nn.RNN(GatedCell(m)),
        "GatedRNN": lambda: GatedRNN(m),
    }[kind]()
    # GatedRNN has nn.RNN(GatedCell)'s parameter tree: both start from the same weights
    init = nn.RNN(GatedCell(m)) if kind == "GatedRNN" else mod
    return init.init(jax.random.key(0), xs), mod.apply


def _load() -> float:
    """1-minute load average (NaN where the OS has none): ratios drift when the CPUs are busy."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


LEAN = "lean lax.scan (3 matmuls in step), jax.grad"
FLAX = "flax.linen.RNN(GatedCell), jax.grad"


_NOTES = [
    "Forward+backward rows: loss mean(zs**2), gradient w.r.t. all parameters; speed-ups vs "
    "the lean scan's jax.grad and vs nn.RNN(GatedCell)'s in the same run. Final-state rows: "
    "loss mean(z[T]**2), vs the lean scan with that loss; forward-only rows: vs the lean "
    "forward. Temp MiB: compiled memory_analysis() (deterministic), the inputs not counted.",
    "FLOPs: 2*B*n*m per matmul; gated cell 3/step forward, 7/step forward+backward; GRUCell "
    "6 / 15, MGUCell 4 / 10 (input and hidden denses; elementwise work not counted).",
    "Path rows ('path: ...'): forward+backward of each path at several T (B, n, m as named); "
    "ms is one timed call after a warm-up (interleaving is not possible at these lengths), "
    "'' where only compiled. The final-state rows at B=1, n=m=64 from T=10^3 up: memory "
    "beyond the inputs grows as sqrt(T) (x10 in T, ~x3.2 in memory).",
]


class _Runs:
    """What ``bench`` measures per variant: the call, FLOPs, meta, temp memory at two ``T``."""

    def __init__(self) -> None:
        self.fns: dict = {}
        self.flops: dict = {}
        self.meta: dict = {}
        self.mem: dict = {}
        self.mem_long: dict = {}


# what the quick bench leaves out (the comparison survives: lean scan, closed-form BPTT,
# nn.RNN(GatedCell), GatedRNN); the memory options and long T are in the full table
_NOT_QUICK = (
    "project plain_scan (gated_step in lax.scan), jax.grad",
    "gated_scan backward='autodiff'",
    "gated_scan remat=True",
    "final state: lean lax.scan, loss on z[T]",
    "final state: gated_scan return_sequence=False",
)


def _library_variants(runs: _Runs, p, xs, xl, mm: float, T: int, quick: bool = False) -> None:
    """The lean scan, the plain scan and ``gated_scan``'s backward options (forward+backward)."""
    variants = {
        LEAN: _mean_sq(lean_scan),
        "project plain_scan (gated_step in lax.scan), jax.grad": _mean_sq(plain_scan),
        "gated_scan (closed-form BPTT)": _mean_sq(cell.gated_scan),
        "gated_scan remat=True": _mean_sq(lambda p, x: cell.gated_scan(p, x, remat=True)),
        "gated_scan backward='autodiff'": _mean_sq(
            lambda p, x: cell.gated_scan(p, x, backward="autodiff")
        ),
        "final state: lean lax.scan, loss on z[T]": _final(lean_scan),
        "final state: gated_scan return_sequence=False": _gated_final,
    }
    for name, loss in variants.items():
        if quick and name in _NOT_QUICK:
            continue
        g, cs = compiled_with_stats(jax.grad(loss), p, xs)
        runs.fns[name] = lambda g=g: g(p, xs)
        runs.flops[name], runs.meta[name] = 7 * mm * T, (3 * mm, cs.compile_s)
        runs.mem[name] = cs.temp_bytes
        if not quick:
            runs.mem_long[name] = compile_stats(jax.grad(loss), p, xl).temp_bytes


def _flax_variants(runs: _Runs, m: int, xs, xl, mm: float, T: int, quick: bool = False) -> None:
    """``nn.RNN`` of Flax's cells and ``GatedRNN`` (forward+backward; quick: no GRU, MGU)."""
    kinds = [("Gated", 3, 7), ("GatedRNN", 3, 7), ("GRU", 6, 15), ("MGU", 4, 10)]
    for kind, per_step, per_step_fb in kinds[:2] if quick else kinds:
        fp, apply = _flax(kind, m, xs)
        key = (
            FLAX
            if kind == "Gated"
            else (
                "GatedRNN (gated_jax.nn), jax.grad"
                if kind == "GatedRNN"
                else f"flax.linen.RNN({kind}Cell), jax.grad"
            )
        )
        loss = lambda q, x, apply=apply: jnp.mean(apply(q, x) ** 2)
        g, cs = compiled_with_stats(jax.grad(loss), fp, xs)
        runs.fns[key] = lambda g=g, fp=fp: g(fp, xs)
        runs.flops[key], runs.meta[key] = per_step_fb * mm * T, (per_step * mm, cs.compile_s)
        runs.mem[key] = cs.temp_bytes
        if kind in ("Gated", "GatedRNN") and not quick:
            runs.mem_long[key] = compile_stats(jax.grad(loss), fp, xl).temp_bytes


def _forward_variants(runs: _Runs, p, xs, mm: float, T: int) -> None:
    fwd = {"forward only: lean lax.scan": lean_scan, "forward only: gated_scan": cell.gated_scan}
    for key, f in fwd.items():
        fj, cs = compiled_with_stats(f, p, xs)
        runs.fns[key] = lambda fj=fj: fj(p, xs)
        runs.flops[key], runs.meta[key] = 3 * mm * T, (3 * mm, cs.compile_s)
        runs.mem[key] = cs.temp_bytes


def _baselines(names) -> dict[str, str]:
    """Each variant's baseline row: the lean scan, or its final-state / forward-only twin."""
    base = dict.fromkeys(names, LEAN)
    for k in names:
        if k.startswith("final state"):
            base[k] = "final state: lean lax.scan, loss on z[T]"
        elif k.startswith("forward only"):
            base[k] = "forward only: lean lax.scan"
    return base


def _variant_rows(runs: _Runs, times: dict, dot: float) -> list[list]:
    base = _baselines(runs.fns)
    rows = []
    for name in runs.fns:
        gf = runs.flops[name] / times[name] / 1e9
        vs_flax = "" if name.startswith("forward only") else times[FLAX] / times[name]
        long = ""
        if name in runs.mem_long:
            ratio = runs.mem_long[name] / runs.mem_long[base[name]]
            long = f"{mib(runs.mem_long[name]):.1f} ({ratio:.2f}x)"
        rows.append(
            [
                name,
                times[name] * 1e3,
                times[base[name]] / times[name],
                vs_flax,
                gf,
                gf / dot,
                runs.meta[name][1],
                mib(runs.mem[name]),
                long,
            ]
        )
    return rows


def bench(quick: bool = False) -> Table:
    """Forward+backward and forward-only speed at ``T``, compiled temp memory at ``T`` and at
    a long ``T_mem``, ratios against the lean scan and ``nn.RNN(GatedCell)`` of the same run;
    then every path's memory and speed at ``T``, ``T_mem`` and a long ``T``, and the
    final-state path's memory from ``T = 10^3`` to ``10^6`` with one timed run at the longest.
    """
    load0 = _load()
    B, T, n, m = (8, 64, 64, 64) if quick else (32, 256, 256, 256)
    T_mem = 512 if quick else 4096
    rounds = 5 if quick else 9
    p = cell.init_gated_params(jax.random.key(0), n, m)
    # drawn by NumPy: a jax.random draw compiles a program per shape, costlier than the draw
    xs = jnp.asarray(np.random.default_rng(1).standard_normal((B, T, n)), jnp.float32)
    mm = 2.0 * B * n * m  # FLOPs of one matmul (n = m here)
    xl = jax.ShapeDtypeStruct((B, T_mem, n), jnp.float32)
    runs = _Runs()
    _library_variants(runs, p, xs, xl, mm, T, quick)
    _flax_variants(runs, m, xs, xl, mm, T, quick)
    if not quick:
        _forward_variants(runs, p, xs, mm, T)

    dot = matmul_gflops(512 if quick else 1024)
    times = time_interleaved(runs.fns, rounds=rounds)
    table = Table(
        title=f"{BENCH_TITLE} (B={B}, T={T}, n=m={n}, float32)",
        columns=[
            "variant",
            "median ms",
            "speed-up vs lean scan",
            "speed-up vs nn.RNN(GatedCell)",
            "GFLOP/s",
            "fraction of jnp.dot",
            "compile s",
            f"temp MiB at T={T}",
            f"temp MiB at T={T_mem} (x lean)",
        ],
    )
    table.rows += _variant_rows(runs, times, dot)
    if not quick:  # each path's memory at long T: compiling them is most of the quick table
        table.rows += _path_rows(quick, p, n)
    table.notes += [
        device_line() + f"; large jnp.dot: {dot:.1f} GFLOP/s in the same run; 1-minute load "
        f"average {load0:.2f} at the start, {_load():.2f} at the end, on {os.cpu_count()} CPUs "
        "(a busy machine slows the large matmuls and lowers the speed-ups).",
        *_NOTES,
        *(
            [
                "quick: without the plain scan, backward='autodiff', remat=True, GRU, MGU, the "
                f"final-state and forward-only rows, the memory at T={T_mem} and the path rows "
                "(each path's memory at long T: `gated-jax bench --only cell`)."
            ]
            if quick
            else []
        ),
    ]
    return table


def _timed(g, *args) -> float:
    jax.block_until_ready(g(*args))
    t0 = time.perf_counter()
    jax.block_until_ready(g(*args))
    return time.perf_counter() - t0


def _inputs(key, shape: tuple[int, ...], *, timed: bool):
    """Random float32 inputs where a row is timed; only their shape where it is only compiled
    (no array drawn: drawing a long one costs more than compiling the program)."""
    if timed:
        return jax.random.normal(key, shape, jnp.float32)
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def _path_rows(quick: bool, p, n: int) -> list[list]:
    """Every path's compiled temp memory (and time where feasible) at several lengths."""
    B = 8 if quick else 32
    lengths = (8192,) if quick else (256, 4096, 65536)
    timed_up_to = 0 if quick else lengths[1]
    paths = {
        "default": _mean_sq(cell.gated_scan),
        "remat=True": _mean_sq(lambda p, x: cell.gated_scan(p, x, remat=True)),
        "return_sequence=False": _gated_final,
    }
    if quick:  # the two ends of the memory range; remat=True's is in the full table
        del paths["remat=True"]
    rows = []
    for T in lengths:
        xs = _inputs(jax.random.key(2), (B, T, n), timed=T <= timed_up_to)
        for name, loss in paths.items():
            g, cs = compiled_with_stats(jax.grad(loss), p, xs)
            ms = _timed(g, p, xs) * 1e3 if T <= timed_up_to else ""
            rows.append(
                [
                    f"path: {name}, B={B}, T={T}, n=m={n}",
                    ms,
                    "",
                    "",
                    "",
                    "",
                    cs.compile_s,
                    mib(cs.temp_bytes),
                    "",
                ]
            )
    q = cell.init_gated_params(jax.random.key(3), 64, 64)
    long = () if quick else (10**3, 10**4, 10**5, 10**6)
    for T in long:
        timed = T == long[-1] and not quick
        xs = _inputs(jax.random.key(4), (1, T, 64), timed=timed)
        g, cs = compiled_with_stats(jax.grad(_gated_final), q, xs)
        ms = _timed(g, q, xs) * 1e3 if timed else ""
        rows.append(
            [
                f"path: return_sequence=False, B=1, T={T}, n=m=64",
                ms,
                "",
                "",
                "",
                "",
                cs.compile_s,
                mib(cs.temp_bytes),
                f"inputs {mib(cs.argument_bytes):.1f} MiB",
            ]
        )
    return rows
