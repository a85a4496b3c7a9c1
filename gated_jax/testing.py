r"""Reference implementations and the error measure that the tests and the verify rows use.

* :func:`numpy_loop`: the gated cell's equations written out, one step at a time, in NumPy
  float64: independent of JAX and of :mod:`gated_jax.cell`.
* :func:`plain_scan`: the obvious JAX implementation, a ``lax.scan`` whose step is
  :func:`gated_jax.cell.gated_step` (all three matmuls inside the step), differentiated by JAX's
  own autodiff: the reference for the closed-form backward pass, and the benchmarks' baseline.
* :func:`max_rel_error`: the scale-free error of a result against a reference, for pytrees.
* :func:`numpy_conv` / :func:`numpy_conv_transpose`: a (grouped, strided, dilated, padded)
  convolution and its adjoint by their definitions, direct loops in NumPy float64, in the
  ``NC...`` / ``(O, I/g, *k)`` layouts the frameworks document: the references of the
  framework ports.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "dense_params",
    "dense_recurrent",
    "max_rel_error",
    "numpy_conv",
    "numpy_conv_transpose",
    "numpy_loop",
    "plain_scan",
]


def dense_recurrent(w_z) -> np.ndarray | None:
    """A structured recurrent weight as its dense ``(m, m)`` matrix, in NumPy float64.

    ``(m, m)`` is returned as it is, ``(m,)`` (diagonal) as ``diag(w_z)``, ``(H, h, h)`` (heads)
    as the block-diagonal matrix with ``w_z[k]`` at rows and columns ``k h:(k+1) h``; ``None``
    stays ``None``. Written independently of :mod:`gated_jax.cell` (a reference).

    Examples:
      >>> import numpy as np
      >>> from gated_jax.testing import dense_recurrent
      >>> dense_recurrent(np.array([1.0, 2.0]))
      array([[1., 0.],
             [0., 2.]])
      >>> dense_recurrent(np.ones((2, 1, 1))).shape
      (2, 2)
    """
    if w_z is None:
        return None
    w = np.asarray(w_z, np.float64)
    if w.ndim == 1:
        return np.diag(w)
    if w.ndim == 3:
        H, h, _ = w.shape
        out = np.zeros((H * h, H * h))
        for k in range(H):
            out[k * h : (k + 1) * h, k * h : (k + 1) * h] = w[k]
        return out
    return w


def dense_params(params):
    """``params`` with its ``w_z`` expanded to the dense matrix (:func:`dense_recurrent`), as
    JAX arrays of ``w_z``'s dtype: the same cell, for references that know only dense ``W_z``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gated_jax.cell import init_gated_params
      >>> from gated_jax.testing import dense_params
      >>> p = init_gated_params(jax.random.key(0), 3, 4, recurrent_gate="heads", heads=2)
      >>> dense_params(p).w_z.shape
      (4, 4)
    """
    if params.w_z is None or np.ndim(params.w_z) == 2:
        return params
    dt = jnp.result_type(params.w_z)
    return params._replace(w_z=jnp.asarray(dense_recurrent(params.w_z), dt))


def max_rel_error(actual, expected) -> float:
    r"""The largest error relative to the reference's scale, over all leaves of two pytrees.

    .. math::

        \max_{\text{leaves}} \frac{\max_i |a_i - e_i|}{\max(\max_i |e_i|, 10^{-300})}

    A shape mismatch, a different number of leaves, or a NaN/inf anywhere is ``inf`` (never a
    match); empty leaves are skipped.

    Args:
      actual: a pytree of arrays.
      expected: a pytree of the same structure.

    Returns:
      A Python float.

    Examples:
      >>> import numpy as np
      >>> from gated_jax.testing import max_rel_error
      >>> max_rel_error(np.array([1.0, 2.5]), np.array([1.0, 2.0]))
      0.25
      >>> max_rel_error(np.zeros(2), np.zeros(3))
      inf
    """
    la, le = jax.tree.leaves(actual), jax.tree.leaves(expected)
    if len(la) != len(le):
        return float("inf")
    worst = 0.0
    for a, e in zip(la, le, strict=True):
        a = np.asarray(a, dtype=np.float64)
        e = np.asarray(e, dtype=np.float64)
        if a.shape != e.shape:
            return float("inf")
        if e.size == 0:
            continue
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(e))):
            return float("inf")
        scale = max(float(np.max(np.abs(e))), 1e-300)
        worst = max(worst, float(np.max(np.abs(a - e))) / scale)
    return worst


def plain_scan(params, xs, z0=None, *, seq_lengths=None, reverse=False, remat=False):
    """The gated cell as a plain ``lax.scan`` of :func:`gated_jax.cell.gated_step`.

    Args:
      params: a :class:`gated_jax.cell.GatedParams` (any structure of ``w_z``: the step is
        :func:`gated_jax.cell.gated_step`; :func:`dense_params` gives the dense cell).
      xs: ``(B, T, n)`` batch-first inputs.
      z0: ``(B, m)``; ``None`` means zeros.
      seq_lengths: optional ``(B,)`` ints: steps ``t >= length`` hold the state.
      reverse: run time backwards.
      remat: wrap the step in ``jax.checkpoint``.

    Returns:
      ``(B, T, m)`` states.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gated_jax.cell import gated_scan, init_gated_params
      >>> from gated_jax.testing import max_rel_error, plain_scan
      >>> p = init_gated_params(jax.random.key(0), 3, 4)
      >>> xs = jax.random.normal(jax.random.key(1), (2, 6, 3))
      >>> max_rel_error(plain_scan(p, xs), gated_scan(p, xs)) < 1e-5
      True
    """
    from gated_jax.cell import gated_step

    B, T, _ = xs.shape
    m = params.w_x.shape[0]
    z0 = jnp.zeros((B, m), xs.dtype) if z0 is None else z0
    lengths = jnp.full((B,), T) if seq_lengths is None else seq_lengths

    def step(z, inp):
        x, t = inp
        z_new = jnp.where((t < lengths)[:, None], gated_step(params, z, x), z)
        return z_new, z_new

    if remat:
        step = jax.checkpoint(step)
    _, zs = lax.scan(step, z0, (jnp.swapaxes(xs, 0, 1), jnp.arange(T)), reverse=reverse)
    return jnp.swapaxes(zs, 0, 1)


def _sigmoid(x):
    """``1 / (1 + e^-x)`` without overflow and accurate for large ``|x|``."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def numpy_loop(params, xs, z0=None, *, seq_lengths=None, reverse=False) -> np.ndarray:
    r"""The cell's equations, step by step, in NumPy float64.

    .. math::

        c = \sigma(W_c x[t] + W_z z + b_c), \qquad z \leftarrow c z + (1 - c)(W_x x[t] + b_x)

    (``W_z = None`` drops the recurrent term; a diagonal or head ``W_z`` is expanded to its
    dense matrix by :func:`dense_recurrent`).

    Args:
      params: a :class:`gated_jax.cell.GatedParams` (or a 3- or 5-tuple of arrays).
      xs: ``(B, T, n)``.
      z0: ``(B, m)`` or ``(m,)``; ``None`` means zeros.
      seq_lengths: optional ``(B,)`` ints: steps ``t >= length`` hold the state.
      reverse: run time backwards.

    Returns:
      ``(B, T, m)`` float64 NumPy states.

    Examples:
      >>> import numpy as np
      >>> from gated_jax.cell import GatedParams
      >>> from gated_jax.testing import numpy_loop
      >>> p = GatedParams(np.ones((1, 1)), np.full((1, 1), 0.5), np.full((1, 1), 1.5))
      >>> numpy_loop(p, np.array([[[3.0], [-3.0], [3.0]]]), np.array([-1.0]))[0, :, 0]
      array([ 1., -1.,  1.])
    """
    p = [None if a is None else np.asarray(a, np.float64) for a in params]
    p += [None] * (5 - len(p))
    w_x, w_c, w_z, b_c, b_x = p
    w_z = dense_recurrent(w_z)
    assert w_x is not None and w_c is not None
    xs = np.asarray(xs, np.float64)
    B, T, _ = xs.shape
    m = w_x.shape[0]
    z0 = np.zeros((B, m)) if z0 is None else np.broadcast_to(np.asarray(z0, np.float64), (B, m))
    out = np.zeros((B, T, m))
    for b in range(B):
        z = z0[b].copy()
        for t in range(T - 1, -1, -1) if reverse else range(T):
            if seq_lengths is None or t < seq_lengths[b]:
                pre = w_c @ xs[b, t] + (0.0 if b_c is None else b_c)
                if w_z is not None:
                    pre = pre + w_z @ z
                c = _sigmoid(pre)
                z = c * z + (1.0 - c) * (w_x @ xs[b, t] + (0.0 if b_x is None else b_x))
            out[b, t] = z
    return out


def numpy_conv(x, w, strides, pairs, dilation, groups=1, pad_mode="constant") -> np.ndarray:
    r"""A convolution by its definition: pad, then the grouped cross-correlation, by loops.

    .. math::

        y[n, o, i] = \sum_{c \in \text{group}(o)} \sum_j x_p[n, c, i s + j d]\, w[o, c, j],

    with ``x_p`` the input padded by ``pairs`` (``np.pad`` mode ``pad_mode``: ``"constant"``
    is zeros; ``"reflect"``, ``"edge"``, ``"wrap"`` the other framework modes).

    Args:
      x: ``(N, C, *spatial)``.
      w: ``(O, C / groups, *kernel)``.
      strides, dilation: one int per spatial dim.
      pairs: ``(lo, hi)`` padding per spatial dim (>= 0).
      groups: the feature groups.
      pad_mode: an ``np.pad`` mode.

    Returns:
      ``(N, O, *out)`` float64.

    Examples:
      >>> import numpy as np
      >>> from gated_jax.testing import numpy_conv
      >>> numpy_conv(np.arange(5.0).reshape(1, 1, 5), np.ones((1, 1, 2)), (2,), [(0, 1)], (1,))
      array([[[1., 5., 4.]]])
    """
    xp = np.pad(x, [(0, 0), (0, 0), *pairs], mode=pad_mode)
    n_, o, cg = x.shape[0], w.shape[0], w.shape[1]
    ks = w.shape[2:]
    og = o // groups
    outs = [
        (h - d * (k - 1) - 1) // s + 1
        for h, k, s, d in zip(xp.shape[2:], ks, strides, dilation, strict=True)
    ]
    y = np.zeros((n_, o, *outs))
    for idx in itertools.product(*map(range, outs)):
        taps = [
            i * s + np.arange(k) * d for i, k, s, d in zip(idx, ks, strides, dilation, strict=True)
        ]
        patch = xp[(slice(None), slice(None)) + tuple(np.ix_(*taps))]
        for oc in range(o):
            grp = patch[:, (oc // og) * cg : (oc // og + 1) * cg]
            y[(slice(None), oc) + tuple(idx)] = (grp * w[oc]).reshape(n_, -1).sum(1)
    return y


def numpy_conv_transpose(x, w, strides, dilation, groups, begin, size) -> np.ndarray:
    r"""The adjoint of a convolution by its definition: scatter kernel copies, keep a window.

    Input entry ``p`` adds ``x[p] w[..., j]`` at full position ``p s + j d``; output entry
    ``t`` is full position ``t + begin`` (zero outside the full result). With ``w`` the forward
    conv's weight read as ``(C_in, C_out / groups, *kernel)``, this is the gradient of
    :func:`numpy_conv` with respect to its input, which is how PyTorch, Keras and ONNX define
    their transposed convolutions.

    Args:
      x: ``(N, C_in, *spatial)``.
      w: ``(C_in, C_out / groups, *kernel)``.
      strides, dilation: one int per spatial dim.
      groups: the feature groups.
      begin: the first kept full position per dim (the forward conv's low padding).
      size: the output's spatial size.

    Returns:
      ``(N, C_out, *size)`` float64.

    Examples:
      >>> import numpy as np
      >>> from gated_jax.testing import numpy_conv_transpose
      >>> numpy_conv_transpose(np.ones((1, 1, 2)), np.ones((1, 1, 2)), (2,), (1,), 1, (0,), (4,))
      array([[[1., 1., 1., 1.]]])
    """
    cin, cog = w.shape[:2]
    ks = w.shape[2:]
    cig = cin // groups
    y = np.zeros((x.shape[0], cog * groups, *size))
    for p in itertools.product(*(range(h) for h in x.shape[2:])):
        for j in itertools.product(*(range(k) for k in ks)):
            pos = [
                pi * s + ji * d - b
                for pi, ji, s, d, b in zip(p, j, strides, dilation, begin, strict=True)
            ]
            if not all(0 <= q < t for q, t in zip(pos, size, strict=True)):
                continue
            for grp in range(groups):
                xi = x[(slice(None), slice(grp * cig, (grp + 1) * cig)) + tuple(p)]  # N, cig
                wi = w[(slice(grp * cig, (grp + 1) * cig), slice(None)) + tuple(j)]  # cig, cog
                y[(slice(None), slice(grp * cog, (grp + 1) * cog)) + tuple(pos)] += xi @ wi
    return y
