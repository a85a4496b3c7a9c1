"""The solver's DeerInfo from the Flax layers: sown by linen ``GatedRNN`` / ``ParallelRNN``
(``mutable="intermediates"``) and by NNX with ``sow_info=True`` (``nnx.capture``), float64.

With the info wanted, ``GatedRNN``'s parallel methods run on ``gated_deer``; its states,
final carry and gradients must still equal the sequential layer's (``seq_lengths`` and
``reverse`` included), and the reported iterations must be those ``gated_deer`` reports for
the same problem.
"""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from gated_jax import nn as gnn
from gated_jax import nnx as gnnx
from gated_jax.cell import DeerNotConverged, GatedParams, gated_deer

B, T, N, M = 3, 20, 3, 4
XS = jax.random.normal(jax.random.key(1), (B, T, N))
LENGTHS = jnp.array([T, 7, 0])
F64 = {"param_dtype": jnp.float64}


def _diff(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_linen_gated_rnn_sows_info_and_equals_the_sequential_layer():
    method = "deer"  # quasi_deer runs the same code with the other Jacobian option
    cell = gnn.GatedCell(M, use_bias=True, **F64)
    variables = gnn.GatedRNN(cell).init(jax.random.key(0), XS)
    assert "intermediates" not in variables  # init sows nothing
    variables = jax.tree.map(lambda a: 0.5 * a, variables)
    opts = {"return_carry": True, "reverse": True}
    layer, ref = gnn.GatedRNN(cell, method=method, **opts), gnn.GatedRNN(cell, **opts)

    def loss(layer, v):
        out, sown = layer.apply(v, XS, seq_lengths=LENGTHS, mutable="intermediates")
        carry, ys = out
        return jnp.sum(jnp.sin(ys)) + jnp.sum(carry**2), (out, sown)

    run = jax.jit(lambda v: jax.grad(lambda v: loss(layer, v), has_aux=True)(v))
    g, (out, sown) = run(variables)
    g_ref, (out_ref, _) = jax.jit(jax.grad(lambda v: loss(ref, v), has_aux=True))(variables)
    assert _diff(out, out_ref) < 1e-10 and _diff(g, g_ref) < 1e-10
    info = sown["intermediates"]["deer_info"][0]
    assert bool(info.converged) and not bool(info.sequential)
    # the iterations are gated_deer's on the same (masked, flipped) problem
    p = gnn.to_gated_params(variables)
    jac = "full"
    valid = (jnp.arange(T)[None] < LENGTHS[:, None])[..., None]
    flipped = jnp.where(valid, jnp.flip(XS, 1), 0)  # only the full-length row is read whole
    _, want = gated_deer(p, flipped[:1], jacobian=jac)
    assert 1 <= int(info.iterations) <= T and int(want.iterations) <= int(info.iterations)
    # without the collection: the same outputs, nothing sown
    plain = layer.apply(variables, XS, seq_lengths=LENGTHS)
    assert _diff(plain, out) < 1e-10


def test_linen_gated_rnn_unconverged_raises_eagerly_and_falls_back_under_jit():
    # the expanding counterexample (Lyapunov exponent log(2)/2 > 0): 100 updates fall short
    p = GatedParams(jnp.ones((1, 1)), jnp.full((1, 1), 0.5), jnp.full((1, 1), 1.5))
    variables = {"params": {"cell": gnn.from_gated_params(p)}}
    xs = jnp.tile(jnp.array([[3.0], [-3.0]]), (1, 200, 1))  # (1, 400, 1)
    cell = gnn.GatedCell(1, use_bias=False, **F64)
    z0 = -jnp.ones((1, 1))
    layer = gnn.GatedRNN(cell, method="quasi_deer")
    with pytest.raises(DeerNotConverged, match="GatedRNN"):
        layer.apply(variables, xs, initial_carry=z0, mutable="intermediates")
    run = jax.jit(lambda v: layer.apply(v, xs, initial_carry=z0, mutable="intermediates"))
    ys, sown = run(variables)
    assert bool(sown["intermediates"]["deer_info"][0].sequential)
    ref = gnn.GatedRNN(cell).apply(variables, xs, initial_carry=z0)
    assert _diff(ys, ref) <= 1e-12 * float(jnp.max(jnp.abs(ref)))


def test_nnx_layers_sow_info_under_capture_and_jit():
    gated = gnnx.GatedRNN(gnnx.GatedCell(N, M, rngs=nnx.Rngs(0), **F64), method="deer")
    gru = nnx.GRUCell(N, M, rngs=nnx.Rngs(0), **F64)
    for layer in (gated, gnnx.ParallelRNN(gru)):
        assert layer.sow_info is False

    @nnx.jit
    def run(layer):
        return nnx.capture(layer, nnx.Intermediate)(XS, seq_lengths=LENGTHS)

    for layer, shape in ((gated, ()), (gnnx.ParallelRNN(gru, sow_info=True), (B,))):
        if isinstance(layer, gnnx.GatedRNN):
            layer.sow_info = True
        ys, inter = run(layer)
        info = inter["deer_info"][0]
        assert info.iterations.shape == shape and bool(jnp.all(info.converged))
        assert bool(jnp.all(info.iterations >= 1))
    # a sequential call has no solver to report
    layer = gnnx.ParallelRNN(gru, method="sequential", sow_info=True)
    _, inter = nnx.capture(layer, nnx.Intermediate)(XS)
    assert "deer_info" not in inter


def test_sow_info_must_be_a_bool():
    gru = nnx.GRUCell(N, M, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="`sow_info`"):
        gnnx.ParallelRNN(gru, sow_info="yes")
    with pytest.raises(ValueError, match="`sow_info`"):
        gnnx.GatedRNN(gnnx.GatedCell(N, M, rngs=nnx.Rngs(0)), sow_info=1)


def test_parallel_rnn_window_keeps_updates_wide_near_a_neutral_exponent():
    """An LSTM with its recurrent kernels x2 (exponent ~ -0.26): the default adaptive window
    switches to 8-step updates after Newton's residual wanders; ``window=T`` keeps plain
    DEER's few wide updates. Both equal ``nn.RNN`` and say how many updates they took."""
    from flax import linen as nn

    from gated_jax.lab import parallel_rnn

    T_ = 256
    cell, v, xs = parallel_rnn.case("LSTMCell", B=2, T=T_, n=4, m=8, scale=1.0, dtype=jnp.float64)
    v = parallel_rnn.recurrent_scaled(v, 2.0)
    ref = nn.RNN(cell).apply(v, xs)
    its = {}
    for w in (None, T_):
        layer = gnn.ParallelRNN(cell, window=w, max_iters=T_)
        ys, state = layer.apply(v, xs, mutable="intermediates")
        info = state["intermediates"]["deer_info"][0]
        assert bool(info.converged.all()) and _diff(ys, ref) < 1e-10
        its[w] = int(info.iterations.max())
    assert its[T_] <= 10 < its[None]
    with pytest.raises(ValueError, match=r"`window` \(=0\)"):
        gnn.ParallelRNN(cell, window=0)
    with pytest.raises(ValueError, match=r"`window` \(=0\)"):
        gnnx.ParallelRNN(nnx.GRUCell(3, 4, rngs=nnx.Rngs(0)), window=0)
