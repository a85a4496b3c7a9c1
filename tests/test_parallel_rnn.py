"""ParallelRNN (linen and NNX): any Flax cell in parallel over time equals nn.RNN(cell) (float64).

Each Flax cell gets ``nn.RNN(cell)``'s variables with its kernels scaled down (a contractive
cell, so Newton converges in few updates); the layer's outputs, final carry and parameter
gradients are compared with ``nn.RNN``'s under one ``jit`` per case.
"""

import jax
import jax.numpy as jnp
import pytest
from flax import linen as nn
from flax import nnx

from gated_jax import nn as gnn
from gated_jax import nnx as gnnx
from gated_jax.cell import DeerNotConverged

B, T, N, M = 2, 16, 3, 4
F64 = {"param_dtype": jnp.float64}
XS = jax.random.normal(jax.random.key(1), (B, T, N))
LENGTHS = jnp.array([T, 9])

LINEN_CELLS = {
    "gru": lambda: nn.GRUCell(M, **F64),
    "lstm": lambda: nn.LSTMCell(M, **F64),
    "optimized_lstm": lambda: nn.OptimizedLSTMCell(M, **F64),
    "mgu": lambda: nn.MGUCell(M, **F64),
    "simple": lambda: nn.SimpleCell(M, **F64),
    "gated": lambda: gnn.GatedCell(M, use_bias=True, **F64),
    "mingru": lambda: gnn.GatedCell(M, recurrent_gate=False, **F64),
    "gated_diagonal": lambda: gnn.GatedCell(M, recurrent_gate="diagonal", **F64),
    "gated_heads": lambda: gnn.GatedCell(M, recurrent_gate="heads", heads=2, **F64),
}

# each sequence option is exercised by some cell; gradients where the carry differs in kind
# (a vector, a tuple, the gated cell): every case compiles the solver, so the sweep is kept small
CASES = [
    ("gru", "deer", {}, False),  # its gradients: the NNX test
    ("lstm", "deer", {"reverse": True, "keep_order": True}, True),
    ("optimized_lstm", "quasi_deer", {"reverse": True}, False),
    ("mgu", "deer", {"time_major": True}, False),
    ("simple", "quasi_deer", {}, False),
    ("gated", "deer", {"reverse": True, "keep_order": True}, True),
    ("mingru", "quasi_deer", {}, False),
    ("gated_diagonal", "deer", {}, False),
    ("gated_heads", "quasi_deer", {"reverse": True}, False),
]


def _contractive(variables, scale=0.5):
    return jax.tree.map(lambda a: scale * a, variables)


def _max_diff(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _loss(layer, v, xs):
    (carry, ys), sown = layer.apply(v, xs, seq_lengths=LENGTHS, mutable="intermediates")
    value = jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c**2) for c in jax.tree.leaves(carry))
    return value, ((carry, ys), sown)


@pytest.mark.parametrize(("name", "method", "options", "grads"), CASES)
def test_linen_equals_nn_rnn_outputs_carry_and_gradients(name, method, options, grads):
    cell = LINEN_CELLS[name]()
    time_major = options.get("time_major", False)
    xs = jnp.swapaxes(XS, 0, 1) if time_major else XS
    ref_layer = nn.RNN(cell, return_carry=True, **options)
    variables = _contractive(jax.jit(ref_layer.init)(jax.random.key(0), xs))
    layer = gnn.ParallelRNN(cell, method=method, return_carry=True, **options)
    # the same variables: ParallelRNN's own init has nn.RNN's tree
    mine = jax.eval_shape(layer.init, jax.random.key(0), xs)
    assert jax.tree.map(jnp.shape, mine["params"]) == jax.tree.map(jnp.shape, variables["params"])

    @jax.jit
    def run(v):
        if not grads:
            return _loss(layer, v, xs)[1], _loss(ref_layer, v, xs)[1][0], None
        g, (out, sown) = jax.grad(lambda v: _loss(layer, v, xs), has_aux=True)(v)
        g_ref, (ref_out, _) = jax.grad(lambda v: _loss(ref_layer, v, xs), has_aux=True)(v)
        return (out, sown), ref_out, (g, g_ref)

    ((carry, ys), sown), (ref_carry, ref_ys), g = run(variables)
    info = sown["intermediates"]["deer_info"][0]
    assert bool(jnp.all(info.converged)) and not bool(jnp.any(info.sequential))
    assert info.converged.shape == (B,)
    assert ys.shape == ref_ys.shape
    assert _max_diff(ys, ref_ys) < 1e-10
    assert _max_diff(carry, ref_carry) < 1e-10
    if grads:
        assert _max_diff(*g) < 1e-10


def test_linen_vmap_initial_carry_and_sequential_methods():
    cell = LINEN_CELLS["gru"]()
    variables = _contractive(jax.jit(nn.RNN(cell).init)(jax.random.key(0), XS))
    carry0 = 0.1 * jnp.ones((B, M))
    ref = nn.RNN(cell).apply(variables, XS, initial_carry=carry0)
    for method in ("sequential", "auto"):
        ys = gnn.ParallelRNN(cell, method=method).apply(variables, XS, initial_carry=carry0)
        assert _max_diff(ys, ref) == 0.0
    # an extra batch axis under vmap (the solver vmaps over the batch inside)
    stacked = jnp.stack([XS, 2 * XS])
    batched = jax.vmap(lambda x: gnn.ParallelRNN(cell).apply(variables, x))
    ys = jax.jit(batched)(stacked)
    assert _max_diff(ys[1], nn.RNN(cell).apply(variables, 2 * XS)) < 1e-10


def test_linen_unconverged_raises_eagerly_and_falls_back_under_jit():
    cell = LINEN_CELLS["simple"]()
    variables = jax.jit(nn.RNN(cell).init)(jax.random.key(0), XS)
    variables = jax.tree.map(lambda a: 3.0 * a, variables)  # expanding
    layer = gnn.ParallelRNN(cell, max_iters=1)
    with pytest.raises(DeerNotConverged, match="max_iters"):
        layer.apply(variables, XS)
    ys, sown = jax.jit(lambda v: layer.apply(v, XS, mutable="intermediates"))(variables)
    info = sown["intermediates"]["deer_info"][0]
    assert bool(jnp.all(info.sequential))
    assert _max_diff(ys, nn.RNN(cell).apply(variables, XS)) < 1e-12


NNX_CELLS = {
    "gru": lambda: nnx.GRUCell(N, M, rngs=nnx.Rngs(0), **F64),
    "lstm": lambda: nnx.LSTMCell(N, M, rngs=nnx.Rngs(0), **F64),
    "gated": lambda: gnnx.GatedCell(N, M, rngs=nnx.Rngs(0), **F64),
}


@pytest.mark.parametrize(
    ("name", "method", "grads"),
    [("gru", "deer", True), ("lstm", "quasi_deer", False), ("gated", "deer", False)],
)
def test_nnx_equals_nnx_rnn_outputs_carry_and_gradients(name, method, grads):
    graphdef, state = nnx.split(NNX_CELLS[name]())
    cell = nnx.merge(graphdef, jax.tree.map(lambda a: 0.5 * a, state))
    layer = gnnx.ParallelRNN(cell, method=method, return_carry=True, reverse=True)
    ref = nnx.RNN(cell, return_carry=True, reverse=True)
    assert jax.tree.structure(nnx.state(layer, nnx.Param)) == jax.tree.structure(
        nnx.state(ref, nnx.Param)
    )

    def loss(m):
        carry, ys = m(XS, seq_lengths=LENGTHS)
        value = jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c**2) for c in jax.tree.leaves(carry))
        return value, (carry, ys)

    if grads:
        step = nnx.grad(loss, has_aux=True)
    else:
        step = lambda m: (None, loss(m)[1])  # noqa: E731
    g, out = nnx.jit(step)(layer)
    g_ref, ref_out = nnx.jit(step)(ref)
    assert _max_diff(out, ref_out) < 1e-10
    if grads:
        assert _max_diff(nnx.state(g, nnx.Param), nnx.state(g_ref, nnx.Param)) < 1e-10


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"method": "newton"}, "method"),
        ({"tol": 0.0}, "tol"),
        ({"max_iters": -2}, "max_iters"),
        ({"reverse": "yes"}, "reverse"),
        ({"time_major": 1}, "time_major"),
    ],
)
def test_bad_options_are_named(options, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        gnn.ParallelRNN(nn.GRUCell(M), **options)
    with pytest.raises(ValueError, match=f"`{name}`"):
        gnnx.ParallelRNN(nnx.GRUCell(N, M, rngs=nnx.Rngs(0)), **options)


def test_bad_cell_and_call_arguments_are_named():
    with pytest.raises(ValueError, match="`cell`"):
        gnn.ParallelRNN(nn.Dense(M))
    with pytest.raises(ValueError, match="`cell`"):
        gnnx.ParallelRNN(nnx.Linear(N, M, rngs=nnx.Rngs(0)))
    layer = gnn.ParallelRNN(nn.GRUCell(M, **F64))
    variables = layer.init(jax.random.key(0), XS)
    with pytest.raises(ValueError, match="`seq_lengths`"):
        layer.apply(variables, XS, seq_lengths=jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match="`inputs`"):
        layer.apply(variables, jnp.zeros((3,)))
