"""Fuzz tests of the Flax modules (linen and NNX), by category of bad or edge-case input.

Each case either raises a ``ValueError`` / ``TypeError`` from gated_jax whose message names the
argument as the user wrote it and shows its value (`` `name` (=value) must be ... ``), or
returns a correct result checked against an independent computation. Cases are plain calls
on tiny shapes, so almost none compiles anything.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from gated_jax import nn as gnn
from gated_jax import nnx as gnnx
from gated_jax.cell import GatedParams, gated_scan

N, M = 3, 4
X = np.linspace(-1.0, 1.0, 2 * 5 * N).reshape(2, 5, N)  # (batch, time, n), float64


def _linen_vars():
    rng = np.random.default_rng(0)
    tree = {
        "ic": {"kernel": rng.normal(size=(N, M))},
        "hc": {"kernel": rng.normal(size=(M, M))},
        "ix": {"kernel": rng.normal(size=(N, M))},
    }
    return {"params": {"cell": tree}}


V = _linen_vars()
P = gnn.to_gated_params(V)


def _nnx_layer():
    layer = nnx.eval_shape(lambda: gnnx.GatedRNN(N, M, param_dtype=jnp.float64, rngs=nnx.Rngs(0)))
    return gnnx.load_gated_params(layer, P)


class Case(NamedTuple):
    category: str
    call: Callable[[], object]
    error: type[Exception]
    name: str  # the argument the message must name, as the user wrote it
    value: str  # a fragment of the value the message must show


def _linen_apply(**kw):
    return lambda: gnn.GatedRNN(M, param_dtype=jnp.float64).apply(V, X, **kw)


def _nnx_call(**kw):
    return lambda: _nnx_layer()(X, **kw)


def _rngs():
    return nnx.Rngs(0)


CASES = [
    # sizes: non-positive, non-integer, bool, string, None, traced/array where static needed
    Case("features zero", lambda: gnn.GatedCell(0), ValueError, "features", "0"),
    Case("features negative", lambda: gnn.GatedRNN(-3), ValueError, "features", "-3"),
    Case("features float", lambda: gnn.GatedRNN(2.5), ValueError, "features", "2.5"),
    Case(
        "cell features float",
        lambda: gnn.GatedRNN(gnn.GatedCell(1.5)),
        ValueError,
        "features",
        "1.5",
    ),
    Case("features bool", lambda: gnn.GatedCell(True), ValueError, "features", "True"),
    Case("features string", lambda: gnn.GatedCell("4"), ValueError, "features", "'4'"),
    Case("features None", lambda: gnn.GatedCell(None), ValueError, "features", "None"),
    Case(
        "features as an array",
        lambda: gnn.GatedCell(jnp.array(4)),
        ValueError,
        "features",
        "array of shape ()",
    ),
    Case(
        "nnx in_features zero",
        lambda: gnnx.GatedCell(0, M, rngs=_rngs()),
        ValueError,
        "in_features",
        "0",
    ),
    Case(
        "nnx hidden_features float",
        lambda: gnnx.GatedRNN(N, 1.5, rngs=_rngs()),
        ValueError,
        "hidden_features",
        "1.5",
    ),
    Case(
        "nnx hidden_features too large for memory",
        lambda: gnnx.GatedCell(10**6, 10**6, rngs=_rngs()),
        ValueError,
        "hidden_features",
        "1000000",
    ),
    Case(
        "linen features too large for memory",
        lambda: gnn.GatedRNN(10**7).init(jax.random.key(0), jnp.ones((1, 1, 10**5))),
        ValueError,
        "features",
        "10000000",
    ),
    # flags: truthy non-bools, as attributes and call arguments, linen and NNX
    Case(
        "reverse 'no' attribute",
        lambda: gnn.GatedRNN(M, reverse="no"),
        ValueError,
        "reverse",
        "'no'",
    ),
    Case("time_major 'no' call", _linen_apply(time_major="no"), ValueError, "time_major", "'no'"),
    Case("return_carry 1 call", _linen_apply(return_carry=1), ValueError, "return_carry", "1"),
    Case(
        "keep_order numpy int",
        lambda: gnn.GatedRNN(M, keep_order=np.int64(1)),
        ValueError,
        "keep_order",
        "1",
    ),
    Case("nnx reverse 'no' call", _nnx_call(reverse="no"), ValueError, "reverse", "'no'"),
    Case(
        "nnx time_major 'no' attribute",
        lambda: gnnx.GatedRNN(N, M, time_major="no", rngs=_rngs()),
        ValueError,
        "time_major",
        "'no'",
    ),
    Case(
        "use_bias string",
        lambda: gnn.GatedCell(M, use_bias="False"),
        ValueError,
        "use_bias",
        "'False'",
    ),
    Case(
        "reverse traced under jit",
        lambda: jax.jit(lambda r: gnn.GatedRNN(M, param_dtype=jnp.float64).apply(V, X, reverse=r))(
            True
        ),
        ValueError,
        "reverse",
        "array of shape (), dtype bool",
    ),
    # loop options
    Case(
        "unroll as an array",
        lambda: gnn.GatedRNN(M, unroll=jnp.array(2)),
        ValueError,
        "unroll",
        "()",
    ),
    Case("unroll zero", lambda: gnn.GatedRNN(M, unroll=0), ValueError, "unroll", "0"),
    Case("unroll bool", lambda: gnn.GatedRNN(M, unroll=True), ValueError, "unroll", "True"),
    Case("remat negative", lambda: gnn.GatedRNN(M, remat=-1), ValueError, "remat", "-1"),
    Case("remat string", lambda: gnn.GatedRNN(M, remat="yes"), ValueError, "remat", "'yes'"),
    Case(
        "backward unknown",
        lambda: gnn.GatedRNN(M, backward="fast"),
        ValueError,
        "backward",
        "'fast'",
    ),
    Case(
        "nnx backward None",
        lambda: gnnx.GatedRNN(N, M, backward=None, rngs=_rngs()),
        ValueError,
        "backward",
        "None",
    ),
    # dtypes
    Case(
        "param_dtype int",
        lambda: gnn.GatedCell(M, param_dtype=jnp.int32),
        ValueError,
        "param_dtype",
        "int32",
    ),
    Case(
        "dtype string",
        lambda: gnn.GatedCell(M, dtype="half-ish"),
        ValueError,
        "dtype",
        "'half-ish'",
    ),
    Case(
        "nnx param_dtype None",
        lambda: gnnx.GatedCell(N, M, param_dtype=None, rngs=_rngs()),
        ValueError,
        "param_dtype",
        "None",
    ),
    # initialisers
    Case(
        "kernel_init a number",
        lambda: gnn.GatedCell(M, kernel_init=0.5),
        TypeError,
        "kernel_init",
        "0.5",
    ),
    Case(
        "recurrent_kernel_init a string",
        lambda: gnnx.GatedCell(N, M, recurrent_kernel_init="orthogonal", rngs=_rngs()),
        TypeError,
        "recurrent_kernel_init",
        "'orthogonal'",
    ),
    Case(
        "nnx carry_init on the module",
        lambda: gnnx.GatedCell(N, M, carry_init=nnx.initializers.zeros_init(), rngs=_rngs()),
        TypeError,
        "carry_init",
        "zeros",
    ),
    Case(
        "nnx rngs not Rngs",
        lambda: gnnx.GatedCell(N, M, rngs=0),
        TypeError,
        "rngs",
        "0",
    ),
    # the cell a layer takes
    Case("cell of another kind", lambda: gnn.GatedRNN(nn.GRUCell(4)), TypeError, "cell", "GRUCell"),
    # input ranks, widths and contents
    Case(
        "inputs rank 1",
        lambda: gnn.GatedRNN(M).apply(V, jnp.ones((N,))),
        ValueError,
        "inputs",
        "(3,)",
    ),
    Case("inputs scalar", lambda: _nnx_layer()(1.0), ValueError, "inputs", "()"),
    Case(
        "inputs of the wrong width (linen)",
        lambda: gnn.GatedRNN(M).apply(V, jnp.ones((2, 5, N + 2))),
        ValueError,
        "inputs",
        "5",
    ),
    Case(
        "inputs of the wrong width (nnx)",
        lambda: _nnx_layer()(jnp.ones((2, 5, N + 1))),
        ValueError,
        "inputs",
        "(2, 5, 4)",
    ),
    Case(
        "features not matching given variables",
        lambda: gnn.GatedRNN(M + 1).apply(V, X),
        ValueError,
        "features",
        "5",
    ),
    Case(
        "inputs of strings",
        lambda: gnn.GatedRNN(M).apply(V, [["a", "b", "c"]]),
        TypeError,
        "inputs",
        "'a'",
    ),
    Case(
        "inputs a ragged list",
        lambda: _nnx_layer()([[1.0, 2.0], [3.0]]),
        ValueError,
        "inputs",
        "[[1.0, 2.0], [3.0]]",
    ),
    Case("inputs None", lambda: gnn.GatedRNN(M).apply(V, None), TypeError, "inputs", "None"),
    Case(
        "inputs of width zero",
        lambda: gnn.GatedRNN(M).init(jax.random.key(0), jnp.ones((2, 5, 0))),
        ValueError,
        "inputs",
        "(2, 5, 0)",
    ),
    # carries
    Case(
        "initial_carry wrong width",
        _linen_apply(initial_carry=jnp.ones((2, M + 1))),
        ValueError,
        "initial_carry",
        "(2, 5)",
    ),
    Case(
        "initial_carry wrong batch",
        _nnx_call(initial_carry=jnp.ones((3, M))),
        ValueError,
        "initial_carry",
        "(3, 4)",
    ),
    Case(
        "initial_carry a string",
        _linen_apply(initial_carry="zeros"),
        TypeError,
        "initial_carry",
        "'zeros'",
    ),
    Case(
        "cell step: carry batch differs from inputs",
        lambda: gnn.GatedCell(M).apply(
            {"params": V["params"]["cell"]}, jnp.ones((3, M)), jnp.ones((2, N))
        ),
        ValueError,
        "carry",
        "(3, 4)",
    ),
    Case(
        "initialize_carry input_shape scalar",
        lambda: gnn.GatedCell(M).initialize_carry(jax.random.key(0), ()),
        ValueError,
        "input_shape",
        "()",
    ),
    Case(
        "nnx initialize_carry bad rngs",
        lambda: _nnx_layer().cell.initialize_carry((2, N), rngs="key"),
        TypeError,
        "rngs",
        "'key'",
    ),
    # seq_lengths
    Case(
        "seq_lengths wrong shape",
        _linen_apply(seq_lengths=jnp.array([1, 2, 3])),
        ValueError,
        "seq_lengths",
        "(3,)",
    ),
    Case(
        "seq_lengths floats",
        _nnx_call(seq_lengths=jnp.array([1.0, 2.0])),
        ValueError,
        "seq_lengths",
        "float",
    ),
    Case(
        "seq_lengths past T",
        _linen_apply(seq_lengths=np.array([1, 9])),
        ValueError,
        "seq_lengths",
        "[1, 9]",
    ),
    Case(
        "seq_lengths negative",
        _nnx_call(seq_lengths=[2, -1]),
        ValueError,
        "seq_lengths",
        "-1",
    ),
    Case(
        "seq_lengths a string",
        _linen_apply(seq_lengths="all"),
        ValueError,
        "seq_lengths",
        "'all'",
    ),
    # GatedParams <-> trees
    Case(
        "from_gated_params of a dict",
        lambda: gnn.from_gated_params({"w_x": 1}),
        TypeError,
        "params",
        "dict with keys ['w_x']",
    ),
    Case(
        "nnx from_gated_params of None",
        lambda: gnnx.from_gated_params(None),
        TypeError,
        "params",
        "None",
    ),
    Case(
        "from_gated_params inconsistent shapes",
        lambda: gnn.from_gated_params(GatedParams(P.w_x, P.w_c[:2], P.w_z)),
        ValueError,
        "params",
        "w_c (2, 3)",
    ),
    Case(
        "to_gated_params of a wrong tree",
        lambda: gnn.to_gated_params({"params": {"Dense_0": {}}}),
        ValueError,
        "tree",
        "['Dense_0']",
    ),
    Case(
        "to_gated_params kernel of wrong rank",
        lambda: gnn.to_gated_params(
            {"ic": {"kernel": np.ones(3)}, "hc": {"kernel": np.ones((4, 4))}, "ix": {"kernel": 1}}
        ),
        ValueError,
        "tree['ic']['kernel']",
        "(3,)",
    ),
    Case(
        "nnx to_gated_params of another module",
        lambda: gnnx.to_gated_params(nnx.Linear(2, 2, rngs=_rngs())),
        TypeError,
        "source",
        "Linear",
    ),
    Case(
        "nnx load_gated_params of the wrong size",
        lambda: gnnx.load_gated_params(
            _nnx_layer(), GatedParams(P.w_x[:2], P.w_c[:2], P.w_z[:2, :2])
        ),
        ValueError,
        "params.w_c",
        "(2, 3)",
    ),
]

V_MIN = {"params": {"cell": {k: v for k, v in V["params"]["cell"].items() if k != "hc"}}}
P_MIN = P._replace(w_z=None)

CASES += [
    # recurrent_gate: a strict bool, and parameters that match it (an 'hc' kernel iff True)
    Case(
        "recurrent_gate 'no'",
        lambda: gnn.GatedCell(M, recurrent_gate="no"),
        ValueError,
        "recurrent_gate",
        "'no'",
    ),
    Case(
        "recurrent_gate numpy int",
        lambda: gnn.GatedRNN(M, recurrent_gate=np.int64(0)),
        ValueError,
        "recurrent_gate",
        "0",
    ),
    Case(
        "nnx recurrent_gate None",
        lambda: gnnx.GatedCell(N, M, recurrent_gate=None, rngs=_rngs()),
        ValueError,
        "recurrent_gate",
        "None",
    ),
    Case(
        "tree with 'hc' into a recurrent_gate=False layer",
        lambda: gnn.GatedRNN(M, recurrent_gate=False, param_dtype=jnp.float64).apply(V, X),
        ValueError,
        "recurrent_gate",
        "False",
    ),
    Case(
        "tree without 'hc' into a recurrent layer",
        lambda: gnn.GatedRNN(M, param_dtype=jnp.float64).apply(V_MIN, X),
        ValueError,
        "recurrent_gate",
        "True",
    ),
    Case(
        "tree without 'hc' into nn.RNN of a recurrent cell",
        lambda: nn.RNN(gnn.GatedCell(M, param_dtype=jnp.float64)).apply(V_MIN, X),
        ValueError,
        "recurrent_gate",
        "True",
    ),
    Case(
        "nnx load w_z into a recurrent_gate=False cell",
        lambda: gnnx.load_gated_params(gnnx.GatedCell(N, M, recurrent_gate=False, rngs=_rngs()), P),
        ValueError,
        "params.w_z",
        "(4, 4)",
    ),
    Case(
        "nnx load w_z=None into a recurrent cell",
        lambda: gnnx.load_gated_params(_nnx_layer(), P_MIN),
        ValueError,
        "params.w_z",
        "None",
    ),
    Case(
        "from_gated_params w_z of the wrong shape",
        lambda: gnn.from_gated_params(P._replace(w_z=P.w_z[:3, :3])),
        ValueError,
        "params",
        "w_z (3, 3)",
    ),
    Case(
        "to_gated_params of a tree without 'ix'",
        lambda: gnn.to_gated_params({"ic": V["params"]["cell"]["ic"]}),
        ValueError,
        "tree",
        "['ic']",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.category for c in CASES])
def test_bad_input_is_named(case: Case):
    with pytest.raises(case.error) as info:
        case.call()
    message = str(info.value).split("\n")[0]
    assert message.startswith(f"`{case.name}` (="), message
    shown = message[len(case.name) + 4 :]
    assert case.value in shown.split(") must be")[0] + ")", message
    assert re.search(r"\) must be ", message), message


def test_categories_are_many_and_distinct():
    assert len({c.category for c in CASES}) == len(CASES) >= 20


# ---------------------------------------------------------------------------------------------
# edge cases with a correct result


def _reference(xs, z0=None):
    return np.asarray(gated_scan(P, jnp.asarray(xs, jnp.float64), z0))


def test_lists_numpy_and_integers_give_the_array_result():
    ref = _reference(X)
    layer = gnn.GatedRNN(M, param_dtype=jnp.float64)
    for given in (X, X.tolist(), jnp.asarray(X)):
        np.testing.assert_allclose(layer.apply(V, given), ref, rtol=1e-13)
        np.testing.assert_allclose(_nnx_layer()(given), ref, rtol=1e-13)
    ints = np.arange(2 * 5 * N).reshape(2, 5, N) % 3 - 1
    np.testing.assert_allclose(layer.apply(V, ints), _reference(ints.astype(float)), rtol=1e-13)
    # the documented contract: initial_carry converts as inputs does
    z0 = np.linspace(-0.5, 0.5, 2 * M).reshape(2, M)
    ref0 = _reference(X, jnp.asarray(z0))
    for given in (z0, z0.tolist()):
        np.testing.assert_allclose(layer.apply(V, X, initial_carry=given), ref0, rtol=1e-13)
        np.testing.assert_allclose(_nnx_layer()(X, initial_carry=given), ref0, rtol=1e-13)


def test_mixed_float_dtypes_promote():
    """float16 inputs with float64 parameters compute in float64, as ``nn.Dense`` promotes."""
    x16 = X.astype(np.float16)
    y = gnn.GatedRNN(M, param_dtype=jnp.float64).apply(V, x16)
    assert y.dtype == jnp.float64
    np.testing.assert_allclose(y, _reference(x16.astype(np.float64)), rtol=1e-13)


def test_zero_size_sequences():
    """T = 0: empty outputs and the initial carry; batch 0: empty outputs."""
    layer = gnn.GatedRNN(M, param_dtype=jnp.float64, return_carry=True)
    z0 = np.linspace(0.0, 1.0, 2 * M).reshape(2, M)
    carry, ys = layer.apply(V, X[:, :0], initial_carry=jnp.asarray(z0))
    assert ys.shape == (2, 0, M)
    np.testing.assert_array_equal(carry, z0)
    carry, ys = layer.apply(V, X[:0])
    assert ys.shape == (0, 5, M) and carry.shape == (0, M)
    carry, ys = _nnx_layer()(X, seq_lengths=jnp.array([0, 5]), return_carry=True)
    np.testing.assert_array_equal(carry[0], 0.0)  # a length-0 sequence keeps its carry
    np.testing.assert_allclose(ys[1], _reference(X[1:])[0], rtol=1e-13)


def test_traced_seq_lengths_and_inputs_under_jit():
    """Traced lengths skip only the range check; the result equals the eager one."""
    layer = gnn.GatedRNN(M, param_dtype=jnp.float64, return_carry=True)
    lengths = jnp.array([3, 5])
    eager = layer.apply(V, X, seq_lengths=lengths)
    traced = jax.jit(lambda x, s: layer.apply(V, x, seq_lengths=s))(X, lengths)
    for a, b in zip(eager, traced, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14)
    np.testing.assert_allclose(eager[0][0], _reference(X[:1, :3])[0, -1], rtol=1e-13)


def test_float64_inputs_with_float32_parameters_keep_the_carry_dtype():
    """x64 on, float64 inputs, default float32 parameters: nn.RNN's scan carry stays float32."""
    x = jnp.asarray(X)  # float64
    cell = gnn.GatedCell(M)
    v = nn.RNN(cell).init(jax.random.key(0), x)
    slow, fast = nn.RNN(cell).apply(v, x), gnn.GatedRNN(cell).apply(v, x)
    assert slow.dtype == fast.dtype == jnp.float32
    ref = gated_scan(jax.tree.map(lambda a: a.astype(jnp.float64), gnn.to_gated_params(v)), x)
    np.testing.assert_allclose(slow, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-6)
    layer = gnnx.GatedRNN(gnnx.GatedCell(N, M, rngs=nnx.Rngs(0)))
    assert nnx.RNN(layer.cell)(x).dtype == layer(x).dtype == jnp.float32


def test_integer_carry_is_promoted_not_truncated():
    z0 = np.ones((2, M), np.int32)
    y = gnn.GatedRNN(M, param_dtype=jnp.float64).apply(V, X, initial_carry=z0)
    assert y.dtype == jnp.float64
    np.testing.assert_allclose(y, _reference(X, jnp.asarray(z0, jnp.float64)), rtol=1e-13)


def test_min_gru_tree_without_hc_gives_the_w_z_none_result():
    """A tree without 'hc' is the minGRU cell: linen, NNX and gated_scan(w_z=None) agree."""
    ref = np.asarray(gated_scan(P_MIN, jnp.asarray(X)))
    layer = gnn.GatedRNN(M, recurrent_gate=False, param_dtype=jnp.float64)
    np.testing.assert_allclose(layer.apply(V_MIN, X), ref, rtol=1e-13)
    nnx_layer = nnx.eval_shape(
        lambda: gnnx.GatedRNN(N, M, recurrent_gate=False, param_dtype=jnp.float64, rngs=_rngs())
    )
    np.testing.assert_allclose(gnnx.load_gated_params(nnx_layer, P_MIN)(X), ref, rtol=1e-13)
    assert gnn.to_gated_params(V_MIN).w_z is None


def test_parameter_trees_and_params_of_strings_or_complex_numbers_are_refused_by_name():
    tree = gnn.from_gated_params(P)
    tree["ic"]["kernel"] = "abc"
    with pytest.raises(ValueError, match=r"`tree\['ic'\]\['kernel'\]` \(='abc'\) must be a JAX"):
        gnn.to_gated_params(tree)
    layer = _nnx_layer()
    complex_p = P._replace(w_x=P.w_x.astype(jnp.complex128) + 1j)
    with pytest.raises(ValueError, match=r"`params.w_x` \(=.*complex128\) must be a real array"):
        gnnx.load_gated_params(layer, complex_p)
