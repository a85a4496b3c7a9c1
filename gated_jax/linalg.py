r"""Shared numerics of the library core: spectral norms of matrix stacks, products of Jacobians.

* :func:`spectral_norms`: ``sigma_max`` of every matrix of a stack, from singular values
  (``"svd"``) or by repeated squaring of the Gram matrix (``"power"``, pure batched matmuls);
  :func:`resolve_norm` picks one per platform for ``"auto"``.
* :func:`reverse_products`: ``P[k] = J[T] ... J[k+1]`` for every ``k``, the sensitivities of a
  final state to each earlier one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from gated_jax._validate import choice, fail, finite_float, positive_int

__all__ = ["NORMS", "check_norm", "resolve_norm", "reverse_products", "spectral_norms"]

NORMS = ("auto", "svd", "power")
"""The ``norm`` options of :func:`spectral_norms`."""


def check_norm(norm) -> str:
    """Validate a spectral-norm method name.

    Args:
      norm: one of :data:`NORMS`: ``"auto"``, ``"svd"`` or ``"power"``.

    Returns:
      ``norm``, unchanged.

    Raises:
      ValueError: naming ``norm`` when it is not one of :data:`NORMS`.

    Examples:
      >>> from gated_jax.linalg import check_norm
      >>> check_norm("power")
      'power'
    """
    return choice("norm", norm, NORMS)


def resolve_norm(norm: str, platform: str | None = None, num_devices: int = 1) -> str:
    """The method ``"auto"`` stands for on ``platform`` (default: JAX's default backend).

    ``"svd"`` on one CPU device, where LAPACK's per-matrix SVD and the batched squarings are
    within noise of each other; ``"power"`` on GPU and TPU, where the batched matmuls are
    several times faster (``benchmarks/sweep.py`` has the figures), and on several CPU devices,
    where sharded programs calling LAPACK's SVD were seen to stall. ``"svd"`` and ``"power"``
    are returned unchanged.

    Args:
      norm: one of :data:`NORMS`.
      platform: ``"cpu"``, ``"gpu"``, ``"tpu"``, ...; ``None`` reads ``jax.default_backend()``.
      num_devices: how many devices the computation is sharded over.

    Returns:
      ``"svd"`` or ``"power"``.

    Raises:
      ValueError: naming ``norm`` when it is not one of :data:`NORMS`.

    Examples:
      >>> from gated_jax.linalg import resolve_norm
      >>> resolve_norm("auto", "cpu"), resolve_norm("auto", "gpu"), resolve_norm("power")
      ('svd', 'power', 'power')
      >>> resolve_norm("auto", "cpu", num_devices=4)
      'power'
    """
    check_norm(norm)
    if norm != "auto":
        return norm
    platform = jax.default_backend() if platform is None else platform
    return "svd" if platform == "cpu" and num_devices == 1 else "power"


def _default_tol(dtype) -> float:
    return 1e-12 if jnp.dtype(dtype) == jnp.dtype(jnp.float64) else 1e-5


def _small_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` for stacks of small matrices as ``d`` fused multiply-adds (``d <= 32``).

    XLA:CPU runs a batched ``dot`` of many ``16 x 16`` matrices as one small GEMM per matrix;
    the unrolled sum is one elementwise loop fusion over the whole stack. Larger ``d`` uses
    ``@``.
    """
    d = a.shape[-1]
    if d > 32:
        return a @ b
    out = a[..., :, 0, None] * b[..., None, 0, :]
    for k in range(1, d):
        out = out + a[..., :, k, None] * b[..., None, k, :]
    return out


def _power_norms(mats: jax.Array, tol: float, max_squarings: int) -> jax.Array:
    """``||P||_2`` for ``mats (..., a, b)`` by repeated squaring of the Gram matrix."""
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


def _check_mats(mats) -> jax.Array:
    if not hasattr(mats, "shape") or not hasattr(mats, "dtype"):
        raise fail("mats", mats, "a JAX or NumPy array of shape (..., a, b)")
    if len(mats.shape) < 2:
        raise fail("mats", mats, "a stack of matrices, shape (..., a, b)")
    dt = jnp.result_type(mats)
    if jnp.issubdtype(dt, jnp.complexfloating) or dt == jnp.bool_:
        raise fail("mats", mats, "a real array")
    if not jnp.issubdtype(dt, jnp.floating):
        mats = jnp.asarray(mats, jnp.result_type(float))
    return jnp.asarray(mats)


def spectral_norms(
    mats: jax.Array, *, norm: str = "svd", tol: float | None = None, max_squarings: int = 40
) -> jax.Array:
    r"""Spectral norms ``||P||_2 = sigma_max(P)`` of a stack of matrices ``(..., a, b)``.

    ``norm="svd"``: the largest singular value (``jnp.linalg.matrix_norm(ord=2)``), exact to
    rounding; one LAPACK call per matrix on CPU.

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
    singular value of multiplicity ``r``, e.g. the identity), from Weyl's inequality,
    ``|log lambda_1 - log t| <= 2 d ||B_{j+1} - B_j||_F``. Both errors carry the factor
    ``2^{-j}``, so the error falls doubly exponentially once the top singular value separates
    and like ``2^{-j}`` otherwise; 40 squarings suffice for ``d <= 80`` at the float64 default.
    The bound neglects rounding, which adds ``O(d eps)``. Every step is a batched matmul, so
    ``vmap`` batches it; it runs a ``lax.while_loop``, so it is not reverse-mode
    differentiable (use ``"svd"`` under ``grad``). In float32 on GPU/TPU the default matmul
    precision limits it to ~1e-3 relative; use ``jax.default_matmul_precision("highest")``.

    Args:
      mats: ``(..., a, b)`` real matrices (integers are promoted to the default float dtype).
      norm: ``"svd"``, ``"power"`` or ``"auto"`` (:func:`resolve_norm`).
      tol: for ``"power"``, a positive finite bound on the error of ``log sigma_1^2``
        (default ``1e-12`` in float64, ``1e-5`` otherwise).
      max_squarings: for ``"power"``, a positive int cap on the number of squarings.

    Returns:
      ``(...)`` spectral norms, in the dtype of ``mats``.

    Raises:
      ValueError: for a bad ``norm``, a non-finite or non-positive ``tol``, a non-positive
        ``max_squarings``, or ``mats`` that is not a real stack of matrices.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gated_jax.linalg import spectral_norms
      >>> mats = jnp.array([[[3.0, 0.0], [0.0, -4.0]], [[0.0, 2.0], [0.0, 0.0]]])
      >>> spectral_norms(mats)
      Array([4., 2.], dtype=float32)
      >>> bool(jnp.allclose(spectral_norms(mats, norm="power"), spectral_norms(mats)))
      True

    References:
      G. H. Golub, C. F. Van Loan, *Matrix Computations*, 4th ed., Johns Hopkins University
      Press, 2013: section 2.4 (singular values, the 2-norm), section 8.2 (the power method)
      and Weyl's inequality for symmetric perturbations (section 8.1).
    """
    method = resolve_norm(norm)
    tol = finite_float("tol", tol, minimum=0.0, strict=True, allow_none=True)
    squarings = int(positive_int("max_squarings", max_squarings) or 0)
    mats = _check_mats(mats)
    if method == "svd":
        return jnp.linalg.matrix_norm(mats, ord=2)
    tol = _default_tol(mats.dtype) if tol is None else tol
    return _power_norms(mats, tol, squarings)


def reverse_products(jacs: jax.Array) -> jax.Array:
    r"""All suffix products ``P[k] = J[T] J[T-1] ... J[k+1]``, ``k = 0..T``.

    .. math::

        P[T] = I, \qquad P[k] = P[k+1] \, J[k+1],

    one ``d x d`` matmul per step of a reverse ``lax.scan``. For the Jacobians of a recurrence,
    ``P[k] = dz[T]/dz[k]``.

    Args:
      jacs: ``J[1..T]``, shape ``(..., T, d, d)``.

    Returns:
      ``(..., T + 1, d, d)``; the last matrix is the identity.

    Raises:
      ValueError: naming ``jacs`` when it is not a stack of square matrices.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gated_jax.linalg import reverse_products
      >>> reverse_products(jnp.array([[[2.0]], [[3.0]]]))[:, 0, 0]  # J2 J1, J2, I
      Array([6., 3., 1.], dtype=float32)

    References:
      R. Pascanu, T. Mikolov, Y. Bengio, "On the difficulty of training recurrent neural
      networks", ICML 2013 (the products of Jacobians in backpropagation through time).
    """
    if not hasattr(jacs, "shape") or len(jacs.shape) < 3 or jacs.shape[-1] != jacs.shape[-2]:
        raise fail("jacs", jacs, "a stack of square matrices, shape (..., T, d, d)")
    jacs = jnp.asarray(jacs)
    eye = jnp.eye(jacs.shape[-1], dtype=jacs.dtype)
    eye = jnp.broadcast_to(eye, jacs.shape[:-3] + eye.shape)

    def bwd(p, jac):
        p = p @ jac
        return p, p

    _, prods = lax.scan(bwd, eye, jnp.moveaxis(jacs, -3, 0), reverse=True)
    return jnp.moveaxis(jnp.concatenate([prods, eye[None]], axis=0), 0, -3)
