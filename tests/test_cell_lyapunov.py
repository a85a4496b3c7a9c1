"""cell_lyapunov_exponent: the largest Lyapunov exponent of any step function (float64).

Checked against the gated cell's closed form (every recurrent structure), against linear cells
where the exponent is known exactly (a scaled rotation: log of its scale at every T; a
symmetric matrix: ``log ||A^T v|| / T``, which tends to the log of the spectral radius), and
against the explicit product of autodiff Jacobians of a Flax LSTM cell (a tuple carry).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from gated_jax import cell_lyapunov_exponent, gated_step, init_gated_params, lyapunov_exponent

T, N, M = 40, 3, 4


@pytest.mark.parametrize(
    "structure",
    [
        {},
        {"recurrent_gate": "diagonal"},
        {"recurrent_gate": "heads", "heads": 2},
        {"recurrent_gate": False},
    ],
    ids=["dense", "diagonal", "heads", "mingru"],
)
def test_equals_the_gated_cells_closed_form(structure):
    k = jax.random.split(jax.random.key(3), 3)
    p = init_gated_params(k[0], N, M, **structure)
    p = p._replace(w_x=2.0 * p.w_x)  # larger s = c (1 - c) (z - u): the W_z term matters
    xs = jax.random.normal(k[1], (T, N))
    z0 = jax.random.normal(k[2], (M,))
    want = lyapunov_exponent(p, xs, z0)
    got = jax.jit(cell_lyapunov_exponent, static_argnums=0)(
        lambda z, x: gated_step(p, z, x), z0, xs
    )
    assert abs(float(got - want)) < 1e-12 * max(1.0, abs(float(want)))


def test_a_scaled_rotation_on_a_pytree_carry_gives_log_of_its_scale():
    # the carry (a, b) rotated by 0.9 and scaled: ||J v|| = 0.9 ||v|| exactly, for every v
    th, r = 0.7, 0.9

    def step(carry, x):
        a, b = carry
        return (r * (np.cos(th) * a - np.sin(th) * b) + x, r * (np.sin(th) * a + np.cos(th) * b))

    xs = jnp.linspace(-1, 1, 25)
    start = (jnp.zeros(()), jnp.zeros(()))
    for direction in (None, (jnp.array(0.3), jnp.array(-2.0))):
        lam = cell_lyapunov_exponent(step, start, xs, direction=direction)
        assert abs(float(lam) - np.log(r)) < 1e-13


def test_a_linear_cell_gives_the_finite_product_and_tends_to_log_spectral_radius():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    eig = np.array([0.95, -0.6, 0.5, 0.2, -0.1])
    A = (q * eig) @ q.T  # symmetric, spectral radius 0.95
    v0 = rng.normal(size=5)
    xs = jnp.asarray(rng.normal(size=(300, 5)))
    step = lambda h, x: jnp.asarray(A) @ h + x
    lam = float(cell_lyapunov_exponent(step, jnp.zeros(5), xs, direction=jnp.asarray(v0)))
    exact = np.log(np.linalg.norm(np.linalg.matrix_power(A, 300) @ (v0 / np.linalg.norm(v0))))
    assert abs(lam - exact / 300) < 1e-12
    # the limit: the error is log |<v0, q1>| / T (+ (0.6/0.95)^T), known here
    overlap = abs(q[:, 0] @ v0) / np.linalg.norm(v0)
    assert abs(lam - np.log(0.95) - np.log(overlap) / 300) < 1e-12


def test_lstm_tuple_carry_equals_the_explicit_jacobian_product():
    cell = nn.LSTMCell(M, param_dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (12, N))
    carry = cell.initialize_carry(jax.random.key(2), (N,))
    v = cell.init(jax.random.key(0), carry, xs[0])
    step = lambda c, x: cell.apply(v, c, x)[0]
    lam = cell_lyapunov_exponent(step, carry, xs)
    # the reference: the product of the (2M, 2M) Jacobians of the flattened step, applied to
    # the same starting direction (the seeded one, lyapunov_direction)
    from jax.flatten_util import ravel_pytree

    from gated_jax.cell.diagnostics import lyapunov_direction

    c0, unravel = ravel_pytree(carry)
    flat = lambda c, x: ravel_pytree(step(unravel(c), x))[0]
    cs = jax.lax.scan(lambda c, x: (flat(c, x),) * 2, c0, xs)[1]
    jacs = np.asarray(jax.vmap(jax.jacfwd(flat))(jnp.concatenate([c0[None], cs[:-1]]), xs))
    w = np.asarray(lyapunov_direction(2 * M, jnp.float64))
    for J in jacs:
        w = J @ w
    assert abs(float(lam) - float(jnp.log(jnp.linalg.norm(w))) / 12) < 1e-12


def test_vmap_over_a_batch_equals_each_example():
    p = init_gated_params(jax.random.key(0), N, M)
    xs = jax.random.normal(jax.random.key(1), (3, T, N))
    step = lambda z, x: gated_step(p, z, x)
    batched = jax.vmap(lambda x: cell_lyapunov_exponent(step, jnp.zeros(M), x))(xs)
    assert jnp.allclose(batched, lyapunov_exponent(p, xs), rtol=0, atol=1e-12)


def test_bad_arguments_are_named():
    step = lambda h, x: jnp.tanh(h + x)
    with pytest.raises(ValueError, match="`xs`"):
        cell_lyapunov_exponent(step, jnp.zeros(2), jnp.zeros((0, 2)))
    with pytest.raises(ValueError, match="`step`"):
        cell_lyapunov_exponent(lambda h, x: (h, h), jnp.zeros(2), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="`direction`"):
        cell_lyapunov_exponent(step, jnp.zeros(2), jnp.zeros((3, 2)), direction=jnp.zeros(2))
    with pytest.raises(ValueError, match="`direction`"):
        cell_lyapunov_exponent(step, jnp.zeros(2), jnp.zeros((3, 2)), direction=jnp.ones(3))
    with pytest.raises(ValueError, match="`init_carry`"):
        cell_lyapunov_exponent(step, jnp.zeros(2, int), jnp.zeros((3, 2)))
