"""deer_scan: DEER for any step function, against lax.scan and against gated_deer (float64).

Each cell is a random contractive recurrence; the solver's trajectory and its implicit
gradients (with respect to closed-over parameters, the inputs and the initial carry) are
compared with autodiff of the sequential ``lax.scan``.
"""

import jax
import jax.numpy as jnp
import pytest

from gated_jax import deer_scan
from gated_jax.cell import gated_deer, init_gated_params, step_jacobian
from gated_jax.cell import step as _step
from gated_jax.cell.generic import _full_jacobians

T, N, D = 16, 3, 4


def _weights(key, shapes, scale=0.7):
    keys = jax.random.split(key, len(shapes))
    return [
        scale * jax.random.normal(k, s) / jnp.sqrt(s[-1]) for k, s in zip(keys, shapes, strict=True)
    ]


def _tanh_rnn(w):
    W, U = w
    return lambda h, x: jnp.tanh(W @ h + U @ x)


def _gru(w):
    Wz, Uz, Wr, Ur, Wh, Uh = w

    def step(h, x):
        z = jax.nn.sigmoid(Wz @ h + Uz @ x)
        r = jax.nn.sigmoid(Wr @ h + Ur @ x)
        return z * h + (1 - z) * jnp.tanh(Wh @ (r * h) + Uh @ x)

    return step


def _lstm(w):
    Wi, Ui, Wf, Uf, Wo, Uo, Wg, Ug = w

    def step(carry, x):
        c, h = carry
        i = jax.nn.sigmoid(Wi @ h + Ui @ x)
        f = jax.nn.sigmoid(Wf @ h + Uf @ x)
        o = jax.nn.sigmoid(Wo @ h + Uo @ x)
        c = f * c + i * jnp.tanh(Wg @ h + Ug @ x)
        return c, o * jnp.tanh(c)

    return step


CELLS = {
    "tanh": (_tanh_rnn, 2, lambda: jnp.full((D,), 0.1)),
    "gru": (_gru, 6, lambda: jnp.full((D,), 0.1)),
    "lstm": (_lstm, 8, lambda: (jnp.full((D,), 0.2), jnp.full((D,), -0.1))),
}


def _problem(name, seed):
    make, count, carry = CELLS[name]
    shapes = [(D, D), (D, N)] * (count // 2)
    w = _weights(jax.random.key(seed), shapes)
    xs = jax.random.normal(jax.random.key(seed + 100), (T, N))
    return make, w, xs, carry()


def _seq(make, w, c0, xs):
    step = make(w)
    return jax.lax.scan(lambda c, x: (step(c, x),) * 2, c0, xs)[1]


def _loss(carries):
    leaves = jax.tree.leaves(carries)
    return sum(jnp.sum(jnp.sin(jnp.linspace(0.5, 2.0, a.size) * a.ravel())) for a in leaves)


def _close(a, b, rtol=1e-10):
    """``|a - b| <= rtol max(1, |b|)`` elementwise-max (gradients of size ~T scale up)."""
    return float(jnp.max(jnp.abs(a - b))) <= rtol * max(1.0, float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize(
    ("name", "jacobian"),
    [("tanh", "diagonal"), ("gru", "full"), ("lstm", "full"), ("lstm", "diagonal")],
)
def test_trajectory_and_gradients_equal_the_sequential_scan(name, jacobian):
    make, w, xs, c0 = _problem(name, seed=3 + len(name))

    @jax.jit
    def both(w, c0, xs):
        def solved(w, c0, xs):
            cs, info = deer_scan(make(w), c0, xs, jacobian=jacobian)
            return _loss(cs), (cs, info)

        (_, (cs, info)), g = jax.value_and_grad(solved, argnums=(0, 1, 2), has_aux=True)(w, c0, xs)
        ref = _seq(make, w, c0, xs)
        g_ref = jax.grad(lambda *a: _loss(_seq(make, *a)), argnums=(0, 1, 2))(w, c0, xs)
        return cs, info, ref, g, g_ref

    cs, info, ref, g, g_ref = both(w, c0, xs)
    assert bool(info.converged) and not bool(info.sequential)
    assert 1 <= int(info.iterations) <= T
    assert jax.tree.structure(cs) == jax.tree.structure(ref)
    for a, b in zip(jax.tree.leaves(cs), jax.tree.leaves(ref), strict=True):
        assert a.shape == b.shape
        assert _close(a, b)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        assert _close(a, b)
    # the residual history is measured: finite up to the last iterate, within the bound there
    k = int(info.iterations)
    assert bool(jnp.all(jnp.isfinite(info.residuals[: k + 1])))
    scale = max(1.0, max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(ref)))
    assert float(info.residuals[k]) <= 1e-12 * scale


def test_on_the_gated_cell_it_agrees_with_gated_deer_and_the_closed_form_jacobians():
    p = init_gated_params(jax.random.key(0), N, D, dtype=jnp.float64)
    p = p._replace(w_z=0.6 * p.w_z)
    xs = jax.random.normal(jax.random.key(1), (T, N))
    z0 = jnp.full((D,), 0.3)

    def step(z, x):
        return _step.update(p.w_z, z, *_step.projections(p, x))[0]

    zs, info = deer_scan(step, z0, xs)
    ref, ref_info = gated_deer(p, xs, z0)
    assert bool(info.converged) and bool(ref_info.converged)
    assert float(jnp.max(jnp.abs(zs - ref))) < 1e-10
    # Newton from the same zero guess with the same Jacobians: the same number of updates
    assert int(info.iterations) == int(ref_info.iterations)
    # the solver's autodiff Jacobians are the closed form's
    zprev = jnp.concatenate([z0[None], zs[:-1]])
    J, f = _full_jacobians(lambda k, c, x: step(c, x), [], zprev, xs)
    closed = jax.vmap(lambda z, x: step_jacobian(p, z, x))(zprev, xs)
    assert float(jnp.max(jnp.abs(J - closed))) < 1e-14
    assert float(jnp.max(jnp.abs(f - zs))) < 1e-10


def test_not_converged_is_reported_and_fallback_returns_the_scan():
    make, w, xs, c0 = _problem("tanh", seed=5)
    w = [4.0 * w[0], w[1]]  # expanding: Newton needs many updates
    step = make(w)
    cs, info = deer_scan(step, c0, xs, max_iters=2)
    assert not bool(info.converged) and int(info.iterations) == 2
    assert info.residuals.shape == (3,) and bool(jnp.all(jnp.isfinite(info.residuals)))
    cs, info = deer_scan(step, c0, xs, max_iters=2, fallback=True)
    assert bool(info.sequential)
    assert float(jnp.max(jnp.abs(cs - _seq(make, w, c0, xs)))) < 1e-12


def test_initial_guess_and_empty_sequence():
    make, w, xs, c0 = _problem("lstm", seed=2)
    ref = _seq(make, w, c0, xs)
    cs, info = deer_scan(make(w), c0, xs, init=ref)  # the solution itself: no update
    assert int(info.iterations) == 0 and bool(info.converged)
    empty, info = deer_scan(make(w), c0, xs[:0])
    assert [a.shape for a in empty] == [(0, D), (0, D)] and bool(info.converged)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"jacobian": "dense"}, "jacobian"),
        ({"tol": -1.0}, "tol"),
        ({"max_iters": 0}, "max_iters"),
        ({"fallback": 1}, "fallback"),
        ({"init": jnp.zeros((3, D))}, "init"),
        ({"xs": {"a": jnp.zeros((T, N)), "b": jnp.zeros((T + 1, N))}}, "xs"),
        ({"init_carry": jnp.zeros((D,), jnp.int32)}, "init_carry"),
        ({"step": lambda h, x: h[:2]}, "step"),
    ],
)
def test_bad_arguments_are_named(kwargs, name):
    args = {"step": lambda h, x: jnp.tanh(h), "init_carry": jnp.zeros(D), "xs": jnp.zeros((T, N))}
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"`{name}`"):
        deer_scan(args.pop("step"), args.pop("init_carry"), args.pop("xs"), **args)


def test_diagonal_is_newton_itself_for_an_elementwise_cell():
    # h' = tanh(w * h + x): an elementwise Jacobian, so its exact diagonal is the Jacobian and
    # quasi-DEER takes DEER's iterations (from the same guess, the same iterates)
    w = 0.9 * jnp.linspace(-1.0, 1.0, D)
    xs = jax.random.normal(jax.random.key(7), (T, D))

    @jax.jit
    def both(w, xs):
        step = lambda h, x: jnp.tanh(w * h + x)  # noqa: E731
        return [deer_scan(step, jnp.zeros(D), xs, jacobian=j) for j in ("full", "diagonal")]

    (full, info_f), (diag, info_d) = both(w, xs)
    assert int(info_f.iterations) == int(info_d.iterations) < T
    assert float(jnp.max(jnp.abs(full - diag))) < 1e-12
