"""Rows of ``gated-jax verify`` for the Flax modules (:mod:`gated_jax.nn`, :mod:`gated_jax.nnx`).

Each row draws random configs (batch dims, ``time_major``, ``reverse``/``keep_order``,
``seq_lengths``, biases, widths) and random weights in float64, and reports the worst relative
error between two routes that must agree: the fast ``GatedRNN`` (hoisted projections, closed-form
BPTT) against ``nn.RNN(GatedCell)`` (Flax's scan over the cell, JAX autodiff), the cell stepped
by hand against ``nn.RNN``, the parameter map against the functional core, and NNX against linen
with the same weights. Outputs are compared at valid steps (``nn.RNN`` does not mask padding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import nnx

from gated_jax import nn as gnn
from gated_jax import nnx as gnnx
from gated_jax.cell import gated_step
from gated_jax.verification import Check, max_rel_error

ORDER = 40

_CASES = 4


def _tree(rng: np.random.Generator, n: int, m: int, use_bias: bool) -> dict:
    def normal(*shape):
        return jnp.asarray(0.7 * rng.standard_normal(shape))

    tree = {"ic": {"kernel": normal(n, m)}, "hc": {"kernel": normal(m, m)}}
    tree["ix"] = {"kernel": normal(n, m)}
    if use_bias:
        tree["ic"]["bias"] = normal(m)
        tree["ix"]["bias"] = normal(m)
    return tree


def _case(rng: np.random.Generator, k: int) -> dict:
    """A random config; ``k`` cycles through the option combinations."""
    batch = [(3,), (4,), (2, 3), ()][k % 4]
    lengths = k % 4 == 1  # with one batch dim: nn.RNN's carry selection handles only that
    T = int(rng.integers(2, 8))
    n, m = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    return dict(
        batch=batch,
        T=T,
        n=n,
        m=m,
        use_bias=bool(rng.integers(2)),
        time_major=bool(rng.integers(2)),
        reverse=bool(rng.integers(2)),
        keep_order=bool(rng.integers(2)),
        lengths=jnp.asarray(rng.integers(1, T + 1, size=batch)) if lengths else None,
        tree=_tree(rng, n, m, bool(k % 3)),
        x=jnp.asarray(rng.standard_normal(batch + (T, n))),
        z0=jnp.asarray(rng.standard_normal(batch + (m,))),
        w=jnp.asarray(rng.standard_normal(batch + (T, m))),
    )


def _valid(c: dict) -> jax.Array:
    """``(*batch, T, 1)`` mask of valid steps (all ones without ``seq_lengths``)."""
    t = jnp.arange(c["T"]).reshape((1,) * len(c["batch"]) + (c["T"],))
    if c["lengths"] is None:
        return jnp.ones(c["batch"] + (c["T"], 1), bool)
    return (t < c["lengths"][..., None])[..., None]


def _modules(c: dict):
    kw = dict(
        time_major=c["time_major"],
        reverse=c["reverse"],
        keep_order=c["keep_order"],
        return_carry=True,
    )
    use_bias = "bias" in c["tree"]["ic"]
    slow = nn.RNN(gnn.GatedCell(c["m"], use_bias=use_bias, param_dtype=jnp.float64), **kw)
    fast = gnn.GatedRNN(c["m"], use_bias=use_bias, param_dtype=jnp.float64, **kw)
    return slow, fast


def _batch_major(c: dict, ys):
    return jnp.moveaxis(ys, 0, -2) if c["time_major"] else ys


def _loss(module, c: dict):
    """A scalar of outputs (valid steps) and carry, as a function of (variables, inputs)."""

    def f(variables, xs):
        carry, ys = module.apply(variables, xs, initial_carry=c["z0"], seq_lengths=c["lengths"])
        ys = _batch_major(c, ys)
        return jnp.sum(jnp.where(_valid(c), ys * c["w"], 0.0)) + jnp.sum(jnp.sin(carry))

    return f


def _outputs(module, c: dict, variables, xs):
    carry, ys = jax.jit(module.apply)(
        variables, xs, initial_carry=c["z0"], seq_lengths=c["lengths"]
    )
    ys = _batch_major(c, ys)
    return carry, jnp.where(_valid(c), ys, 0.0)


def _fast_vs_slow(seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    out_err = grad_err = 0.0
    for k in range(_CASES):
        c = _case(rng, k)
        xs = jnp.moveaxis(c["x"], -2, 0) if c["time_major"] else c["x"]
        variables = {"params": {"cell": c["tree"]}}
        slow, fast = _modules(c)
        out_err = max(
            out_err,
            max_rel_error(_outputs(fast, c, variables, xs), _outputs(slow, c, variables, xs)),
        )
        g_fast = jax.jit(jax.grad(_loss(fast, c), argnums=(0, 1)))(variables, xs)
        g_slow = jax.jit(jax.grad(_loss(slow, c), argnums=(0, 1)))(variables, xs)
        grad_err = max(grad_err, max_rel_error(g_fast, g_slow))
    return out_err, grad_err


def _by_hand(seed: int) -> float:
    """The linen cell stepped in a Python loop against ``nn.RNN(GatedCell)``."""
    rng = np.random.default_rng(seed + 1)
    err = 0.0
    for k in range(2):
        B, T, n, m = 3, 5, 3, 4
        tree = _tree(rng, n, m, bool(k))
        cell = gnn.GatedCell(m, use_bias=bool(k), param_dtype=jnp.float64)
        xs = jnp.asarray(rng.standard_normal((B, T, n)))
        ys = jax.jit(nn.RNN(cell).apply)({"params": {"cell": tree}}, xs)
        step = jax.jit(cell.apply)
        z, steps = jnp.zeros((B, m)), []
        for t in range(T):
            z, y = step({"params": tree}, z, xs[:, t])
            steps.append(y)
        err = max(err, max_rel_error(jnp.stack(steps, axis=1), ys))
    return err


def _param_map(seed: int) -> float:
    """A cell step with the tree == ``gated_step(to_gated_params(tree))``."""
    rng = np.random.default_rng(seed + 2)
    err = 0.0
    for k in range(_CASES):
        n, m = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        tree = _tree(rng, n, m, bool(k % 2))
        batch = [(), (3,), (2, 3), (1,)][k]
        x = jnp.asarray(rng.standard_normal(batch + (n,)))
        z = jnp.asarray(rng.standard_normal(batch + (m,)))
        cell = gnn.GatedCell(m, use_bias=bool(k % 2), param_dtype=jnp.float64)
        new, _ = jax.jit(cell.apply)({"params": tree}, z, x)
        err = max(err, max_rel_error(new, gated_step(gnn.to_gated_params(tree), z, x)))
    return err


def _nnx_vs_linen(seed: int) -> tuple[float, float]:
    """NNX ``GatedRNN`` and ``nnx.RNN(GatedCell)`` loaded with a linen tree, against linen."""
    rng = np.random.default_rng(seed + 3)
    fast_err = slow_err = 0.0
    for k in range(2):
        c = _case(rng, 4 * k + 1)  # one batch dim, with seq_lengths
        xs = jnp.moveaxis(c["x"], -2, 0) if c["time_major"] else c["x"]
        variables = {"params": {"cell": c["tree"]}}
        _, linen = _modules(c)
        ref = _outputs(linen, c, variables, xs)
        use_bias = "bias" in c["tree"]["ic"]
        layer = nnx.eval_shape(
            lambda c=c, use_bias=use_bias: gnnx.GatedRNN(
                c["n"], c["m"], use_bias=use_bias, param_dtype=jnp.float64, rngs=nnx.Rngs(0)
            )
        )
        layer.cell.load_gated_params(gnn.to_gated_params(c["tree"]))
        kw = dict(
            time_major=c["time_major"],
            reverse=c["reverse"],
            keep_order=c["keep_order"],
            return_carry=True,
        )
        rnn = nnx.RNN(layer.cell, **kw)
        for module, is_fast in ((layer, True), (rnn, False)):
            carry, ys = nnx.jit(
                lambda mod, xs, z0, sl, kw=kw, is_fast=is_fast: mod(
                    xs, initial_carry=z0, seq_lengths=sl, **(kw if is_fast else {})
                )
            )(module, xs, c["z0"], c["lengths"])
            got = (carry, jnp.where(_valid(c), _batch_major(c, ys), 0.0))
            if is_fast:
                fast_err = max(fast_err, max_rel_error(got, ref))
            else:
                slow_err = max(slow_err, max_rel_error(got, ref))
    return fast_err, slow_err


def checks(seed: int) -> list[Check]:
    """The module rows (float64 is on when called)."""
    out_err, grad_err = _fast_vs_slow(seed)
    nnx_fast, nnx_slow = _nnx_vs_linen(seed)
    return [
        Check(
            "nn.GatedCell",
            "cell step == gated_step(to_gated_params(tree)): w_c = ic.kernel.T, ...",
            "gated_jax.cell.gated_step",
            _param_map(seed),
            _CASES,
        ),
        Check(
            "nn.GatedCell",
            "cell stepped by hand == nn.RNN(GatedCell)",
            "flax.linen.RNN",
            _by_hand(seed),
            2,
        ),
        Check(
            "nn.GatedRNN",
            "outputs (valid steps) and carry == nn.RNN(GatedCell), random options",
            "flax.linen.RNN",
            out_err,
            _CASES,
        ),
        Check(
            "nn.GatedRNN",
            "d loss/d (params, inputs), closed-form BPTT == autodiff of nn.RNN(GatedCell)",
            "jax.grad(flax.linen.RNN)",
            grad_err,
            _CASES,
        ),
        Check(
            "nnx.GatedRNN",
            "NNX fast layer == linen GatedRNN, same weights",
            "gated_jax.nn.GatedRNN",
            nnx_fast,
            2,
        ),
        Check(
            "nnx.GatedCell",
            "nnx.RNN(GatedCell) == linen GatedRNN, same weights (valid steps)",
            "flax.nnx.RNN",
            nnx_slow,
            2,
        ),
    ]
