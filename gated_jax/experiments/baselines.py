r"""Cell families for the gradient-flow sweeps: the gated cell and its baselines.

Every family turns one *configuration* -- random directions drawn from a seed, a
recurrent-weight scale ``rho``, a gate bias ``b`` -- into parameters, and knows its one-step map
``z[t] = f(z[t-1], x[t])`` on a flat state vector. The sweep measures

.. math::

    g(L) = \Big\| \frac{\partial z[T]}{\partial z[T-L]} \Big\|_2
         = \big\| J[T] J[T-1] \cdots J[T-L+1] \big\|_2, \qquad
    J[t] = \frac{\partial z[t]}{\partial z[t-1]},

for every lag ``L = 0..T``, on the trajectory driven by ``x[t] = sigma * xi[t]`` from
``z[0] = 0``.

Families and what ``rho`` and ``b`` mean for each:

=========  =====================================================  ==============================
family     recurrent weights scaled to spectral norm ``rho``      ``b`` (the "gate bias") is
=========  =====================================================  ==============================
gated      ``W_z`` (:mod:`gated_jax.cell`)                        ``b_c``, the gate's bias
tanh       ``W_h`` in ``h = tanh(W_h h + W_x x + b)``             the pre-activation bias
gru        each of Flax ``GRUCell``'s ``hr, hz, hn`` kernels      bias of the update gate ``z``
lstm       each of Flax ``LSTMCell``'s ``hi, hf, hg, ho``         bias of the forget gate ``f``
=========  =====================================================  ==============================

The gate that ``b`` shifts is the *keep* gate in every gated family (``c`` multiplies
``z[t-1]``; Flax's GRU keeps ``z * h``; the LSTM keeps ``f * c``), so a large positive ``b``
means "remember" in all three. The plain tanh RNN has no gate; its only bias is used, which
moves units into saturation. Other biases are zero.

Random draws come from :func:`random_bases` (NumPy's ``default_rng(seed)``, identical on every
platform): four ``(m, n)`` standard-normal input matrices (used divided by ``sqrt(n)``, the
LeCun-normal variance Flax uses), four ``(m, m)`` recurrent directions normalised to unit
spectral norm, and the standard-normal input sequence ``xi``. So one seed gives every family the
same inputs and the same recurrent direction at every ``rho``. The LSTM's state is ``(c, h)``, a
``2m`` vector; its Jacobian is the full ``2m x 2m`` one. Flax kernels are ``(in, out)``; the
directions enter them transposed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gated_jax._validate import check_fits_in_memory, nonempty_sequence, positive_int
from gated_jax.linalg import NORMS as NORMS
from gated_jax.linalg import check_norm as check_norm
from gated_jax.linalg import resolve_norm as resolve_norm
from gated_jax.linalg import reverse_products as reverse_products
from gated_jax.linalg import spectral_norms as spectral_norms

__all__ = [
    "CellFamily",
    "FAMILIES",
    "NORMS",
    "resolve_norm",
    "random_bases",
    "reverse_products",
    "spectral_norms",
    "state_flow",
    "tanh_step",
]

NUM_MATS = 4


def random_bases(seeds: Sequence[int], *, n: int, m: int, length: int) -> dict[str, np.ndarray]:
    """Host-side standard-normal draws per seed, stacked on a leading seed axis.

    Returns ``{"input": (R, 4, m, n), "rec": (R, 4, m, m), "xs": (R, length, n)}`` in float64;
    ``rec`` matrices have unit spectral norm. Drawn with ``numpy.random.default_rng(seed)`` in
    that order, so a shorter ``length`` gives a prefix of the same inputs.
    """
    seeds = [positive_int("seeds", s, minimum=0) for s in nonempty_sequence("seeds", seeds)]
    n, m = positive_int("n", n), positive_int("m", m)
    length = positive_int("length", length, minimum=0)
    nbytes = 8.0 * len(seeds) * (NUM_MATS * m * (n + m) + length * n)
    check_fits_in_memory("m", m, nbytes, "the random draws")
    inp, rec, xs = [], [], []
    for s in seeds:
        rng = np.random.default_rng(int(s))
        inp.append(rng.standard_normal((NUM_MATS, m, n)))
        r = rng.standard_normal((NUM_MATS, m, m))
        rec.append(r / np.linalg.norm(r, ord=2, axis=(-2, -1))[:, None, None])
        xs.append(rng.standard_normal((length, n)))
    return {"input": np.stack(inp), "rec": np.stack(rec), "xs": np.stack(xs)}


def state_flow(
    step: Callable, params: Any, xs: jax.Array, z0: jax.Array, *, norm: str = "svd"
) -> jax.Array:
    r"""Spectral norms of ``dz[T]/dz[k]``, ``k = 0..T``, for any cell, by forward-mode autodiff.

    ``step(params, z, x) -> z`` is one step on a flat state ``(d,)``; ``xs`` is ``(T, n)``.
    A forward ``lax.scan`` runs the recurrence and stores ``J[t] = jacfwd(step)(z[t-1], x[t])``
    (``d`` JVPs each); a reverse scan forms ``P[k] = P[k+1] J[k+1]`` with ``P[T] = I``
    (:func:`reverse_products`), and the result is ``||P[k]||_2``, shape ``(T + 1,)``, by
    :func:`spectral_norms` with method ``norm`` (``"svd"``, the default, from singular values;
    ``"power"``, batched repeated squaring). This is the reference the gated cell's closed-form
    ``gradient_flow`` is checked against.
    """
    check_norm(norm)

    def fwd(z, x):
        jac = jax.jacfwd(step, argnums=1)(params, z, x)
        return step(params, z, x), jac

    _, jacs = lax.scan(fwd, z0, xs)
    return spectral_norms(reverse_products(jacs), norm=norm)


@dataclasses.dataclass(frozen=True)
class CellFamily:
    """A cell family for the sweeps.

    Attributes:
      name: short name (``gated``, ``tanh``, ``gru``, ``lstm``).
      init: ``init(base, rho, bias) -> params``; ``base`` holds one seed's ``input`` ``(4, m, n)``
        and ``rec`` ``(4, m, m)`` draws (see :func:`random_bases`), already in the compute dtype;
        ``rho`` and ``bias`` may be traced scalars.
      step: ``step(params, z, x) -> z`` on a flat state vector.
      state_size: ``state_size(m) -> d``, the length of the flat state.
      flow: ``flow(params, xs, z0, norm="svd") -> (T + 1,)``, norms of ``dz[T]/dz[k]``
        (``norm`` picks the method of :func:`spectral_norms`).
    """

    name: str
    init: Callable
    step: Callable
    state_size: Callable[[int], int]
    flow: Callable


def _inputs(base, i):
    w = base["input"][i]
    return w / jnp.sqrt(jnp.asarray(w.shape[-1], w.dtype))


# ---- the gated cell, through gated_jax.cell ------------------------------------------------


def _gated_init(base, rho, bias):
    from gated_jax.cell import GatedParams

    w_z = base["rec"][0] * rho
    b_c = jnp.full(w_z.shape[:1], bias, w_z.dtype)
    return GatedParams(_inputs(base, 0), _inputs(base, 1), w_z, b_c)


def gated_plain_step(params, z, x):
    """One step of the gated cell on an unbatched state ``(m,)`` and input ``(n,)``.

    :func:`gated_jax.cell.gated_step` itself: the family's step for the sweeps and for
    autodiff references of its Jacobians.
    """
    from gated_jax.cell import gated_step

    return gated_step(params, z, x)


def _gated_flow(params, xs, z0, norm="svd"):
    """``norm="svd"``: :func:`gated_jax.cell.gradient_flow` itself; ``"power"``: the same
    closed-form Jacobians (:func:`gated_jax.cell.state_jacobians`) and products, batched norms."""
    from gated_jax.cell import gradient_flow, state_jacobians

    if resolve_norm(norm) == "svd":
        return gradient_flow(params, xs, z0)
    return spectral_norms(reverse_products(state_jacobians(params, xs, z0)), norm=norm)


# ---- vanilla tanh RNN ---------------------------------------------------------------------


def tanh_step(params, h, x):
    """``h[t] = tanh(W_h h[t-1] + W_x x[t] + b)``; ``params = (w_h, w_x, b)``."""
    w_h, w_x, b = params
    return jnp.tanh(w_h @ h + w_x @ x + b)


def _tanh_init(base, rho, bias):
    w_h = base["rec"][0] * rho
    return (w_h, _inputs(base, 0), jnp.full(w_h.shape[:1], bias, w_h.dtype))


# ---- Flax GRUCell / LSTMCell --------------------------------------------------------------


def _flax_cell(kind: str, m: int, dtype):
    import flax.linen as nn

    cls = nn.GRUCell if kind == "gru" else nn.LSTMCell
    return cls(features=m, dtype=dtype, param_dtype=dtype)


def _gru_init(base, rho, bias):
    """Flax ``GRUCell`` params: ``ir, iz, in`` (kernel ``(n, m)`` + bias), ``hr, hz`` (kernel),
    ``hn`` (kernel + bias)."""
    m = base["rec"].shape[-1]
    dt = base["rec"].dtype
    zeros = jnp.zeros((m,), dt)
    p = {}
    for i, name in enumerate(("ir", "iz", "in")):
        p[name] = {"kernel": _inputs(base, i).T, "bias": zeros}
    p["iz"]["bias"] = jnp.full((m,), bias, dt)
    for i, name in enumerate(("hr", "hz", "hn")):
        p[name] = {"kernel": (base["rec"][i] * rho).T}
    p["hn"]["bias"] = zeros
    return p


def _lstm_init(base, rho, bias):
    """Flax ``LSTMCell`` params: ``ii, if, ig, io`` (kernel ``(n, m)``), ``hi, hf, hg, ho``
    (kernel ``(m, m)`` + bias)."""
    m = base["rec"].shape[-1]
    dt = base["rec"].dtype
    p = {}
    for i, g in enumerate("ifgo"):
        p["i" + g] = {"kernel": _inputs(base, i).T}
        p["h" + g] = {"kernel": (base["rec"][i] * rho).T, "bias": jnp.zeros((m,), dt)}
    p["hf"]["bias"] = jnp.full((m,), bias, dt)
    return p


def _flax_step(kind: str):
    def step(params, z, x):
        if kind == "gru":
            new, _ = _flax_cell(kind, z.shape[-1], z.dtype).apply({"params": params}, z, x)
            return new
        m = z.shape[-1] // 2
        cell = _flax_cell(kind, m, z.dtype)
        (c, h), _ = cell.apply({"params": params}, (z[:m], z[m:]), x)
        return jnp.concatenate([c, h])

    return step


def _autodiff_flow(step):
    return lambda params, xs, z0, norm="svd": state_flow(step, params, xs, z0, norm=norm)


_gru_step = _flax_step("gru")
_lstm_step = _flax_step("lstm")

FAMILIES: dict[str, CellFamily] = {
    "gated": CellFamily("gated", _gated_init, gated_plain_step, lambda m: m, _gated_flow),
    "tanh": CellFamily("tanh", _tanh_init, tanh_step, lambda m: m, _autodiff_flow(tanh_step)),
    "gru": CellFamily("gru", _gru_init, _gru_step, lambda m: m, _autodiff_flow(_gru_step)),
    "lstm": CellFamily("lstm", _lstm_init, _lstm_step, lambda m: 2 * m, _autodiff_flow(_lstm_step)),
}
