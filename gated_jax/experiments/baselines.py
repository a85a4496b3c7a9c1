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
gated      ``W_z`` (seed 1.2)                                     ``b_c``, the gate's bias
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
    inp, rec, xs = [], [], []
    for s in seeds:
        rng = np.random.default_rng(int(s))
        inp.append(rng.standard_normal((NUM_MATS, m, n)))
        r = rng.standard_normal((NUM_MATS, m, m))
        rec.append(r / np.linalg.norm(r, ord=2, axis=(-2, -1))[:, None, None])
        xs.append(rng.standard_normal((length, n)))
    return {"input": np.stack(inp), "rec": np.stack(rec), "xs": np.stack(xs)}


NORMS = ("auto", "svd", "power")


def check_norm(norm) -> str:
    """Validate a spectral-norm method name (one of :data:`NORMS`)."""
    if not isinstance(norm, str) or norm not in NORMS:
        raise ValueError(f"`norm` (={norm!r}) must be one of {', '.join(map(repr, NORMS))}")
    return norm


def resolve_norm(norm: str, platform: str | None = None) -> str:
    """The method ``"auto"`` stands for on ``platform`` (default: JAX's default backend).

    ``"svd"`` on CPU, ``"power"`` on GPU and TPU: measured with ``benchmarks/sweep.py`` (64
    gated-cell configurations, T = 64, m = 16, float64, one vmapped call), the power method took
    1.98 ms against the SVD's 8.74 ms on an H200, while on 2 CPU cores the two are within noise
    of each other (LAPACK's per-matrix SVD against batched small matmuls). ``"svd"`` and
    ``"power"`` are returned unchanged.
    """
    check_norm(norm)
    if norm != "auto":
        return norm
    platform = jax.default_backend() if platform is None else platform
    return "svd" if platform == "cpu" else "power"


def _default_tol(dtype) -> float:
    return 1e-12 if jnp.dtype(dtype) == jnp.dtype(jnp.float64) else 1e-5


def _small_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` for stacks of small matrices as ``d`` fused multiply-adds (``d <= 32``).

    XLA:CPU runs a batched ``dot`` of many ``16 x 16`` matrices as one small GEMM per matrix;
    the unrolled sum is one elementwise loop fusion over the whole stack, measured ~2.4x faster
    for ``4160 x 16 x 16``. Larger ``d`` uses ``@``.
    """
    d = a.shape[-1]
    if d > 32:
        return a @ b
    out = a[..., :, 0, None] * b[..., None, 0, :]
    for k in range(1, d):
        out = out + a[..., :, k, None] * b[..., None, k, :]
    return out


def _power_norms(mats: jax.Array, tol: float, max_squarings: int) -> jax.Array:
    r"""``||P||_2`` for ``mats (..., a, b)`` by repeated squaring of the Gram matrix; see
    :func:`spectral_norms`."""
    d = mats.shape[-1]
    scale = jnp.max(jnp.abs(mats), axis=(-2, -1))
    zero = scale == 0
    scale = jnp.where(zero, 1, scale)
    p = mats / scale[..., None, None]
    gram = _small_matmul(jnp.swapaxes(p, -1, -2), p)  # (..., b, b), entries <= a
    t0 = jnp.where(zero, 1, jnp.trace(gram, axis1=-2, axis2=-1))
    b0 = gram / t0[..., None, None]
    log0 = jnp.log(t0)
    half = jnp.asarray(0.5, mats.dtype)

    def square(c):
        j, b, t, logl, _, _ = c  # t = tr(B_j^2) = ||B_j||_F^2 (B_j symmetric)
        bn = _small_matmul(b, b) / t[..., None, None]
        w = half ** (j + 1).astype(b.dtype)
        logl = logl + w * jnp.log(t)
        # the rest is w * log lambda_1(bn); two estimates with a-posteriori error bounds:
        tn = jnp.sum(bn * bn, axis=(-2, -1))
        err_bracket = 0.25 * jnp.abs(jnp.log(tn))  # log lambda_1 in [log tn, log tn / 2]
        delta = jnp.sqrt(jnp.sum((bn - b) ** 2, axis=(-2, -1)))
        err_fixed = jnp.where(d * delta <= 0.5, 2 * d * delta, jnp.inf)  # near B = P / r
        use_fixed = err_fixed < err_bracket
        est = logl + w * jnp.where(use_fixed, jnp.log(t), 0.75 * jnp.log(tn))
        err = w * jnp.where(use_fixed, err_fixed, err_bracket)
        return j + 1, bn, tn, logl, est, err

    def cond(c):
        return (c[0] < max_squarings) & jnp.any(c[5] > tol)

    def body(c):  # two squarings per loop trip: half the loop overhead, one extra at most
        return square(square(c))

    t_b0 = jnp.sum(b0 * b0, axis=(-2, -1))
    init = (jnp.asarray(0), b0, t_b0, log0, log0, jnp.full(log0.shape, jnp.inf, log0.dtype))
    est = lax.while_loop(cond, body, init)[4]
    return jnp.where(zero, 0, scale * jnp.exp(0.5 * est))


def spectral_norms(
    mats: jax.Array, *, norm: str = "svd", tol: float | None = None, max_squarings: int = 40
) -> jax.Array:
    r"""Spectral norms ``||P||_2 = sigma_max(P)`` of a stack of matrices ``(..., a, b)``.

    ``norm="svd"``: ``jnp.linalg.matrix_norm(ord=2)``, the largest singular value from an SVD
    (exact to rounding; one LAPACK call per matrix on CPU, so ``vmap`` cannot batch it there).

    ``norm="power"``: the power method on the Gram matrix ``A = P^T P / s^2`` (``s = max|P_ij|``,
    which keeps ``A`` finite in float32), accelerated by repeated squaring: with
    ``B_0 = A / tr A`` and ``B_{j+1} = B_j^2 / tr(B_j^2)``, every ``B_j`` has trace 1 and

    .. math::

        \log \lambda_1(A) = \log \operatorname{tr} A
            + \sum_{i<j} 2^{-(i+1)} \log \operatorname{tr}(B_i^2) + 2^{-j} \log \lambda_1(B_j).

    The last term is estimated with an a-posteriori error bound, and squaring stops when the
    bound is below ``tol`` for every matrix (or after ``max_squarings``): either from
    ``t = tr(B_j^2) <= lambda_1(B_j) <= t^{1/2}`` (midpoint ``3/4 log t``, error
    ``<= |log t| / 4``), or, when ``B`` has converged to a scaled projector ``P / r`` (a top
    singular value of multiplicity ``r``, e.g. the identity at lag 0), from Weyl's inequality,
    ``|log lambda_1 - log t| <= 2 d ||B_{j+1} - B_j||_F``. Both errors carry the factor
    ``2^{-j}``, so the error falls doubly exponentially once the top singular value separates
    (``(sigma_2 / sigma_1)^{2^{j+1}}``) and like ``2^{-j}`` otherwise; at most 40 squarings
    suffice for ``d <= 80`` at the float64 default. The bound neglects rounding, which adds
    ``O(d eps)``: ``log sigma_1`` is accurate to ``tol / 2 + O(d eps)``.

    Accuracy against the SVD path (measured; ``tests/test_experiments_fast_norm.py`` asserts
    ``<= 1e-12`` on matrices and ``<= 1e-10`` on sweeps): relative error <= 5e-14 on 4000
    Gaussian ``4 x 4``, ``16 x 16`` and ``32 x 32`` matrices, <= 1e-12 on constructed
    near-ties (``sigma_2 / sigma_1 = 1 - 1e-12 .. 0.7``, multiplicities 1, 2, 5, the identity),
    <= 5e-13 on the default :func:`~gated_jax.experiments.flow_sweep` grid of every family
    (norms from 1e-114 to 5e9; growth rates equal to 2e-16); float32 <= 3e-6.

    Speed. Every step is an (unrolled) batched matmul, a trace and elementwise work, with no
    per-matrix LAPACK call, so ``vmap`` turns it into batched ops. On CPU (``d = 16``,
    ``benchmarks/sweep.py``) it makes a jit'd per-configuration function ~1.5x faster than the
    SVD one, but one vmapped call over 64 configurations is not faster than LAPACK: the stack of
    ``64 x 65`` matrices leaves the cache and the loop runs until the slowest matrix converges
    (~14 squarings); chunks of 16 configurations recover part of it. ``"power"`` runs a
    ``lax.while_loop``, so it is not reverse-mode differentiable; use ``"svd"`` under ``grad``.
    On an H200 the vmapped call is 4.4x faster than the SVD's (1.98 vs 8.74 ms for the 64
    configurations of ``benchmarks/sweep.py``), hence ``"auto"``. In float32 on a GPU or TPU,
    JAX's default matmul precision (TF32, bfloat16 passes) limits the products and the
    squarings to ~1e-3 relative; ask for ``jax.default_matmul_precision("highest")`` or use
    float64 for more.

    Args:
      mats: ``(..., a, b)`` float32/float64 matrices (products of Jacobians).
      norm: ``"svd"``, ``"power"`` or ``"auto"`` (:func:`resolve_norm`: ``"svd"`` on CPU,
        ``"power"`` on GPU/TPU).
      tol: bound on the error of ``log sigma_1^2`` for ``"power"`` (default ``1e-12`` in
        float64, ``1e-5`` in float32).
      max_squarings: cap on the number of squarings for ``"power"``.

    Returns:
      ``(...)`` spectral norms, in the dtype of ``mats``.
    """
    if resolve_norm(norm) == "svd":
        return jnp.linalg.matrix_norm(mats, ord=2)
    tol = _default_tol(mats.dtype) if tol is None else float(tol)
    return _power_norms(mats, tol, int(max_squarings))


def reverse_products(jacs: jax.Array) -> jax.Array:
    r"""``P[k] = J[T] J[T-1] ... J[k+1]`` for ``k = 0..T`` from ``jacs = J[1..T]`` ``(T, d, d)``.

    A reverse ``lax.scan`` with ``P[T] = I``, ``P[k] = P[k+1] J[k+1]`` (one ``d x d`` matmul per
    step, the same order as :func:`gated_jax.cell.gradient_flow`); returns ``(T + 1, d, d)``.
    """
    eye = jnp.eye(jacs.shape[-1], dtype=jacs.dtype)

    def bwd(p, jac):
        p = p @ jac
        return p, p

    _, prods = lax.scan(bwd, eye, jacs, reverse=True)
    return jnp.concatenate([prods, eye[None]], axis=0)


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


# ---- the gated cell (seed 1.2), through gated_jax.cell ------------------------------------


def _gated_init(base, rho, bias):
    from gated_jax.cell import GatedParams

    w_z = base["rec"][0] * rho
    b_c = jnp.full(w_z.shape[:1], bias, w_z.dtype)
    return GatedParams(_inputs(base, 0), _inputs(base, 1), w_z, b_c)


def gated_plain_step(params, z, x):
    """The seed's formula written out: ``c = sigmoid(W_c x + W_z z + b_c)``,
    ``z' = c z + (1 - c) (W_x x + b_x)``; unbatched."""
    pre = params.w_c @ x + params.w_z @ z
    if params.b_c is not None:
        pre = pre + params.b_c
    u = params.w_x @ x
    if params.b_x is not None:
        u = u + params.b_x
    c = jax.nn.sigmoid(pre)
    return c * z + (1 - c) * u


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
