"""Reference implementations of the gated cell, for verification and benchmarks.

``plain_scan`` is the obvious implementation: a ``lax.scan`` whose step does all three matmuls
(``W_c x``, ``W_z z``, ``W_x x``), differentiated by JAX's own autodiff. ``numpy_loop`` is the
seed's equations step by step in NumPy float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def plain_scan(params, xs, z0=None, *, seq_lengths=None, reverse=False, remat=False):
    """``(B, T, n) -> (B, T, m)`` with the whole cell inside the scan step (batch-first)."""
    B, T, _ = xs.shape
    m = params.w_x.shape[0]
    z0 = jnp.zeros((B, m), xs.dtype) if z0 is None else z0
    lengths = jnp.full((B,), T) if seq_lengths is None else seq_lengths

    def step(z, inp):
        x, t = inp
        pre = x @ params.w_c.T + z @ params.w_z.T
        if params.b_c is not None:
            pre = pre + params.b_c[None, :]
        u = x @ params.w_x.T
        if params.b_x is not None:
            u = u + params.b_x[None, :]
        c = jax.nn.sigmoid(pre)
        z_new = c * z + (1 - c) * u
        z_new = jnp.where((t < lengths)[:, None], z_new, z)
        return z_new, z_new

    if remat:
        step = jax.checkpoint(step)
    _, zs = lax.scan(step, z0, (jnp.swapaxes(xs, 0, 1), jnp.arange(T)), reverse=reverse)
    return jnp.swapaxes(zs, 0, 1)


def numpy_loop(params, xs, z0=None, *, seq_lengths=None, reverse=False) -> np.ndarray:
    """The seed's equations, one step at a time, in NumPy float64 (``(B, T, n) -> (B, T, m)``)."""
    p = [None if a is None else np.asarray(a, np.float64) for a in params]
    w_x, w_c, w_z, b_c, b_x = p
    xs = np.asarray(xs, np.float64)
    B, T, _ = xs.shape
    m = w_x.shape[0]
    z0 = np.zeros((B, m)) if z0 is None else np.broadcast_to(np.asarray(z0, np.float64), (B, m))
    out = np.zeros((B, T, m))
    for b in range(B):
        z = z0[b].copy()
        for t in range(T - 1, -1, -1) if reverse else range(T):
            if seq_lengths is None or t < seq_lengths[b]:
                pre = w_c @ xs[b, t] + w_z @ z + (0.0 if b_c is None else b_c)
                c = 1.0 / (1.0 + np.exp(-pre))
                z = c * z + (1.0 - c) * (w_x @ xs[b, t] + (0.0 if b_x is None else b_x))
            out[b, t] = z
    return out
