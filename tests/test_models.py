"""Composed models: causal ``Conv`` front-end -> ``GatedRNN`` -> ``Dense`` head, trained with optax.

The task needs both parts: the target is an exponential moving average of the input's first
difference, ``y[t] = 0.6 y[t-1] + 0.4 (x[t] - x[t-1])``: the convolution can form the difference,
the gated recurrence the average (a constant gate ``c = 0.6``). Linen and NNX train the same model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax import nnx

from gated_jax import nn as gnn
from gated_jax import nnx as gnnx

B, T, C, H = 16, 16, 4, 8
STEPS = 60


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, T, 1)).astype(np.float32)
    d = np.diff(x[..., 0], axis=1, prepend=0.0)
    y = np.zeros((B, T), np.float32)
    acc = np.zeros(B, np.float32)
    for t in range(T):
        acc = 0.6 * acc + 0.4 * d[:, t]
        y[:, t] = acc
    return jnp.asarray(x), jnp.asarray(y[..., None])


class LinenModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Conv(C, kernel_size=(3,), padding="CAUSAL")(x)
        # the cell built with parent=None belongs to the layer: parameters under GatedRNN_0/cell
        h = gnn.GatedRNN(gnn.GatedCell(H, use_bias=True, parent=None))(h)
        return nn.Dense(1)(h)


class NNXModel(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, C, kernel_size=(3,), padding="CAUSAL", rngs=rngs)
        self.rnn = gnnx.GatedRNN(gnnx.GatedCell(C, H, use_bias=True, rngs=rngs))
        self.head = nnx.Linear(H, 1, rngs=rngs)

    def __call__(self, x):
        return self.head(self.rnn(self.conv(x)))


def test_linen_conv_gated_rnn_dense_trains():
    x, y = _data()
    model = LinenModel()
    params = jax.jit(model.init)(jax.random.key(0), x)["params"]
    assert set(params) == {"Conv_0", "GatedRNN_0", "Dense_0"}
    assert set(params["GatedRNN_0"]["cell"]) == {"ic", "hc", "ix"}
    tx = optax.adam(3e-2)

    @jax.jit
    def train(params):
        def step(carry, _):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(
                lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2)
            )(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), length=STEPS)
        return params, losses

    trained, losses = train(params)
    losses = np.asarray(losses)
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.02 * losses[0], (losses[0], losses[-1])
    # the trained recurrent weights run unchanged in nn.RNN(GatedCell): same predictions
    h = jax.random.normal(jax.random.key(1), (B, T, C), jnp.float32)
    fast, slow = jax.jit(
        lambda rnn_params, h: (
            gnn.GatedRNN(H, use_bias=True).apply(rnn_params, h),
            nn.RNN(gnn.GatedCell(H, use_bias=True)).apply(rnn_params, h),
        )
    )({"params": trained["GatedRNN_0"]}, h)
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-5)


def test_nnx_conv_gated_rnn_dense_trains_with_optimizer():
    x, y = _data()
    model = NNXModel(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = np.array([float(train_step(model, optimizer, x, y)) for _ in range(STEPS)])
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.02 * losses[0], (losses[0], losses[-1])
    assert int(optimizer.step[...]) == STEPS
    # jax.jit of a split/merge function sees the trained weights and agrees with nnx.jit
    graphdef, state = nnx.split(model)

    @jax.jit
    def predict(state, x):
        return nnx.merge(graphdef, state)(x)

    np.testing.assert_allclose(
        predict(state, x), nnx.jit(lambda m, x: m(x))(model, x), rtol=1e-5, atol=1e-6
    )
    final = float(jnp.mean((predict(state, x) - y) ** 2))
    assert final < 0.02 * losses[0]
