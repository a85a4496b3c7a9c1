"""The Flax modules (linen and NNX): the capability's verify rows, report section and benchmark.

Verify rows (``checks``): Rows of ``gated-jax verify`` for the Flax modules
(:mod:`gated_jax.nn`, :mod:`gated_jax.nnx`).

Each row draws random configs (batch dims, ``time_major``, ``reverse``/``keep_order``,
``seq_lengths``, biases, widths) and random weights in float64, and reports the worst relative
error between two routes that must agree: the fast ``GatedRNN`` (hoisted projections, closed-
form BPTT) against ``nn.RNN(GatedCell)`` (Flax's scan over the cell, JAX autodiff), the cell
stepped by hand against ``nn.RNN``, the parameter map against the functional core, and NNX
against linen with the same weights. Outputs are compared at valid steps (``nn.RNN`` does not
mask padding).

Report section (``section``): the gated cell as Flax modules, the parameter map, and a tiny
trained model.

A causal ``Conv`` front-end feeds :class:`gated_jax.nn.GatedRNN` and a ``Dense`` head; the model
is trained with optax on a task that needs both (an exponential moving average of the input's
first difference). The same model with ``nn.RNN(GatedCell)`` in place of ``GatedRNN``, started
from the same parameters, follows the same loss curve: the two layers share their parameter
tree and compute the same function, one of them faster.

Benchmark (``bench``): Flax modules: the fast ``GatedRNN`` against ``nn.RNN(GatedCell)``,
forward + backward.

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
import numpy as np
from flax import linen as nn
from flax import nnx

from gated_jax import nn as gnn
from gated_jax import nnx as gnnx
from gated_jax.cell import gated_scan, gated_step
from gated_jax.lab._harness import Table, device_line, mib, ratios, time_interleaved
from gated_jax.lab._report import render
from gated_jax.lab._verify import Check
from gated_jax.testing import max_rel_error

# --- from verification/modules.py ---------------------------------------------------------

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


# --- from report/modules.py ---------------------------------------------------------------

TITLE = "Flax modules: the gated cell in linen and NNX"

_MAP = """\
| submodule | leaf | shape | `GatedParams` field | seed symbol |
|---|---|---|---|---|
| `ic` | `kernel` | `(n, m)` | `w_c = ic.kernel.T` | `W_c` (input to gate) |
| `ic` | `bias` (`use_bias`) | `(m,)` | `b_c` | gate bias (not in the seed) |
| `hc` | `kernel` | `(m, m)` | `w_z = hc.kernel.T` | `W_z` (state to gate) |
| `ix` | `kernel` | `(n, m)` | `w_x = ix.kernel.T` | `W_x` (input to candidate) |
| `ix` | `bias` (`use_bias`) | `(m,)` | `b_x` | candidate bias (not in the seed) |"""


def _data(B: int, T: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, T, 1)).astype(np.float32)
    d = np.diff(x[..., 0], axis=1, prepend=0.0)
    y = np.zeros((B, T), np.float32)
    acc = np.zeros(B, np.float32)
    for t in range(T):
        acc = 0.6 * acc + 0.4 * d[:, t]
        y[:, t] = acc
    return x, y[..., None]


def _train(ctx):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import linen as nn

    from gated_jax import nn as gnn

    B, T, steps = (16, 16, 60) if ctx.quick else (32, 32, 200)
    x, y = (jnp.asarray(a) for a in _data(B, T, ctx.seed))

    class Model(nn.Module):
        fast: bool

        @nn.compact
        def __call__(self, x):
            h = nn.Conv(4, kernel_size=(3,), padding="CAUSAL")(x)
            rnn = (
                gnn.GatedRNN(8, use_bias=True, name="rnn")
                if self.fast
                else nn.RNN(gnn.GatedCell(8, use_bias=True, parent=None), name="rnn")
            )
            return nn.Dense(1)(rnn(h))

    tx = optax.adam(3e-2)
    params0 = jax.jit(Model(fast=True).init)(jax.random.key(ctx.seed), x)["params"]
    curves, trained = {}, {}
    for fast in (True, False):
        model = Model(fast=fast)

        def loss_fn(p, model=model):
            return jnp.mean((model.apply({"params": p}, x) - y) ** 2)

        @jax.jit
        def train(params, loss_fn=loss_fn):
            def step(carry, _):
                params, opt_state = carry
                loss, grads = jax.value_and_grad(loss_fn)(params)
                updates, opt_state = tx.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), loss

            (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), length=steps)
            return params, losses

        name = "GatedRNN" if fast else "nn.RNN(GatedCell)"
        trained[name], losses = train(params0)
        curves[name] = np.asarray(losses)
    return curves, trained, (B, T, steps)


def _figure(ctx, curves) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for (name, losses), style in zip(curves.items(), ("-", "--"), strict=True):
        ax.semilogy(losses, style, label=name)
    ax.set_xlabel("Adam step")
    ax.set_ylabel("mean squared error")
    ax.set_title("Conv -> gated recurrence -> Dense, same initial parameters", fontsize=10)
    ax.legend()
    fig.tight_layout()
    return ctx.save_figure(fig, "modules_training")


SECTION = "\n".join(
    [
        "`gated_jax.nn.GatedCell` is a linen `RNNCellBase` (`__call__(carry, x) -> (carry, y)`, "
        "`initialize_carry(rng, input_shape)`, `num_feature_axes == 1`): it runs in `nn.RNN`, "
        "`nn.Bidirectional` and `nn.scan`. `gated_jax.nn.GatedRNN` is the whole-sequence layer "
        "on `gated_scan`'s fast path (hoisted input projections, closed-form BPTT) with "
        "`nn.RNN`'s call options and **the same parameter tree** as `nn.RNN(GatedCell(...))`. "
        "`gated_jax.nnx.GatedCell` / `GatedRNN` are the NNX versions (same leaf names). "
        "The cell is seed 1.2(a): `c = sigmoid(W_c x + W_z z + b_c)`, "
        "`z' = c * z + (1 - c) * (W_x x + b_x)`; `use_bias=False` (default) is the seed's cell.",
        "",
        "Parameter map (Flax kernels are `(in, out)`; `GatedParams` follows the seed's "
        "`(out, in)`, so each weight is a transpose; `to_gated_params` / `from_gated_params` "
        "convert):",
        "",
        "{param_map}",
        "",
        "Default initialisers: input kernels LeCun normal (variance `1/n`), recurrent kernel "
        "orthogonal (`||W_z||_2 = 1`), biases and carry zeros.",
        "",
        "**A tiny trained model.** Causal `Conv(4, kernel 3)` -> gated recurrence (8 units, "
        "biases) -> `Dense(1)`, trained with Adam (3e-2) for {steps} full-batch steps on "
        "{B} sequences of length {T}; target `y[t] = 0.6 y[t-1] + 0.4 (x[t] - x[t-1])`.",
        "",
        "| recurrent layer | first loss | last loss | drop |",
        "|---|---:|---:|---:|",
        "{loss_rows}",
        "",
        "Both runs start from the same parameters; the largest difference between their loss "
        "curves is {curve_diff:.1e} and between their trained "
        "parameters {diff:.1e} (float32). The trained cell as `GatedParams`: "
        "`w_x {wx_shape}`, `w_c {wc_shape}`, "
        "`w_z {wz_shape}`, gate bias mean {bias_mean:+.2f}.",
        "",
        "{fig}",
        "",
        "Where `GatedRNN` deliberately differs from `nn.RNN` (valid steps and carries are "
        "equal): with `seq_lengths`, outputs at padded steps hold the last valid state "
        "(`nn.RNN` keeps running the cell over the padding); a length-0 sequence returns its "
        "initial carry (`nn.RNN` returns the carry after the whole padded run); "
        "`seq_lengths` with `return_carry` works with several batch dims (`nn.RNN`'s carry "
        "selection assumes one). The verification table has the equality rows and the "
        "benchmark table the speed-up.",
    ]
)


def section(ctx) -> str:
    import jax

    from gated_jax import nn as gnn

    curves, trained, (B, T, steps) = _train(ctx)
    fast, slow = curves["GatedRNN"], curves["nn.RNN(GatedCell)"]
    gp = gnn.to_gated_params(trained["GatedRNN"]["rnn"])
    diff = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(
            jax.tree.leaves(trained["GatedRNN"]),
            jax.tree.leaves(trained["nn.RNN(GatedCell)"]),
            strict=True,
        )
    )
    loss_rows = [
        f"| `{name}` | {losses[0]:.4f} | {losses[-1]:.2e} | {losses[0] / losses[-1]:.0f}x |"
        for name, losses in curves.items()
    ]
    data = dict(steps=steps, B=B, T=T, diff=diff, param_map=_MAP, fig=_figure(ctx, curves))
    data |= {
        "loss_rows": "\n".join(loss_rows),
        "curve_diff": float(np.max(np.abs(fast - slow))),
        "wx_shape": tuple(gp.w_x.shape),
        "wc_shape": tuple(gp.w_c.shape),
        "wz_shape": tuple(gp.w_z.shape),
        "bias_mean": float(np.mean(gp.b_c)),
    }
    return render(SECTION, data)


# --- from bench/modules.py ----------------------------------------------------------------

BENCH_TITLE = "Flax modules: GatedRNN vs nn.RNN(GatedCell), forward + backward"

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


def bench(quick: bool = False) -> Table:
    """Time every variant at batch 32, T = 256, width 256 (``quick``: 8, 32, 32, fewer rows)."""
    B, T, W = (8, 32, 32) if quick else (32, 256, 256)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((B, T, W)), jnp.float32)
    variants = {
        BASELINE: _linen_grad(nn.RNN(gnn.GatedCell(W, use_bias=True)), x),
        "GatedRNN": _linen_grad(gnn.GatedRNN(W, use_bias=True), x),
        "nnx.RNN(GatedCell)": _nnx_grad(
            nnx.RNN(gnnx.GatedCell(W, W, use_bias=True, rngs=nnx.Rngs(0)), rngs=False), x
        ),
        "nnx GatedRNN": _nnx_grad(gnnx.GatedRNN(W, W, use_bias=True, rngs=nnx.Rngs(0)), x),
    }
    if not quick:
        # the core called directly on the same weights: what GatedRNN adds on top of it
        core_params = gnn.to_gated_params(variants["GatedRNN"][1])
        variants["gated_scan (core, no module)"] = (
            jax.grad(lambda p, x: jnp.mean(gated_scan(p, x) ** 2)),
            core_params,
        )
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
    times = time_interleaved(fns, rounds=100 if quick else 15, warmup=1 if quick else 2)
    speed = ratios(times, BASELINE)
    table = Table(
        title=f"{BENCH_TITLE} (B={B}, T={T}, n=m={W}, float32)",
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
    if quick:
        table.notes.append(
            "quick: the linen and NNX pairs only (`gated-jax bench --only modules` adds the "
            "core gated_scan on the same weights, remat, unroll=4, MGU and GRU)."
        )
    else:
        table.notes.append(
            "The gated_scan row differentiates the core on the same weights (GatedParams): "
            "GatedRNN's time minus its time is what the module adds."
        )
        table.notes.append(
            "MGU and GRU do more work per step than the gated cell; they are there for scale. "
            "The unroll=4 rows unroll both loops (lax.scan unroll); compare them with each other."
        )
    return table
