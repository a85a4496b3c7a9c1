r"""What can be proved about the gated cell's gradient flow, and a counterexample.

The cell is ``c[t] = sigmoid(W_c x[t] + W_z z[t-1] + b_c)``,
``z[t] = c[t] * z[t-1] + (1 - c[t]) * u[t]`` with ``u[t] = W_x x[t] (+ b_x)``.

**Forward bound (holds).** Each coordinate of ``z[t]`` is a convex combination of ``z[t-1]`` and
``u[t]`` with weight ``c in (0, 1)``, so by induction

.. math::

    \min(z_i[0], \min_{s \le t} u_i[s]) \le z_i[t] \le \max(z_i[0], \max_{s \le t} u_i[s]).

The state never leaves the box spanned by ``z[0]`` and the candidates (:func:`state_box`).

**One-step Jacobian bound (holds).** ``J = diag(c) + diag(s) W_z`` with
``s = (z[t-1] - u[t]) c (1 - c)`` and ``c (1 - c) <= 1/4``, so

.. math::

    \|J[t]\|_2 \le \max_i c_i + \max_i |s_i| \, \|W_z\|_2
              \le \max_i c_i + \tfrac14 \max_i |z_i[t-1] - u_i[t]| \, \|W_z\|_2
              < 1 + \tfrac14 R \, \|W_z\|_2,

where ``R`` is the widest side of the box above (:func:`step_norm_bound`,
:func:`a_priori_step_bound`). With ``W_z = 0`` it is ``max c < 1``: gradients can only shrink.
The bound exceeds 1 as soon as ``max|z - u| ||W_z|| / 4 > 1 - max c``: a state far from its
candidate and a large ``W_z``. So the bound does not exclude growth, and the usual argument
("c close to 1 copies the state, which avoids exploding gradients") only covers the ``diag(c)``
term. Whether products of such Jacobians grow with ``T`` is for experiment to decide.

**Exploding does happen (counterexample, exact).** Take ``n = m = 1``, ``W_x = 1``,
``W_c = 1/2``, ``W_z = 3/2``, no biases, ``z[0] = -1`` and the input ``x[t] = 3 (-1)^(t+1)``.
Then the gate pre-activation is ``x/2 + 3z/2 = 0`` at every step, ``c = 1/2``, and the state
cycles ``-1, 1, -1, ...`` exactly (all numbers are dyadic, so float arithmetic is exact). The
one-step Jacobians alternate ``1/2 + (z - u)/4 * 3/2 = -1`` (``z=-1, u=3``) and ``2``
(``z=1, u=-3``), so

.. math::

    \frac{\partial z[T]}{\partial z[0]} = (-2)^{T/2} \quad (T \text{ even}),

growth rate ``log(2)/2 = 0.347`` per step with ``||W_z|| = 1.5`` and ``|x| <= 3`` while the state
stays in ``[-1, 1]``. :func:`counterexample_check` confirms it with ``jax.grad`` of the plain
recurrence (a Python loop over the formula) and with :func:`gated_jax.cell.gradient_flow`.
The gradient of ``z[T]`` with respect to ``W_z`` grows at the same rate. A bounded state does
not prevent this: the trajectory is a repelling orbit of the input-driven dynamics (positive
Lyapunov exponent), the same mechanism by which chaotic RNNs have exploding gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gated_jax._validate import (
    check_array,
    check_fits_in_memory,
    fail,
    float_dtype,
    positive_int,
)
from gated_jax.cell import (
    GatedParams,
    gated_scan,
    gated_step,
    gradient_flow,
    jacobian_norm_bound,
    state_jacobians,
)
from gated_jax.cell.params import check_params
from gated_jax.cell.step import projections

__all__ = [
    "state_box",
    "step_norm_bound",
    "a_priori_step_bound",
    "counterexample",
    "counterexample_check",
    "COUNTEREXAMPLE_RATE",
    "check_bounds",
]

COUNTEREXAMPLE_RATE = float(np.log(2.0) / 2.0)


def _candidates(params, xs):
    """``u[t] = W_x x[t] + b_x``, by the cell's own :func:`gated_jax.cell.step.projections`."""
    return projections(params, jnp.asarray(xs))[1]


def state_box(params, xs: jax.Array, z0: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-coordinate ``(lo, hi)`` of ``z[0]`` and all candidates ``u[t]``: the forward box.

    ``xs`` is ``(T, n)``, ``z0`` is ``(m,)``; returns two ``(m,)`` arrays with
    ``lo <= z[t] <= hi`` for every ``t`` (module docstring).
    """
    p, n, m = check_params(params)
    check_array("xs", xs)
    if len(np.shape(xs)) != 2 or np.shape(xs)[-1] != n or np.shape(xs)[0] == 0:
        raise fail("xs", xs, f"of shape (T, n) with T >= 1 and n = {n}")
    check_array("z0", z0)
    if np.shape(z0) != (m,):
        raise fail("z0", z0, f"of shape (m,) = {(m,)}")
    u = _candidates(p, xs)
    lo = jnp.minimum(z0, u.min(axis=0))
    hi = jnp.maximum(z0, u.max(axis=0))
    return lo, hi


def step_norm_bound(params, z_prev: jax.Array, x_t: jax.Array) -> jax.Array:
    """``max c + max |(z_prev - u) c (1 - c)| ||W_z||_2``, an upper bound on ``||J||_2``.

    ``z_prev`` is ``(m,)``, ``x_t`` is ``(n,)``. The bound of
    :func:`gated_jax.cell.jacobian_norm_bound` on the one-step trajectory from ``z_prev``.
    """
    return jacobian_norm_bound(params, jnp.asarray(x_t)[None], z_prev)[0]


def a_priori_step_bound(params, xs: jax.Array, z0: jax.Array) -> jax.Array:
    """``1 + R ||W_z||_2 / 4`` with ``R = max_i (hi_i - lo_i)``: bounds every ``||J[t]||_2``.

    Holds before running the recurrence (only ``z0`` and the candidates enter), since
    ``|z_i[t-1] - u_i[t]| <= hi_i - lo_i`` by the forward box.
    """
    lo, hi = state_box(params, xs, z0)
    return 1 + jnp.max(hi - lo) * jnp.linalg.matrix_norm(params.w_z, ord=2) / 4


def counterexample(length: int = 64, *, dtype=jnp.float64):
    """The scalar counterexample: ``(params, xs (T, 1), z0 (1,))`` (module docstring).

    ``||dz[T]/dz[0]|| = 2^(T/2)`` for even ``T``, with ``||W_z|| = 1.5`` and ``|x| <= 3``.
    """
    length = positive_int("length", length)
    dtype = float_dtype("dtype", dtype)
    one = lambda v: jnp.full((1, 1), v, dtype)
    params = GatedParams(w_x=one(1.0), w_c=one(0.5), w_z=one(1.5))
    signs = np.where(np.arange(1, length + 1) % 2 == 1, 1.0, -1.0)
    xs = jnp.asarray(3.0 * signs[:, None], dtype)
    z0 = jnp.full((1,), -1.0, dtype)
    return params, xs, z0


def _plain_final_state(w_x, w_c, w_z, xs, z0):
    """``z[T]`` by a Python loop over the cell's formula, :func:`gated_jax.cell.gated_step`.

    No scan and no closed forms: ``jax.grad`` of it is JAX's own autodiff of the formula.
    """
    params = GatedParams(w_x=w_x, w_c=w_c, w_z=w_z)
    z = z0
    for t in range(xs.shape[0]):
        z = gated_step(params, z, xs[t])
    return z


def counterexample_check(length: int = 64) -> dict[str, float]:
    """Evaluate the counterexample in float64 three ways; returns plain floats.

    Keys: ``analytic`` (``(-2)^(T/2)``, ``T`` even, else ``-(-2)^((T-1)/2)``), ``jax_grad``
    (``jax.grad`` of the plain loop's ``z[T]`` with respect to ``z[0]``), ``gradient_flow``
    (``gradient_flow(...)[0]`` of :mod:`gated_jax.cell`, a norm), ``grad_w_z`` (``jax.grad`` of
    ``z[T]`` with respect to ``W_z``), ``state_min``/``state_max`` (the visited states) and
    ``rate`` (``log|jax_grad| / T``).
    """
    with jax.enable_x64(True):
        params, xs, z0 = counterexample(length, dtype=jnp.float64)
        f = lambda z: _plain_final_state(params.w_x, params.w_c, params.w_z, xs, z)[0]
        g = float(jax.grad(lambda z: f(jnp.reshape(z, (1,))))(z0[0]))
        gw = float(
            jax.grad(lambda w: _plain_final_state(params.w_x, params.w_c, w, xs, z0)[0])(
                params.w_z
            )[0, 0]
        )
        flow = float(gradient_flow(params, xs, z0)[0])
        zs = np.asarray(gated_scan(params, xs, z0))
    half, odd = divmod(length, 2)
    analytic = float((-2.0) ** half * (-1.0 if odd else 1.0))
    return {
        "analytic": analytic,
        "jax_grad": g,
        "gradient_flow": flow,
        "grad_w_z": gw,
        "state_min": float(zs.min()),
        "state_max": float(zs.max()),
        "rate": float(np.log(abs(g)) / length),
    }


def check_bounds(
    num_configs: int = 256, *, length: int = 32, n: int = 4, m: int = 8, seed: int = 0
) -> dict[str, float]:
    """Test the forward box and the one-step bounds on random configurations (float64).

    Configurations: ``||W_z||_2`` log-uniform in ``[0.1, 20]``, gate and candidate biases
    ``N(0, 2^2)``, inputs ``sigma N(0, 1)`` with ``sigma`` log-uniform in ``[0.1, 10]``,
    ``z[0] ~ N(0, 1)``, drawn with NumPy from ``seed`` and evaluated with one ``jax.vmap``.
    Returns ``box_violation`` (largest distance of any ``z[t]`` outside its box; 0 when the
    bound holds), ``bound_ratio`` (largest ``||J[t]||_2`` over its per-step bound, ``<= 1``),
    ``a_priori_ratio`` (largest ``||J[t]||_2`` over ``1 + R ||W_z|| / 4``), and the fractions of
    steps whose bound exceeds 1 and whose actual ``||J[t]||_2`` exceeds 1.
    """
    c = positive_int("num_configs", num_configs)
    length, n, m = positive_int("length", length), positive_int("n", n), positive_int("m", m)
    seed = positive_int("seed", seed, minimum=0)
    # inputs, states and the (T, m, m) Jacobians of every configuration at once (float64)
    nbytes = 8.0 * c * length * (n + 3 * m + 2 * m * m)
    check_fits_in_memory("num_configs", c, nbytes, "the configurations' Jacobians")
    rng = np.random.default_rng(seed)
    rho = np.exp(rng.uniform(np.log(0.1), np.log(20.0), c))
    sigma = np.exp(rng.uniform(np.log(0.1), np.log(10.0), c))
    wz = rng.standard_normal((c, m, m))
    wz *= (rho / np.linalg.norm(wz, ord=2, axis=(-2, -1)))[:, None, None]
    arrays = {
        "w_x": rng.standard_normal((c, m, n)) / np.sqrt(n),
        "w_c": rng.standard_normal((c, m, n)) / np.sqrt(n),
        "w_z": wz,
        "b_c": 2.0 * rng.standard_normal((c, m)),
        "b_x": 2.0 * rng.standard_normal((c, m)),
        "xs": sigma[:, None, None] * rng.standard_normal((c, length, n)),
        "z0": rng.standard_normal((c, m)),
    }

    def one(a):
        p = GatedParams(a["w_x"], a["w_c"], a["w_z"], a["b_c"], a["b_x"])
        zs = gated_scan(p, a["xs"], a["z0"])
        lo, hi = state_box(p, a["xs"], a["z0"])
        viol = jnp.maximum(jnp.max(lo[None] - zs), jnp.max(zs - hi[None]))
        norms = jnp.linalg.matrix_norm(state_jacobians(p, a["xs"], a["z0"]), ord=2)
        bound = jacobian_norm_bound(p, a["xs"], a["z0"])
        prior = a_priori_step_bound(p, a["xs"], a["z0"])
        return viol, norms, bound, prior

    with jax.enable_x64(True):
        args = {k: jnp.asarray(v) for k, v in arrays.items()}
        viol, norms, bound, prior = (np.asarray(v) for v in jax.jit(jax.vmap(one))(args))
    return {
        "configs": float(c),
        "box_violation": float(max(viol.max(), 0.0)),
        "bound_ratio": float((norms / bound).max()),
        "a_priori_ratio": float((norms / prior[:, None]).max()),
        "frac_bound_above_1": float((bound > 1).mean()),
        "frac_norm_above_1": float((norms > 1).mean()),
    }
