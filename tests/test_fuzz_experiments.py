"""Bad and edge-case input to the experiments, the shared numerics and the diagrams, by category.

Every bad call must raise a ``ValueError`` or ``TypeError`` from gated_jax whose message names
the argument as the user wrote it and shows its value, before anything is drawn, compiled or
allocated; every edge case with a meaning must give the right result.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fuzz import Bad, assert_names_the_argument, assert_refused

from gated_jax import experiments as ex
from gated_jax import linalg
from gated_jax.cell import gradient_flow
from gated_jax.diagrams import cell_graph, draw_unrolled_cell, evaluate_cell_graph
from gated_jax.experiments.runner import FlowConfig, run_flow

MATS = np.random.default_rng(0).normal(size=(3, 4, 4))
P, XS, Z0 = ex.counterexample(8)


def _sweep(**kw):
    base = dict(wz_norms=(1.0,), gate_biases=(0.0,), input_scales=(1.0,), lengths=(4,))
    base |= dict(seeds=(0,), n=2, m=3, progress=False)
    return lambda: ex.flow_sweep("gated", **(base | kw))


BAD = [
    # ---- spectral norms (gated_jax.linalg, re-exported by experiments)
    Bad("tol NaN", lambda: ex.spectral_norms(MATS, norm="power", tol=float("nan")), "tol", "nan"),
    Bad(
        "tol infinite",
        lambda: ex.spectral_norms(MATS, norm="power", tol=float("inf")),
        "tol",
        "inf",
    ),
    Bad("tol zero", lambda: ex.spectral_norms(MATS, norm="power", tol=0.0), "tol", "0.0"),
    Bad("tol a string", lambda: ex.spectral_norms(MATS, norm="power", tol="1e-6"), "tol", "'1e-6'"),
    Bad(
        "max_squarings -1",
        lambda: ex.spectral_norms(MATS, norm="power", max_squarings=-1),
        "max_squarings",
        "-1",
    ),
    Bad(
        "max_squarings float",
        lambda: ex.spectral_norms(MATS, max_squarings=2.5),
        "max_squarings",
        "2.5",
    ),
    Bad(
        "max_squarings bool",
        lambda: ex.spectral_norms(MATS, max_squarings=True),
        "max_squarings",
        "True",
    ),
    Bad("norm unknown", lambda: ex.spectral_norms(MATS, norm="fro"), "norm", "'fro'"),
    Bad("resolve_norm None", lambda: ex.resolve_norm(None), "norm", "None"),
    Bad("mats rank 1", lambda: ex.spectral_norms(np.ones(3)), "mats", "shape (3,)"),
    Bad("mats a list", lambda: ex.spectral_norms([[1.0, 0.0], [0.0, 1.0]]), "mats", "[[1.0, 0.0]"),
    Bad("mats complex", lambda: ex.spectral_norms(MATS.astype(np.complex64)), "mats", "complex64"),
    Bad(
        "traced tol",
        lambda: jax.jit(lambda t: ex.spectral_norms(MATS, norm="power", tol=t))(1e-6),
        "tol",
        "shape ()",
    ),
    Bad(
        "products not square",
        lambda: linalg.reverse_products(np.ones((3, 2, 4))),
        "jacs",
        "shape (3, 2, 4)",
    ),
    # ---- the counterexample and the bounds
    Bad(
        "counterexample int dtype", lambda: ex.counterexample(8, dtype=jnp.int32), "dtype", "int32"
    ),
    Bad(
        "counterexample dtype string",
        lambda: ex.counterexample(8, dtype="half-ish"),
        "dtype",
        "'half-ish'",
    ),
    Bad("counterexample length 0", lambda: ex.counterexample(0), "length", "0"),
    Bad("counterexample length string", lambda: ex.counterexample("8"), "length", "'8'"),
    Bad("counterexample_check bool", lambda: ex.counterexample_check(True), "length", "True"),
    Bad("check_bounds zero configs", lambda: ex.check_bounds(0), "num_configs", "0"),
    Bad(
        "check_bounds too large",
        lambda: ex.check_bounds(10**9, length=1000),
        "num_configs",
        "1000000000",
    ),
    Bad("check_bounds negative seed", lambda: ex.check_bounds(4, seed=-1), "seed", "-1"),
    Bad("state_box xs rank 1", lambda: ex.state_box(P, np.ones(8), Z0), "xs", "shape (8,)"),
    Bad("state_box z0 width", lambda: ex.state_box(P, XS, np.ones(2)), "z0", "shape (2,)"),
    Bad(
        "a_priori bound params",
        lambda: ex.a_priori_step_bound({"w_x": 1}, XS, Z0),
        "params",
        "'dict'",
    ),
    # ---- the sweep
    Bad("sweep devices a string", _sweep(devices="cpu"), "devices", "'cpu'"),
    Bad("sweep devices empty", _sweep(devices=[]), "devices", "[]"),
    Bad("sweep unknown cell", lambda: ex.flow_sweep("rnn"), "cell", "'rnn'"),
    Bad("sweep NaN norm", _sweep(wz_norms=(float("nan"),)), "wz_norms", "(nan,)"),
    Bad("sweep negative norm", _sweep(wz_norms=(-1.0,)), "wz_norms", "(-1.0,)"),
    Bad("sweep empty biases", _sweep(gate_biases=()), "gate_biases", "()"),
    Bad("sweep bool scale", _sweep(input_scales=(True,)), "input_scales", "(True,)"),
    Bad("sweep bytes scale", _sweep(input_scales=b"ab"), "input_scales", "b'ab'"),
    Bad("sweep string biases", _sweep(gate_biases="0.0"), "gate_biases", "'0.0'"),
    Bad("sweep length 0", _sweep(lengths=(0,)), "lengths", "(0,)"),
    Bad("sweep fractional length", _sweep(lengths=(2.5,)), "lengths", "(2.5,)"),
    Bad("sweep length too large", _sweep(lengths=(10**9,)), "lengths", "[1000000000]"),
    Bad("sweep dtype int", _sweep(dtype=jnp.int32), "dtype", "int32"),
    Bad("sweep dtype unknown name", _sweep(dtype="foo"), "dtype", "'foo'"),
    Bad(
        "learning dtype unknown name", lambda: ex.learning_experiment(dtype="foo"), "dtype", "'foo'"
    ),
    Bad("sweep progress truthy", _sweep(progress="no"), "progress", "'no'"),
    Bad("sweep chunk 0", _sweep(chunk_size=0), "chunk_size", "0"),
    Bad("random_bases no seeds", lambda: ex.random_bases([], n=2, m=3, length=4), "seeds", "[]"),
    Bad(
        "random_bases m too large",
        lambda: ex.random_bases([0], n=2, m=10**6, length=4),
        "m",
        "1000000",
    ),
    # ---- the worst-case search and the whole experiment's configuration
    Bad("worst length 0", lambda: ex.worst_case_search(0), "length", "0"),
    Bad("worst NaN bound", lambda: ex.worst_case_search(4, wz_norm=float("nan")), "wz_norm", "nan"),
    Bad("worst restarts bool", lambda: ex.worst_case_search(4, restarts=True), "restarts", "True"),
    Bad("worst too large", lambda: ex.worst_case_search(10**9, n=100), "length", "1000000000"),
    Bad("worst lengths empty", lambda: ex.worst_case_lengths([]), "lengths", "[]"),
    Bad("FlowConfig length 0", lambda: FlowConfig(lengths=(0,)), "lengths", "(0,)"),
    Bad("FlowConfig norm", lambda: FlowConfig(norm="fast"), "norm", "'fast'"),
    Bad(
        "FlowConfig infinite norm",
        lambda: FlowConfig(wz_norms=(float("inf"),)),
        "wz_norms",
        "(inf,)",
    ),
    Bad(
        "run_flow out_dir a file",
        lambda: run_flow(__file__, FlowConfig.quick()),
        "out_dir",
        "test_fuzz_experiments.py",
    ),
    # ---- the learning experiment's data
    Bad("adding_problem rng an int", lambda: ex.adding_problem(0, 2, 5), "rng", "0"),
    Bad(
        "adding_problem length 1",
        lambda: ex.adding_problem(np.random.default_rng(0), 2, 1),
        "length",
        "1",
    ),
    Bad(
        "adding_problem batch 0",
        lambda: ex.adding_problem(np.random.default_rng(0), 0, 5),
        "batch",
        "0",
    ),
    # ---- the diagram
    Bad("diagram 0 steps", lambda: cell_graph(0), "num_steps", "0"),
    Bad("diagram steps float", lambda: draw_unrolled_cell(2.0), "num_steps", "2.0"),
    Bad("diagram width 0", lambda: draw_unrolled_cell(2, n=0), "n", "0"),
    Bad(
        "diagram equations truthy",
        lambda: draw_unrolled_cell(2, equations="no"),
        "equations",
        "'no'",
    ),
    Bad(
        "graph inputs wrong length",
        lambda: evaluate_cell_graph(cell_graph(3), P, XS[:2], Z0),
        "xs",
        "shape (2, 1)",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=repr)
def test_bad_input_names_the_argument_and_its_value(case):
    assert_names_the_argument(case)


def test_distinct_categories():
    assert len({c.category for c in BAD}) == len(BAD) >= 40


# ---- edge cases with a meaning: the right result ---------------------------------------------


def test_spectral_norms_of_integer_and_numpy_matrices():
    ints = np.array([[[3, 0], [0, -4]], [[0, 2], [0, 0]]])
    for norm in ("svd", "power"):
        got = np.asarray(ex.spectral_norms(ints, norm=norm))
        np.testing.assert_allclose(got, [4.0, 2.0], rtol=1e-12)
    zero = np.zeros((2, 3, 3))  # the zero matrix has norm 0, not NaN
    np.testing.assert_array_equal(np.asarray(ex.spectral_norms(zero, norm="power")), [0.0, 0.0])


def test_reverse_products_of_an_empty_sequence_is_the_identity():
    out = np.asarray(linalg.reverse_products(np.zeros((0, 3, 3))))
    np.testing.assert_array_equal(out, np.eye(3)[None])


def test_counterexample_in_float32_is_still_exact():
    p, xs, z0 = ex.counterexample(6, dtype=jnp.float32)
    assert p.w_z.dtype == jnp.float32
    flow = np.asarray(gradient_flow(p, xs, z0))
    np.testing.assert_array_equal(flow[0], 8.0)  # 2^(6/2), dyadic: exact in float32


@pytest.mark.parametrize("dtype", ["foo", "float16", object(), jnp.int32])
def test_sweep_unknown_dtype_is_a_value_error_naming_dtype(dtype):
    """Issue 27: ``dtype="foo"`` used to end in an AttributeError inside the memory check."""
    assert_refused(_sweep(dtype=dtype), "dtype", dtype)


def test_sweep_accepts_numpy_axes_and_lists():
    a = _sweep(wz_norms=np.array([0.5, 2.0]), lengths=[4])()
    b = _sweep(wz_norms=[0.5, 2.0], lengths=(4,))()
    np.testing.assert_array_equal(a.norms[4], b.norms[4])
    assert a.norms[4].shape == (2, 1, 1, 1, 5)
