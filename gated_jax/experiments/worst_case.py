r"""Worst-case search: weights and inputs that make ``||dz[T]/dz[0]||`` of the gated cell grow.

Gradient *ascent* with optax on the per-step log-norm

.. math::

    r = \frac{1}{T} \log \Big\| \frac{\partial z[T]}{\partial z[0]} \Big\|_F ,

over ``W_x, W_c, W_z`` and the inputs ``x[1..T]`` (``z[0] = 0``, the cell without biases),
inside a bounded set: ``||W_z||_2 <= rho``, ``||W_x||_2, ||W_c||_2 <= omega``,
``|x_i[t]| <= xi``. After every Adam step the iterate is pulled back into the set (a matrix
over its bound is rescaled onto it, inputs are clipped to the box). The product is accumulated
with renormalisation (``P <- J P / ||J P||``, the logs summed), so long sequences neither
overflow nor lose the gradient. Several random restarts run at once (stacked on a leading
axis, one objective sum, one ``lax.scan`` over ascent steps, one compile).

A priori the rate cannot exceed ``log(1 + omega xi sqrt(n) rho / 2)`` (the one-step bound of
:mod:`gated_jax.experiments.analysis` with the box width ``R <= 2 omega xi sqrt(n)``). A
positive rate that persists as ``T`` grows is exploding gradients: ``||dz[T]/dz[0]|| ~ e^{rT}``.
Adam's ascent is not monotone, so each restart keeps the best iterate it has visited (by the
Frobenius objective); the best of those is re-evaluated exactly (spectral norm, float64) with
:func:`gated_jax.cell.gradient_flow` and with ``jax.jacrev`` of the plain recurrence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gated_jax._validate import (
    check_fits_in_memory,
    fail,
    finite_float,
    nonempty_sequence,
    positive_int,
)

__all__ = ["WorstCase", "worst_case_search", "log_jacobian_norm"]


@dataclasses.dataclass(frozen=True)
class WorstCase:
    """The best point of one search.

    Attributes:
      length, n, m: sequence length and widths.
      wz_norm, weight_norm, input_bound: the bounds ``rho``, ``omega``, ``xi``.
      params: the :class:`~gated_jax.cell.GatedParams` found (float64 NumPy arrays).
      xs: ``(T, n)`` inputs found; ``z0`` is zeros.
      rate: ``log ||dz[T]/dz[0]||_2 / T`` (spectral, exact, from ``gradient_flow``).
      norm: ``||dz[T]/dz[0]||_2``.
      jacrev_rel_error: relative gap between ``norm`` and the spectral norm of
        ``jax.jacrev`` of the plain recurrence's ``z[T]`` with respect to ``z[0]``.
      bound_rate: ``mean_t log(step bound)`` on the found trajectory (an upper bound on ``rate``).
      a_priori_rate: ``log(1 + omega xi sqrt(n) rho / 2)``.
      history: ``(steps, restarts)`` objective (Frobenius rate) during the ascent.
      final: the best iterate of every restart (``w_x, w_c, w_z, xs`` stacked, the one with the
        highest objective over the start and all steps), for warm starts.
    """

    length: int
    n: int
    m: int
    wz_norm: float
    weight_norm: float
    input_bound: float
    params: object
    xs: np.ndarray
    rate: float
    norm: float
    jacrev_rel_error: float
    bound_rate: float
    a_priori_rate: float
    history: np.ndarray
    final: dict = dataclasses.field(repr=False, default_factory=dict)


def log_jacobian_norm(w_x, w_c, w_z, xs, z0):
    """``log ||dz[T]/dz[0]||_F`` of the bias-free cell, with renormalised products.

    Each step and its Jacobian ``J[t] = diag(c) + diag((z[t-1] - u[t]) c (1 - c)) W_z`` come
    from :mod:`gated_jax.cell.step`; ``xs`` is ``(T, n)``.
    """
    from gated_jax.cell import GatedParams
    from gated_jax.cell import step as cell_step

    params = GatedParams(w_x, w_c, w_z)
    m = w_z.shape[0]

    def step(carry, x):
        z, p, acc = carry
        z_new, c, _, s = cell_step.step_with_factors(params, z, x)
        p = cell_step.jacobian(w_z, c, s) @ p
        nrm = jnp.sqrt(jnp.sum(p * p))
        return (z_new, p / nrm, acc + jnp.log(nrm)), None

    init = (z0, jnp.eye(m, dtype=z0.dtype), jnp.zeros((), z0.dtype))
    (_, _, acc), _ = lax.scan(step, init, xs)
    return acc


def _clip_spectral(w, bound):
    """Scale ``w`` back onto ``||w||_2 <= bound`` (``||w||_2`` from ``eigvalsh(w^T w)``, which
    compiles faster than an SVD inside the ascent's scan)."""
    gram = jnp.swapaxes(w, -1, -2) @ w
    sigma = jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(gram)[..., -1], 0.0))
    return w * jnp.minimum(1.0, bound / jnp.maximum(sigma, 1e-300))[..., None, None]


def _check_init(init, *, n: int, m: int, restarts: int) -> None:
    """``init`` must be a :attr:`WorstCase.final` dict for these widths and restarts."""
    keys = ("w_x", "w_c", "w_z", "xs")
    if not isinstance(init, dict) or set(init) != set(keys):
        got = sorted(init) if isinstance(init, dict) else type(init).__name__
        raise fail("init", got, f"a WorstCase.final dict with keys {keys}")
    r = np.shape(init["xs"])[0] if np.ndim(init["xs"]) == 3 else None
    want = {"w_x": (r, m, n), "w_c": (r, m, n), "w_z": (r, m, m)}
    shapes = {k: tuple(np.shape(v)) for k, v in init.items()}
    if r is None or shapes["xs"][2:] != (n,) or any(shapes[k] != w for k, w in want.items()):
        raise fail(
            "init",
            shapes,
            f"shaped for n = {n}, m = {m} (w_x, w_c (R, m, n); w_z (R, m, m); xs (R, T, n))",
        )
    if r != restarts:
        raise fail("restarts", restarts, f"equal to the {r} restarts stacked in `init`")


def _check_search(length, n, m, steps, restarts, seed, init, bounds: dict) -> None:
    """Every argument of :func:`worst_case_search`, and the memory its restarts need."""
    for name, v in (("length", length), ("n", n), ("m", m), ("steps", steps)):
        positive_int(name, v)
    positive_int("restarts", restarts)
    positive_int("seed", seed, minimum=0)
    if init is not None:
        _check_init(init, n=n, m=m, restarts=restarts)
    # the inputs and weights of every restart, and the ascent's (steps, restarts) history
    nbytes = 8.0 * restarts * (4 * (length * n + 2 * m * n + m * m) + steps)
    check_fits_in_memory("length", length, nbytes, "the restarts' inputs and weights")
    for name, v in bounds.items():
        finite_float(name, v, minimum=0, strict=True)


def _starts(rng, length, n, m, restarts, wz_norm, weight_norm, input_bound, init) -> dict:
    """Random starts (weights on their norm bounds, inputs at box corners), or ``init``'s."""

    def rand_mat(shape, bound):
        w = rng.standard_normal((restarts, *shape))
        return w * (bound / np.linalg.norm(w, ord=2, axis=(-2, -1)))[:, None, None]

    params = {
        "w_x": jnp.asarray(rand_mat((m, n), weight_norm)),
        "w_c": jnp.asarray(rand_mat((m, n), weight_norm)),
        "w_z": jnp.asarray(rand_mat((m, m), wz_norm)),
        "xs": jnp.asarray(input_bound * np.sign(rng.standard_normal((restarts, length, n)))),
    }
    if init is not None:
        reps = -(-length // init["xs"].shape[1])
        params = {k: jnp.asarray(v) for k, v in init.items()}
        params["xs"] = jnp.tile(params["xs"], (1, reps, 1))[:, :length]
    return params


def _ascend(params, length, steps, learning_rate, wz_norm, weight_norm, input_bound):
    """Projected Adam ascent of every restart's rate: ``(best iterates, history, rates)``."""
    import optax

    z0 = jnp.zeros((params["w_z"].shape[-1],), jnp.float64)
    rates = jax.vmap(
        lambda p: log_jacobian_norm(p["w_x"], p["w_c"], p["w_z"], p["xs"], z0) / length
    )
    opt = optax.adam(learning_rate)

    def project(p):
        return {
            "w_x": _clip_spectral(p["w_x"], weight_norm),
            "w_c": _clip_spectral(p["w_c"], weight_norm),
            "w_z": _clip_spectral(p["w_z"], wz_norm),
            "xs": jnp.clip(p["xs"], -input_bound, input_bound),
        }

    def keep_best(best, best_r, p, r):
        better = r > best_r  # NaN never wins
        pick = lambda b, q: jnp.where(better.reshape((-1,) + (1,) * (q.ndim - 1)), q, b)
        return jax.tree.map(pick, best, p), jnp.where(better, r, best_r)

    def ascent(carry, _):
        p, state, best, best_r = carry
        r, grads = jax.value_and_grad(lambda q: -jnp.sum(rates(q)))(p)
        updates, state = opt.update(grads, state, p)
        p = project(optax.apply_updates(p, updates))
        r = rates(p)
        best, best_r = keep_best(best, best_r, p, r)
        return (p, state, best, best_r), r

    @jax.jit
    def run(p):
        carry = (p, opt.init(p), p, rates(p))
        (_, _, best, _), hist = lax.scan(ascent, carry, None, length=steps)
        return best, hist

    params, history = run(params)
    return params, history, np.asarray(rates(params))


def _evaluate(gp, xs, length: int) -> tuple[float, float, float]:
    """The found point's ``(norm, jacrev norm, bound rate)``: closed form, autodiff, bound."""
    from gated_jax.cell import gated_scan, gated_step, gradient_flow
    from gated_jax.experiments.analysis import step_norm_bound

    z0 = jnp.zeros((gp.w_z.shape[-1],), jnp.float64)
    norm = float(gradient_flow(gp, xs, z0)[0])

    def plain(z):  # a Python loop of the step: jacrev is JAX's autodiff, no closed form
        for t in range(length):
            z = gated_step(gp, z, xs[t])
        return z

    jr = float(jnp.linalg.matrix_norm(jax.jacrev(plain)(z0), ord=2))
    zs = jnp.concatenate([z0[None], gated_scan(gp, xs, z0)])
    bounds = jax.vmap(lambda zp, x: step_norm_bound(gp, zp, x))(zs[:-1], xs)
    return norm, jr, float(jnp.mean(jnp.log(bounds)))


def worst_case_search(
    length: int = 64,
    *,
    n: int = 2,
    m: int = 4,
    wz_norm: float = 1.5,
    weight_norm: float = 1.0,
    input_bound: float = 3.0,
    steps: int = 300,
    restarts: int = 8,
    learning_rate: float = 0.05,
    seed: int = 0,
    init: dict | None = None,
) -> WorstCase:
    """Search for weights and inputs maximising the growth rate of ``||dz[T]/dz[0]||``.

    Bounds: ``||W_z||_2 <= wz_norm``, ``||W_x||_2, ||W_c||_2 <= weight_norm``,
    ``|x_i| <= input_bound``; the defaults contain the scalar counterexample (``W_z = 1.5``,
    ``W_x = 1``, ``W_c = 0.5``, ``|x| = 3``), which reaches rate ``log(2)/2 = 0.347``.
    Runs in float64. Random starts are drawn with ``numpy.random.default_rng(seed)``.
    Inputs start at random corners of the box (``+-xi``). ``init`` (a :attr:`WorstCase.final`
    dict of stacked restarts) warm-starts the search instead: its weights are kept and its
    inputs are repeated to length ``T`` (continuation from a shorter search); its number of
    restarts is used (``restarts`` must then equal it). Each restart returns the best iterate
    it visited, not its last one.
    """
    from gated_jax.cell import GatedParams

    bounds = dict(
        wz_norm=wz_norm,
        weight_norm=weight_norm,
        input_bound=input_bound,
        learning_rate=learning_rate,
    )
    _check_search(length, n, m, steps, restarts, seed, init, bounds)
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        starts = _starts(rng, length, n, m, restarts, wz_norm, weight_norm, input_bound, init)
        params, history, final = _ascend(
            starts, length, steps, learning_rate, wz_norm, weight_norm, input_bound
        )
        best = int(np.nanargmax(final))
        pick = {k: v[best] for k, v in params.items()}
        gp = GatedParams(pick["w_x"], pick["w_c"], pick["w_z"])
        xs = pick["xs"]
        norm, jr, bound_rate = _evaluate(gp, xs, length)
        gp_np = GatedParams(*(np.asarray(a) for a in (gp.w_x, gp.w_c, gp.w_z)))
    return WorstCase(
        length=int(length),
        n=int(n),
        m=int(m),
        wz_norm=float(wz_norm),
        weight_norm=float(weight_norm),
        input_bound=float(input_bound),
        params=gp_np,
        xs=np.asarray(xs),
        rate=float(np.log(norm) / length),
        norm=norm,
        jacrev_rel_error=abs(jr - norm) / max(abs(jr), 1e-300),
        bound_rate=bound_rate,
        a_priori_rate=float(np.log1p(weight_norm * input_bound * np.sqrt(n) * wz_norm / 2)),
        history=np.asarray(history),
        final={k: np.asarray(v) for k, v in params.items()},
    )


def worst_case_lengths(lengths: Sequence[int] = (8, 16, 32, 64), **kwargs) -> list[WorstCase]:
    """:func:`worst_case_search` at increasing lengths, each warm-started from the previous.

    Continuation: the objective's landscape gets rougher as ``T`` grows (it is itself a product
    of ``T`` Jacobians), so a long search starts from the weights and (repeated) inputs found
    for a shorter one. Returns one :class:`WorstCase` per length, in increasing order.
    """
    nonempty_sequence("lengths", lengths)
    out: list[WorstCase] = []
    for t in sorted(positive_int("lengths", v) for v in lengths):
        init = out[-1].final if out else None
        out.append(worst_case_search(t, init=init, **kwargs))
    return out
