"""Report section: the gated cell as Flax modules, the parameter map, and a tiny trained model.

A causal ``Conv`` front-end feeds :class:`gated_jax.nn.GatedRNN` and a ``Dense`` head; the model
is trained with optax on a task that needs both (an exponential moving average of the input's
first difference). The same model with ``nn.RNN(GatedCell)`` in place of ``GatedRNN``, started
from the same parameters, follows the same loss curve: the two layers share their parameter
tree and compute the same function, one of them faster.
"""

from __future__ import annotations

import numpy as np

ORDER = 40
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
    lines = [
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
        _MAP,
        "",
        "Default initialisers: input kernels LeCun normal (variance `1/n`), recurrent kernel "
        "orthogonal (`||W_z||_2 = 1`), biases and carry zeros.",
        "",
        f"**A tiny trained model.** Causal `Conv(4, kernel 3)` -> gated recurrence (8 units, "
        f"biases) -> `Dense(1)`, trained with Adam (3e-2) for {steps} full-batch steps on "
        f"{B} sequences of length {T}; target `y[t] = 0.6 y[t-1] + 0.4 (x[t] - x[t-1])`.",
        "",
        "| recurrent layer | first loss | last loss | drop |",
        "|---|---:|---:|---:|",
    ]
    for name, losses in curves.items():
        lines.append(
            f"| `{name}` | {losses[0]:.4f} | {losses[-1]:.2e} | {losses[0] / losses[-1]:.0f}x |"
        )
    lines += [
        "",
        f"Both runs start from the same parameters; the largest difference between their loss "
        f"curves is {float(np.max(np.abs(fast - slow))):.1e} and between their trained "
        f"parameters {diff:.1e} (float32). The trained cell as `GatedParams`: "
        f"`w_x {tuple(gp.w_x.shape)}`, `w_c {tuple(gp.w_c.shape)}`, "
        f"`w_z {tuple(gp.w_z.shape)}`, gate bias mean {float(np.mean(gp.b_c)):+.2f}.",
        "",
        _figure(ctx, curves),
        "",
        "Where `GatedRNN` deliberately differs from `nn.RNN` (valid steps and carries are "
        "equal): with `seq_lengths`, outputs at padded steps hold the last valid state "
        "(`nn.RNN` keeps running the cell over the padding); a length-0 sequence returns its "
        "initial carry (`nn.RNN` returns the carry after the whole padded run); "
        "`seq_lengths` with `return_carry` works with several batch dims (`nn.RNN`'s carry "
        "selection assumes one). The verification table has the equality rows and the "
        "benchmark table the speed-up.",
    ]
    return "\n".join(lines)
