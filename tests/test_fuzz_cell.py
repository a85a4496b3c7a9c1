"""Bad and edge-case input to the recurrence's public API, by category.

Every bad call must raise a ``ValueError`` or ``TypeError`` from gated_jax whose message names
the argument as the user wrote it and shows its value (`` `name` (=value) must be ...``),
before any XLA error; every edge case that has a meaning must give the right result.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fuzz import Bad, assert_names_the_argument

from gated_jax.cell import (
    GatedParams,
    gated_bptt,
    gated_scan,
    gated_step,
    gradient_flow,
    init_gated_params,
    jacobian_norm_bound,
    jacobian_product,
    resolve_method,
    state_jacobians,
    step_jacobian,
)
from gated_jax.testing import max_rel_error, numpy_loop

N, M, T = 3, 4, 5
KEY = jax.random.key(0)


def _params(bias=False, dtype=np.float64):
    rng = np.random.default_rng(0)
    shapes = [(M, N), (M, N), (M, M)] + ([(M,), (M,)] if bias else [])
    return GatedParams(*[rng.normal(size=s).astype(dtype) for s in shapes])


P = _params()
XS = np.random.default_rng(1).normal(size=(2, T, N))


BAD = [
    # ---- wrong ranks and shapes
    Bad("xs rank 1", lambda: gated_scan(P, np.zeros(3)), "xs", "shape (3,)"),
    Bad("xs width != n", lambda: gated_scan(P, np.zeros((4, 5))), "xs", "shape (4, 5)"),
    Bad(
        "w_x rank 3",
        lambda: gated_scan(P._replace(w_x=np.zeros((1, M, N))), XS),
        "params.w_x",
        "shape (1, 4, 3)",
    ),
    Bad(
        "w_c != w_x",
        lambda: gated_scan(P._replace(w_c=np.zeros((3, 3))), XS),
        "params.w_c",
        "shape (3, 3)",
    ),
    Bad(
        "w_z not square",
        lambda: gated_scan(P._replace(w_z=np.zeros((4, 3))), XS),
        "params.w_z",
        "shape (4, 3)",
    ),
    Bad(
        "b_c wrong length",
        lambda: gated_scan(P._replace(b_c=np.zeros(3)), XS),
        "params.b_c",
        "shape (3,)",
    ),
    Bad(
        "b_x rank 2",
        lambda: gated_scan(P._replace(b_x=np.zeros((1, M))), XS),
        "params.b_x",
        "shape (1, 4)",
    ),
    Bad("z0 width != m", lambda: gated_scan(P, XS, np.zeros((2, 5))), "z0", "shape (2, 5)"),
    Bad("z0 batch mismatch", lambda: gated_scan(P, XS, np.zeros((3, M))), "z0", "shape (3, 4)"),
    Bad(
        "dzs shape", lambda: gated_bptt(P, XS, None, np.zeros((2, T, 3))), "dzs", "shape (2, 5, 3)"
    ),
    Bad("x_t width", lambda: gated_step(P, np.zeros(M), np.zeros(2)), "x_t", "shape (2,)"),
    Bad("z_prev width", lambda: step_jacobian(P, np.zeros(3), np.zeros(N)), "z_prev", "shape (3,)"),
    Bad(
        "step batch mismatch",
        lambda: gated_step(P, np.zeros((2, M)), np.zeros((3, N))),
        "z_prev",
        "shape (2, 4)",
    ),
    Bad(
        "seq_lengths shape",
        lambda: gated_scan(P, XS, seq_lengths=np.array([1])),
        "seq_lengths",
        "shape (1,)",
    ),
    # ---- mismatched or malformed params
    Bad("params a dict", lambda: gated_scan({"w_x": P.w_x}, XS), "params", "'dict'"),
    Bad("params a 1-tuple", lambda: gated_scan((P.w_x,), XS), "params", "'tuple'"),
    Bad(
        "zero state width",
        lambda: gated_scan(GatedParams(np.zeros((0, N)), np.zeros((0, N)), np.zeros((0, 0))), XS),
        "params.w_x",
        "shape (0, 3)",
    ),
    Bad(
        "zero width under grad",
        lambda: jax.grad(lambda p: jnp.sum(gated_scan(p, np.zeros((2, 3, 0)))))(
            GatedParams(np.zeros((2, 0)), np.zeros((2, 0)), np.zeros((2, 2)))
        ),
        "params.w_x",
        "shape (2, 0)",
    ),
    Bad(
        "bool weights",
        lambda: gated_scan(P._replace(w_z=np.ones((M, M), bool)), XS),
        "params.w_z",
        "dtype bool",
    ),
    # ---- non-positive / non-integer sizes
    Bad("init n = 0", lambda: init_gated_params(KEY, 0, M), "n", "0"),
    Bad("init m negative", lambda: init_gated_params(KEY, N, -4), "m", "-4"),
    Bad("init n float", lambda: init_gated_params(KEY, 2.5, M), "n", "2.5"),
    Bad("unroll 0", lambda: gated_scan(P, XS, unroll=0), "unroll", "0"),
    Bad("unroll float", lambda: gated_scan(P, XS, unroll=2.0), "unroll", "2.0"),
    Bad("remat negative", lambda: gated_scan(P, XS, remat=-2), "remat", "-2"),
    Bad(
        "seq_lengths > T",
        lambda: gated_scan(P, XS, seq_lengths=np.array([1, 9])),
        "seq_lengths",
        "[1, 9]",
    ),
    Bad(
        "seq_lengths negative",
        lambda: gated_scan(P, XS, seq_lengths=np.array([-1, 2])),
        "seq_lengths",
        "[-1, 2]",
    ),
    Bad("start > end", lambda: jacobian_product(P, XS[0], start=3, end=2), "start", "3"),
    Bad("end > T", lambda: jacobian_product(P, XS[0], end=T + 1), "end", "6"),
    Bad("start float", lambda: jacobian_product(P, XS[0], start=1.0), "start", "1.0"),
    # ---- bools, bytes, strings and None where numbers or flags go
    Bad("init n bool", lambda: init_gated_params(KEY, True, M), "n", "True"),
    Bad("init m string", lambda: init_gated_params(KEY, N, "4"), "m", "'4'"),
    Bad("init n None", lambda: init_gated_params(KEY, None, M), "n", "None"),
    Bad("init m bytes", lambda: init_gated_params(KEY, N, b"4"), "m", "b'4'"),
    Bad("unroll bool", lambda: gated_scan(P, XS, unroll=True), "unroll", "True"),
    Bad("reverse truthy string", lambda: gated_scan(P, XS, reverse="no"), "reverse", "'no'"),
    Bad("reverse int", lambda: gated_scan(P, XS, reverse=1), "reverse", "1"),
    Bad(
        "reverse None",
        lambda: gated_bptt(P, XS, None, np.zeros((2, T, M)), reverse=None),
        "reverse",
        "None",
    ),
    Bad(
        "use_bias truthy string",
        lambda: init_gated_params(KEY, N, M, use_bias="yes"),
        "use_bias",
        "'yes'",
    ),
    Bad("remat string", lambda: gated_scan(P, XS, remat="yes"), "remat", "'yes'"),
    Bad("end string", lambda: jacobian_product(P, XS[0], end="5"), "end", "'5'"),
    Bad("backward unknown", lambda: gated_scan(P, XS, backward="fast"), "backward", "'fast'"),
    Bad("method unknown", lambda: gated_scan(P, XS, method="magic"), "method", "'magic'"),
    Bad("method None", lambda: resolve_method(None), "method", "None"),
    # ---- integer, complex and non-numeric dtypes
    Bad(
        "init dtype int32", lambda: init_gated_params(KEY, N, M, dtype=jnp.int32), "dtype", "int32"
    ),
    Bad("init dtype nonsense", lambda: init_gated_params(KEY, N, M, dtype="abc"), "dtype", "'abc'"),
    Bad(
        "seq_lengths float",
        lambda: gated_scan(P, XS, seq_lengths=np.ones(2)),
        "seq_lengths",
        "float64",
    ),
    Bad(
        "seq_lengths bool",
        lambda: gated_scan(P, XS, seq_lengths=np.ones(2, bool)),
        "seq_lengths",
        "bool",
    ),
    Bad("complex inputs", lambda: gated_scan(P, XS.astype(np.complex128)), "xs", "complex128"),
    Bad(
        "object inputs", lambda: gated_scan(P, np.array([[None] * N], dtype=object)), "xs", "object"
    ),
    # ---- Python lists and other objects where arrays go
    Bad("xs a list", lambda: gated_scan(P, [[1.0, 2.0, 3.0]]), "xs", "[[1.0, 2.0, 3.0]]"),
    Bad("xs a string", lambda: gated_scan(P, "abc"), "xs", "'abc'"),
    Bad("z0 a list", lambda: gated_scan(P, XS[0], [0.0] * M), "z0", "[0.0, 0.0, 0.0, 0.0]"),
    Bad("dzs a list", lambda: gated_bptt(P, XS[0], None, [[0.0] * M] * T), "dzs", "[[0.0"),
    Bad("x_t a list", lambda: gated_step(P, np.zeros(M), [0.0] * N), "x_t", "[0.0, 0.0, 0.0]"),
    Bad("diagnostics xs None", lambda: gradient_flow(P, None), "xs", "None"),
    # ---- sizes too large for memory
    Bad("init 10**6 x 10**6", lambda: init_gated_params(KEY, 10**6, 10**6), "m", "1000000"),
    Bad(
        "Jacobians too large",
        lambda: state_jacobians(
            GatedParams(np.zeros((40000, 1)), np.zeros((40000, 1)), None),
            np.zeros((1, 10**6, 1), np.float32),
        ),
        "xs",
        "shape (1, 1000000, 1)",
    ),
    # ---- traced values where static ones are needed
    Bad(
        "traced reverse",
        lambda: jax.jit(lambda r: gated_scan(P, XS, reverse=r))(True),
        "reverse",
        "shape ()",
    ),
    Bad(
        "traced unroll",
        lambda: jax.jit(lambda u: gated_scan(P, XS, unroll=u))(2),
        "unroll",
        "shape ()",
    ),
    Bad(
        "traced start",
        lambda: jax.jit(lambda s: jacobian_product(P, XS[0], start=s))(1),
        "start",
        "shape ()",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=repr)
def test_bad_input_names_the_argument_and_its_value(case):
    assert_names_the_argument(case)


def test_distinct_categories():
    assert len({c.category for c in BAD}) == len(BAD) >= 40


# ---- edge cases with a meaning: the right result ---------------------------------------------


def _reference(p, xs, z0=None):
    return numpy_loop(p, np.asarray(xs, np.float64).reshape(-1, T, N), z0)


def test_integer_bool_and_numpy_inputs_give_the_float_result():
    xi = np.random.default_rng(2).integers(-3, 4, size=(2, T, N))
    zi = gated_scan(P, xi)
    assert zi.dtype == jnp.float64 and max_rel_error(zi, _reference(P, xi)) < 1e-12
    xb = xi > 0
    assert max_rel_error(gated_scan(P, xb), _reference(P, xb.astype(float))) < 1e-12
    pi = GatedParams(*(None if a is None else np.round(a).astype(np.int32) for a in P))
    assert max_rel_error(gated_scan(pi, XS), _reference(pi, XS)) < 1e-12


def test_mixed_float_dtypes_promote():
    p32 = _params(dtype=np.float32)
    out = gated_scan(p32, XS)  # float32 weights, float64 inputs: float64, like JAX
    assert out.dtype == jnp.float64
    assert max_rel_error(out, _reference(p32, XS)) < 1e-12


def test_empty_sequences_and_empty_batches():
    assert gated_scan(P, np.zeros((2, 0, N))).shape == (2, 0, M)
    assert gated_scan(P, np.zeros((0, T, N))).shape == (0, T, M)
    dp, dxs, dz0 = gated_bptt(P, np.zeros((0, T, N)), None, np.zeros((0, T, M)))
    assert dxs.shape == (0, T, N) and float(jnp.abs(dp.w_z).max()) == 0.0
    assert gradient_flow(P, np.zeros((0, N))).shape == (1,)


def test_non_finite_values_propagate_rather_than_crash():
    xs = XS.copy()
    xs[0, 2, 0] = np.nan
    zs = np.asarray(gated_scan(P, xs))
    assert np.all(np.isfinite(zs[0, :2])) and np.all(np.isnan(zs[0, 2:]))
    assert np.all(np.isfinite(zs[1]))  # the other sequence is untouched
    xs[1, 0, 0] = np.inf  # a saturated gate and an infinite candidate: inf or nan, not a crash
    assert np.asarray(gated_scan(P, xs)).shape == (2, T, M)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_params_initialise_and_run(dtype):
    p = init_gated_params(KEY, N, M, use_bias=True, dtype=dtype)
    assert {a.dtype for a in p} == {jnp.dtype(dtype)}
    assert (
        float(
            jnp.max(jnp.abs(p.w_z.astype(jnp.float32) @ p.w_z.T.astype(jnp.float32) - jnp.eye(M)))
        )
        < 2e-2
    )
    zs = gated_scan(p, XS.astype(dtype))
    assert zs.dtype == dtype
    ref = _reference(jax.tree.map(lambda a: np.asarray(a, np.float64), p), XS.astype(dtype))
    assert max_rel_error(zs, ref) < 2e-2


def test_traced_seq_lengths_under_jit_are_fine():
    lengths = np.array([2, 5])
    got = jax.jit(lambda L: gated_scan(P, XS, seq_lengths=L))(lengths)
    want = numpy_loop(P, XS, None, seq_lengths=lengths)
    assert max_rel_error(got, want) < 1e-12


def test_diagnostics_accept_the_same_edge_cases():
    xi = np.random.default_rng(3).integers(-2, 3, size=(T, N))
    a = jacobian_norm_bound(P, xi)
    b = jacobian_norm_bound(P, xi.astype(np.float64))
    assert a.dtype == jnp.float64 and max_rel_error(a, b) == 0.0
