"""Flax modules: the fast ``GatedRNN`` against ``nn.RNN(GatedCell)``, forward + backward.

Both run the same cell with the same weights (the parameter trees are identical). ``nn.RNN``
scans the cell with ``flax.linen.scan`` (three matmuls per step, JAX autodiff through the scan);
``GatedRNN`` runs :func:`gated_jax.cell.gated_scan` (input projections hoisted out of the loop,
one matmul per step, closed-form BPTT). Timed interleaved in one process as ``jax.grad`` of a
scalar loss with respect to the parameters; Flax's ``GRUCell`` and ``MGUCell`` in ``nn.RNN``,
and the NNX pair, are listed for scale.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx

from gated_jax import nn as gnn
from gated_jax import nnx as gnnx
from gated_jax.bench.harness import Table, device_line, mib, ratios, time_interleaved

ORDER = 40
TITLE = "Flax modules: GatedRNN vs nn.RNN(GatedCell), forward + backward"

BASELINE = "nn.RNN(GatedCell)"


def _linen_grad(module, x):
    variables = jax.jit(module.init)(jax.random.key(0), x)

    def loss(variables, x):
        return jnp.mean(module.apply(variables, x) ** 2)

    return jax.grad(loss), variables


def _nnx_grad(model, x):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params, x):
        return jnp.mean(nnx.merge(graphdef, params, rest)(x) ** 2)

    return jax.grad(loss), params


def _temp_bytes(compiled) -> int:
    mem = compiled.memory_analysis()
    return int(getattr(mem, "temp_size_in_bytes", 0) or 0) if mem is not None else 0


def run(quick: bool = False) -> Table:
    """Time every variant at batch 32, T = 256, width 256 (``quick``: 8, 32, 32, fewer rows)."""
    B, T, W = (8, 32, 32) if quick else (32, 256, 256)
    x = jax.random.normal(jax.random.key(1), (B, T, W), jnp.float32)
    variants = {
        BASELINE: _linen_grad(nn.RNN(gnn.GatedCell(W, use_bias=True)), x),
        "GatedRNN": _linen_grad(gnn.GatedRNN(W, use_bias=True), x),
        "nnx.RNN(GatedCell)": _nnx_grad(
            nnx.RNN(gnnx.GatedCell(W, W, use_bias=True, rngs=nnx.Rngs(0)), rngs=False), x
        ),
        "nnx GatedRNN": _nnx_grad(gnnx.GatedRNN(W, W, use_bias=True, rngs=nnx.Rngs(0)), x),
    }
    if not quick:
        remat = gnn.GatedRNN(W, use_bias=True, remat=True)
        variants["GatedRNN(remat=True)"] = _linen_grad(remat, x)
        # unrolled loops on both sides: on a GPU the per-step launch is what unrolling removes
        unrolled = nn.RNN(gnn.GatedCell(W, use_bias=True), unroll=4)
        variants["nn.RNN(GatedCell, unroll=4)"] = _linen_grad(unrolled, x)
        variants["GatedRNN(unroll=4)"] = _linen_grad(gnn.GatedRNN(W, use_bias=True, unroll=4), x)
        variants["nn.RNN(MGUCell) (Flax)"] = _linen_grad(nn.RNN(nn.MGUCell(W)), x)
        variants["nn.RNN(GRUCell) (Flax)"] = _linen_grad(nn.RNN(nn.GRUCell(W)), x)
    compiled, compile_s, temp = {}, {}, {}
    for name, (fn, p) in variants.items():
        # compile once; the executable is timed and its memory analysis read
        t0 = time.perf_counter()
        compiled[name] = jax.jit(fn).lower(p, x).compile()
        compile_s[name] = time.perf_counter() - t0
        temp[name] = _temp_bytes(compiled[name])
    fns = {name: (lambda name=name: compiled[name](variants[name][1], x)) for name in variants}
    times = time_interleaved(fns, rounds=5 if quick else 15, warmup=1 if quick else 2)
    speed = ratios(times, BASELINE)
    table = Table(
        title=f"{TITLE} (B={B}, T={T}, n=m={W}, float32)",
        columns=["variant", "fwd+bwd ms", f"speed-up vs {BASELINE}", "compile s", "temp MiB"],
    )
    for name in variants:
        table.rows.append([name, 1e3 * times[name], speed[name], compile_s[name], mib(temp[name])])
    table.notes += [
        device_line(),
        "jax.grad of mean(outputs**2) with respect to all parameters; medians of interleaved "
        "rounds; speed-up = baseline time / variant time (target for GatedRNN: >= 1.5x).",
        "The NNX rows split the module once (parameters / rest) and time jax.jit of a merge "
        "function; nnx.RNN is built with rngs=False (the zeros carry needs no key).",
    ]
    if not quick:
        table.notes.append(
            "MGU and GRU do more work per step than the gated cell; they are there for scale. "
            "The unroll=4 rows unroll both loops (lax.scan unroll); compare them with each other."
        )
    return table
