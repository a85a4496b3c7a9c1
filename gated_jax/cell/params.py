r"""The parameters of the gated cell, their validation and their default initialisation."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gated_jax._validate import (
    boolean,
    check_cell_params,
    check_fits_in_memory,
    fail,
    positive_int,
    recurrent_structure,
)

__all__ = ["GatedParams", "default_recurrent_init", "init_gated_params", "recurrent_shape"]


class GatedParams(NamedTuple):
    r"""Parameters of the gated cell, a pytree (``None`` fields are empty subtrees).

    .. math::

        c = \sigma(W_c x + W_z z + b_c), \qquad z' = c \odot z + (1 - c) \odot (W_x x + b_x).

    Attributes:
      w_x: ``(m, n)`` input-to-candidate weights, ``u = W_x x (+ b_x)``.
      w_c: ``(m, n)`` input-to-gate weights.
      w_z: the state-to-gate (recurrent) weights ``W_z``, in one of four structures:
        ``None``: no recurrent gate, the minGRU cell, whose gate depends on the input alone;
        ``(m, m)``: dense; ``(m,)``: diagonal, ``W_z z = w_z * z`` (each unit gates on its own
        past, and the step Jacobian is exactly diagonal); ``(H, h, h)`` with ``H h = m``:
        block-diagonal with ``H`` heads, head ``k``'s gate reading head ``k``'s slice of the
        state, ``(W_z z)[k h:(k+1) h] = w_z[k] @ z[k h:(k+1) h]``.
      b_c: ``(m,)`` gate bias, or ``None`` for no bias.
      b_x: ``(m,)`` candidate bias, or ``None`` for no bias.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gated_jax.cell import GatedParams
      >>> p = GatedParams(jnp.ones((4, 3)), jnp.ones((4, 3)), jnp.eye(4))
      >>> p.n, p.m, p.b_c is None
      (3, 4, True)
    """

    w_x: jax.Array
    w_c: jax.Array
    w_z: jax.Array | None = None
    b_c: jax.Array | None = None
    b_x: jax.Array | None = None

    @property
    def n(self) -> int:
        """Input width."""
        return int(np.shape(self.w_x)[-1])

    @property
    def m(self) -> int:
        """State width."""
        return int(np.shape(self.w_x)[-2])


def as_params(params) -> GatedParams:
    """``params`` as :class:`GatedParams` (a plain tuple of 2 to 5 arrays is accepted).

    Raises:
      ValueError: for anything else.
    """
    if isinstance(params, GatedParams):
        return params
    if isinstance(params, tuple) and len(params) in (2, 3, 4, 5) and not hasattr(params, "_fields"):
        return GatedParams(*params)
    raise fail("params", type(params).__name__, "a GatedParams")


def check_params(params) -> tuple[GatedParams, int, int]:
    """``params`` as validated :class:`GatedParams` (shapes and dtypes, one error format);
    returns ``(params, n, m)``.

    Raises:
      ValueError: naming the field, for non-arrays, non-numeric dtypes or shapes that do not
        fit together (:func:`gated_jax._validate.check_cell_params`).
    """
    p = as_params(params)
    n, m = check_cell_params(p)
    return p, n, m


def recurrent_shape(kind: str | None, heads: int, m: int) -> tuple[int, ...] | None:
    """The shape of ``w_z`` for a structure (``recurrent_structure``'s result): ``None``,
    ``(m, m)`` (dense), ``(m,)`` (diagonal) or ``(H, m / H, m / H)`` (heads)."""
    h = m // max(heads, 1)
    return {None: None, "dense": (m, m), "diagonal": (m,), "heads": (heads, h, h)}[kind]


def default_recurrent_init(kind: str | None):
    """The default initialiser of ``W_z`` for a structure, ``init(key, shape, dtype)``:
    orthogonal (dense), uniform on ``[-1, 1]`` (diagonal), an orthogonal draw per head
    (heads): ``||W_z||_2 <= 1`` in every case."""
    orthogonal = jax.nn.initializers.orthogonal()
    if kind == "diagonal":
        return lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -1.0, 1.0)
    if kind == "heads":

        def per_head(key, shape, dtype):
            keys = jax.random.split(key, shape[0])
            return jnp.stack([orthogonal(k, shape[1:], dtype) for k in keys])

        return per_head
    return orthogonal


def init_gated_params(
    key: jax.Array,
    n: int,
    m: int,
    *,
    use_bias: bool = False,
    recurrent_gate: bool | str = True,
    heads: int | None = None,
    dtype=jnp.float32,
    input_init=None,
    recurrent_init=None,
    bias_init=None,
) -> GatedParams:
    r"""Initialise :class:`GatedParams` with Flax ``GRUCell``'s defaults, in this layout.

    ``W_x`` and ``W_c`` (``(m, n)``) are LeCun-normal, ``W_z`` (``(m, m)``) is orthogonal and
    the biases are zeros:

    .. math::

        (W_x)_{ij}, (W_c)_{ij} \sim \mathcal N(0, 1/n), \qquad W_z^\top W_z = I_m,

    so at initialisation the gate pre-activation has unit variance per unit input variance and
    ``||W_z||_2 = 1``. The structured gates keep ``||W_z||_2 <= 1``: a diagonal ``w_z`` ``(m,)``
    is uniform on ``[-1, 1]``; heads ``(H, h, h)`` are each orthogonal (an independent
    orthogonal draw per head, ``||w_z[k]||_2 = 1``). Draws are made in float32 (or float64
    when ``dtype`` is float64) and cast to ``dtype``, so half-precision dtypes work on every
    backend (LAPACK has no half-precision QR for the orthogonal draw).

    Args:
      key: a PRNG key.
      n: input width, a positive int.
      m: state width, a positive int.
      use_bias: add ``b_c`` and ``b_x`` (zeros by default); ``False`` gives the cell without biases.
      recurrent_gate: the structure of ``W_z``: ``True`` or ``"dense"`` (``(m, m)``),
        ``"diagonal"`` (``(m,)``), ``"heads"`` (``(H, h, h)``, with ``heads=H``), or ``False``:
        no ``W_z`` (``w_z=None``), the minGRU cell, whose gate depends on the input alone.
      heads: the number of heads ``H`` with ``recurrent_gate="heads"``, a positive int dividing
        ``m``; ``None`` otherwise.
      dtype: a floating parameter dtype (float32, float64, bfloat16, float16).
      input_init: ``jax.nn.initializers``-style ``init(key, shape, dtype)`` for ``W_x``, ``W_c``.
      recurrent_init: the same for ``W_z``, called with ``w_z``'s shape (``(m, m)``, ``(m,)`` or
        ``(H, h, h)``).
      bias_init: the same for ``b_c`` and ``b_x``.

    Returns:
      A :class:`GatedParams` of ``dtype`` arrays.

    Raises:
      ValueError: for non-positive or non-int widths, a non-floating ``dtype``, a
        ``recurrent_gate`` that is not a bool or one of the structures, ``heads`` that is not a
        divisor of ``m`` (or given without ``"heads"``), or widths whose parameters cannot fit
        in memory (the message gives the bytes needed).

    Examples:
      >>> import jax
      >>> from gated_jax.cell import init_gated_params
      >>> p = init_gated_params(jax.random.key(0), 3, 4, use_bias=True)
      >>> p.w_x.shape, p.w_z.shape, p.b_c.shape, p.w_x.dtype
      ((4, 3), (4, 4), (4,), dtype('float32'))
      >>> init_gated_params(jax.random.key(0), 3, 4, recurrent_gate="diagonal").w_z.shape
      (4,)
      >>> init_gated_params(jax.random.key(0), 3, 4, recurrent_gate="heads", heads=2).w_z.shape
      (2, 2, 2)
    """
    n, m = int(positive_int("n", n) or 0), int(positive_int("m", m) or 0)
    use_bias = boolean("use_bias", use_bias)
    kind, H = recurrent_structure(recurrent_gate, heads, m)
    try:
        dtype = jnp.dtype(jnp.float32 if dtype is None else dtype)
    except TypeError:
        raise fail("dtype", dtype, "a floating dtype") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise fail("dtype", dtype, "a floating dtype")
    draw = jnp.promote_types(dtype, jnp.float32)
    wz_shape = recurrent_shape(kind, H, m)
    wz_count = 0.0 if wz_shape is None else float(np.prod(wz_shape, dtype=np.float64))
    count = 2.0 * m * n + wz_count + (2.0 * m if use_bias else 0.0)
    big, value = ("m", m) if m >= n else ("n", n)
    check_fits_in_memory(big, value, count * (draw.itemsize + dtype.itemsize), "the parameters")
    input_init = input_init or jax.nn.initializers.lecun_normal(in_axis=-1, out_axis=-2)
    recurrent_init = recurrent_init or default_recurrent_init(kind)
    bias_init = bias_init or jax.nn.initializers.zeros
    kx, kc, kz, kbc, kbx = jax.random.split(key, 5)

    def make(init, k, shape):
        return jnp.asarray(init(k, shape, draw), dtype)

    w_x = make(input_init, kx, (m, n))
    w_c = make(input_init, kc, (m, n))
    w_z = None if wz_shape is None else make(recurrent_init, kz, wz_shape)
    if use_bias:
        return GatedParams(w_x, w_c, w_z, make(bias_init, kbc, (m,)), make(bias_init, kbx, (m,)))
    return GatedParams(w_x, w_c, w_z)
