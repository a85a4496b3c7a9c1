r"""Closed-form convolution derivatives, proved against JAX autodiff.

One spatial dimension tells the whole story (every other dimension is an independent copy of
it). ``lax.conv_general_dilated`` with window stride :math:`s`, kernel (rhs) dilation :math:`d`,
input (lhs) dilation :math:`a` and padding :math:`(lo, hi)` computes, for an input ``x`` of
length :math:`n`, a kernel ``w`` with :math:`K` taps and an output of length :math:`P`,

.. math::

    y[p] = \sum_{k, t} w[k]\, x[t]\, E[p, k, t], \qquad
    E[p, k, t] = [\, p s + k d = a t + lo \,]

(:math:`[\cdot]` is the Kronecker delta). In words: the input is stretched by :math:`a`
(:math:`a-1` zeros between samples), padded by :math:`(lo, hi)` (negative padding crops), and
tap :math:`k` of window :math:`p` reads position :math:`ps + kd` of that padded signal. ``E`` is
the whole convolution; everything in this module is read off it:

* **weight Jacobian**: :math:`\partial y[p] / \partial w[k] = \sum_t x[t] E[p,k,t]`,
  the *patch* of ``x`` under window :math:`p`, tap :math:`k` (zero where the tap reads padding);
  with channels it also carries :math:`\delta_{o o'}`: output channel ``o`` depends only on
  filter ``o``;
* **input Jacobian**: :math:`\partial y[p] / \partial x[t] = \sum_k w[k] E[p,k,t]`,
  the kernel tap that lands on ``x[t]`` from window :math:`p`, **and zero when no tap does**;
* **weight gradient**: :math:`\bar w[k] = \sum_p \bar y[p]\, \tilde x[ps + kd]`,
  a correlation of the padded input with the upstream gradient :math:`\bar y` *dilated by the
  forward stride*, evaluated with stride :math:`d`;
* **input gradient**: :math:`\bar x[t] = \sum_{p,k} \bar y[p] w[k] E[p,k,t]`, a convolution of
  the stride-dilated :math:`\bar y` with the *flipped* kernel, read out with stride :math:`a`.

Both gradients are computed as exactly one ``lax.conv_general_dilated`` each (see
:func:`conv_weight_grad`, :func:`conv_input_grad`), and :func:`conv_general_dilated` is a
``jax.custom_vjp`` drop-in for the lax op whose backward pass is those two functions.

Layouts: ``dimension_numbers`` are those of lax: ``lhs`` has a batch ``N`` and feature ``C``
axis, ``rhs`` an output-feature ``O`` and input-feature ``I`` axis, the output ``N`` and ``C``.
With ``feature_group_count = G`` the ``C`` input channels split into ``G`` groups of ``I``
(group-major) and output channel ``o`` belongs to group ``o // (O / G)``; with
``batch_group_count = B`` the batch splits into ``B`` groups (group-major) and output channel
``o`` reads batch group ``o // (O / B)``.

Every function resolves its configuration once into a :class:`gated_jax.shapes.ConvConfig`
(the same object :func:`gated_jax.shapes.conv_output_shape` computes with), so a bad config is
a ``ValueError`` naming the argument, never an XLA error.

References:
  Dumoulin and Visin, *A guide to convolution arithmetic for deep learning*, 2016
  (arXiv:1603.07285), chapter 4 (transposed convolution as the gradient); JAX's transpose
  rules ``_conv_general_dilated_transpose_lhs`` / ``_rhs`` in ``jax/_src/lax/convolution.py``.
"""

from __future__ import annotations

import functools
import math
import string
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gated_jax._validate import fail, positive_int
from gated_jax.shapes import ConvConfig

__all__ = [
    "conv1d",
    "conv_general_dilated",
    "conv_input_grad",
    "conv_input_jacobian",
    "conv_weight_grad",
    "conv_weight_jacobian",
]

ConvDimensionNumbers = lax.ConvDimensionNumbers


def _config(
    lhs_shape,
    rhs_shape,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
) -> ConvConfig:
    """The one resolved config (:meth:`gated_jax.shapes.ConvConfig.resolve`)."""
    return ConvConfig.resolve(
        lhs_shape,
        rhs_shape,
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        batch_group_count,
    )


def _check_array(name: str, x, expected: tuple[int, ...], why: str) -> None:
    if tuple(jnp.shape(x)) != expected:
        raise fail(name, x, f"an array of shape {expected} ({why})")


def _swap_nc(spec: Sequence[int]) -> tuple[int, ...]:
    """Exchange the roles of the first two entries of a spec (batch <-> feature, O <-> I)."""
    return (spec[1], spec[0], *spec[2:])


def _fold_group(x, src: int, dst: int, groups: int):
    """Split axis ``src`` as ``(groups, rest)`` and fold ``groups`` into axis ``dst`` (major).

    Every other axis keeps its place; axis ``src`` shrinks to ``rest`` and axis ``dst`` grows
    to ``groups * size``. Only reshapes and a transpose.
    """
    shape = list(x.shape)
    rest = shape[src] // groups
    x = x.reshape(shape[:src] + [groups, rest] + shape[src + 1 :])
    g_ax, d_ax = src, dst + 1 if dst > src else dst
    perm = [i for i in range(x.ndim) if i != g_ax]
    at = perm.index(d_ax)
    perm.insert(at, g_ax)
    x = x.transpose(perm)
    new_shape = list(x.shape)
    new_shape[at : at + 2] = [new_shape[at] * new_shape[at + 1]]
    return x.reshape(new_shape)


def _grad_dtype(*operands):
    """The dtype JAX promotes ``operands`` to, made inexact (integer operands give floats)."""
    dtype = jnp.result_type(*operands)
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(dtype, float)
    return dtype


def _zeros_if_degenerate(c: ConvConfig) -> bool:
    # A zero-size output or input has identically zero gradients; XLA cannot lower the
    # corresponding zero-size-window convolution, so no conv is emitted then.
    return 0 in c.out_spatial or 0 in c.in_spatial or 0 in c.out_shape or 0 in c.lhs_shape


# --------------------------------------------------------------------------------------------
# gradients as one convolution each
# --------------------------------------------------------------------------------------------


def _dilate(x, factors: Sequence[int], axes: Sequence[int], dilated_input, dilated_kernel):
    """``(x, lhs_dilation)`` for a convolution this module issues.

    XLA:CPU's algebraic simplifier aborts the process on some input-dilated convolutions whose
    kernel is no smaller than the input (it swaps the two operands wrongly; jax 0.10), a case
    JAX's own gradient of a strided conv reaches. There (``lhs_dilation > 1`` and, in some
    spatial dim, the dilated kernel at least the dilated input) the zeros are written
    explicitly, ``f - 1`` between neighbours by a stack and a reshape, and the convolution gets
    ``lhs_dilation = 1``: the same values. Elsewhere ``x`` and the dilation pass unchanged, so
    the program is the one JAX's autodiff emits.
    """
    if all(f == 1 for f in factors) or all(
        k < n for n, k in zip(dilated_input, dilated_kernel, strict=True)
    ):
        return x, tuple(factors)
    for axis, f in zip(axes, factors, strict=True):
        n = x.shape[axis]
        if f > 1 and n > 0:
            st = jnp.stack([x] + [jnp.zeros_like(x)] * (f - 1), axis=axis + 1)
            st = st.reshape(x.shape[:axis] + (n * f,) + x.shape[axis + 1 :])
            x = lax.slice_in_dim(st, 0, (n - 1) * f + 1, axis=axis)
    return x, (1,) * len(factors)


def _weight_grad(c: ConvConfig, lhs, cotangent, precision, pet, op):
    """:func:`conv_weight_grad` for a validated config; ``op`` is the convolution to call."""
    dtype = _grad_dtype(lhs, cotangent)
    if _zeros_if_degenerate(c):
        return jnp.zeros(c.rhs_shape, dtype)
    lhs = jnp.asarray(lhs).astype(dtype)
    cotangent = jnp.asarray(cotangent).astype(dtype)
    pads = [
        (lo, ke - 1 + p_s - n_a - lo)
        for (lo, _), ke, p_s, n_a in zip(
            c.padding, c.kernel_eff, c.out_dilated, c.in_dilated, strict=True
        )
    ]
    lhs_spec, rhs_spec, out_spec = c.dimension_numbers
    dn = ConvDimensionNumbers(_swap_nc(lhs_spec), _swap_nc(out_spec), _swap_nc(rhs_spec))
    lhs, lhs_dilation = _dilate(lhs, c.lhs_dilation, lhs_spec[2:], c.in_dilated, c.out_dilated)
    return op(
        lhs,
        cotangent,
        window_strides=c.rhs_dilation,
        padding=pads,
        lhs_dilation=lhs_dilation,
        rhs_dilation=c.strides,
        dimension_numbers=dn,
        feature_group_count=c.batch_group_count,
        batch_group_count=c.feature_group_count,
        precision=precision,
        preferred_element_type=pet,
    )


def _input_grad(c: ConvConfig, rhs, cotangent, precision, pet, op):
    """:func:`conv_input_grad` for a validated config; ``op`` is the convolution to call."""
    dtype = _grad_dtype(rhs, cotangent)
    if _zeros_if_degenerate(c):
        return jnp.zeros(c.lhs_shape, dtype)
    lhs_spec, rhs_spec, out_spec = c.dimension_numbers
    w = jnp.asarray(rhs).astype(dtype)
    cotangent = jnp.asarray(cotangent).astype(dtype)
    groups = max(c.feature_group_count, c.batch_group_count)
    if groups > 1:
        w = _fold_group(w, rhs_spec[0], rhs_spec[1], groups)
    w = lax.rev(w, tuple(rhs_spec[2:]))
    pads = []
    for n, (lo, _), a, ke, p_s in zip(
        c.in_spatial, c.padding, c.lhs_dilation, c.kernel_eff, c.out_dilated, strict=True
    ):
        before = ke - 1 - lo
        pads.append((before, (n - 1) * a + ke - p_s - before))
    cotangent, dilation = _dilate(cotangent, c.strides, out_spec[2:], c.out_dilated, c.kernel_eff)
    out = op(
        cotangent,
        w,
        window_strides=c.lhs_dilation,
        padding=pads,
        lhs_dilation=dilation,
        rhs_dilation=c.rhs_dilation,
        dimension_numbers=ConvDimensionNumbers(out_spec, _swap_nc(rhs_spec), lhs_spec),
        feature_group_count=groups,
        precision=precision,
        preferred_element_type=pet,
    )
    if c.batch_group_count > 1:
        out = _fold_group(out, lhs_spec[1], lhs_spec[0], c.batch_group_count)
    return out


def conv_weight_grad(
    lhs,
    cotangent,
    rhs_shape,
    window_strides,
    padding,
    *,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
):
    r"""``dl/dW`` of ``lax.conv_general_dilated`` given ``dl/dy``, as ONE convolution.

    Per spatial dimension (stride :math:`s`, kernel dilation :math:`d`, input dilation
    :math:`a`, padding :math:`(lo, hi)`; :math:`\tilde x` is ``x`` stretched by :math:`a` and
    padded by :math:`lo`),

    .. math::

        \frac{\partial l}{\partial W}[o, i, k]
          = \sum_{n, p} \bar y[n, o, p]\; \tilde x[n, c(o, i), p s + k d].

    Read as a convolution: **the input correlated with the stride-dilated upstream
    gradient**. The cotangent :math:`\bar y` plays the kernel, with kernel dilation = the
    forward stride :math:`s` (its taps sit :math:`s` apart, exactly where the forward windows
    started); the window stride is the forward kernel dilation :math:`d` (tap :math:`k` of ``W``
    is the output position :math:`k`); the input keeps its dilation :math:`a` and low padding
    :math:`lo`, and the high padding is whatever makes exactly :math:`K` outputs,
    :math:`hi' = (K-1)d + \mathrm{dil}(P, s) - \mathrm{dil}(n, a) - lo` (may be negative: the
    tail of the input no window reached is cropped). The batch axis ``N`` is the contraction
    (feature) axis of this convolution and the input channels are its batch, so feature groups
    of the forward become batch groups here and vice versa. No kernel flip: the forward pass
    and this one are both cross-correlations of the input.

    For ``x`` of shape ``(5, 2)`` (``T x C``), ``W`` of shape ``(1, 2, 3)`` and stride 2,
    ``dl/dW[0, c, k] = g[0] x[k, c] + g[1] x[k + 2, c]`` (0-based): one term per output
    position.

    Args:
      lhs: the forward input ``x``.
      cotangent: ``dl/dy``, of the forward output's shape.
      rhs_shape: the kernel's shape.
      window_strides, padding: as in ``lax.conv_general_dilated``.
      lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, batch_group_count,
        precision, preferred_element_type: as in ``lax.conv_general_dilated``.

    Returns:
      ``dl/dW`` of shape ``rhs_shape``, equal to ``jax.vjp`` of the lax op. Its dtype is the
      one JAX promotes ``lhs`` and ``cotangent`` to, made floating (integer operands give a
      float result, never an integer-truncated gradient).

    Raises:
      ValueError: naming the argument when the config is invalid or ``cotangent`` does not have
        the output's shape.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from jax import lax
      >>> x = jnp.arange(10.0).reshape(1, 2, 5)  # (N, C, T)
      >>> g = jnp.ones((1, 1, 2))  # dl/dy for the 2 output positions
      >>> dw = conv_weight_grad(x, g, (1, 2, 3), (2,), "VALID")
      >>> dw.tolist()
      [[[2.0, 4.0, 6.0], [12.0, 14.0, 16.0]]]
      >>> conv = lambda w: lax.conv_general_dilated(x, w, (2,), "VALID")
      >>> bool(jnp.all(jax.vjp(conv, jnp.ones((1, 2, 3)))[1](g)[0] == dw))
      True

    References:
      Dumoulin and Visin, *A guide to convolution arithmetic for deep learning*, 2016
      (arXiv:1603.07285), chapter 4; JAX's ``_conv_general_dilated_transpose_rhs`` in
      ``jax/_src/lax/convolution.py`` (the kernel gradient as one convolution of the input
      with the cotangent).
    """
    c = _config(
        jnp.shape(lhs),
        rhs_shape,
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        batch_group_count,
    )
    _check_array("cotangent", cotangent, c.out_shape, "the convolution's output shape")
    return _weight_grad(
        c, lhs, cotangent, precision, preferred_element_type, lax.conv_general_dilated
    )


def conv_input_grad(
    rhs,
    cotangent,
    lhs_shape,
    window_strides,
    padding,
    *,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
):
    r"""``dl/dx`` of ``lax.conv_general_dilated`` given ``dl/dy``, as ONE convolution.

    Per spatial dimension (notation of :func:`conv_weight_grad`; :math:`K_e = (K-1)d + 1`),

    .. math::

        \frac{\partial l}{\partial x}[n, c, t]
          = \sum_{o, p, k} \bar y[n', o, p]\, W[o, i(c), k]\, [\, p s + k d = a t + lo \,]
          = \sum_{k'} \hat y[a t + k' d]\; W[o, i, K - 1 - k'],

    where :math:`\hat y` is :math:`\bar y` stretched by the forward stride :math:`s` and padded
    by :math:`K_e - 1 - lo` below. Read as a convolution: **the stride-dilated upstream
    gradient convolved with the flipped kernel** (a true convolution, i.e. a correlation with
    the spatially reversed kernel, with input and output channels swapped), evaluated with
    window stride = the forward input dilation :math:`a` and kernel dilation :math:`d`; the high
    padding :math:`(n-1)a + K_e - \mathrm{dil}(P, s) - (K_e - 1 - lo)` makes exactly :math:`n`
    outputs. Positions of ``x`` that no window reads get zero. With ``feature_group_count = G``
    the kernel's groups move from its output to its input-channel axis and the convolution is
    grouped by ``G``; with ``batch_group_count = B`` the same, and the ``B`` output-channel
    groups are moved back into the batch axis afterwards.

    Compared with the other two: the forward pass and the weight gradient are both
    *correlations of the input* (the weight gradient with the stride-dilated upstream gradient
    as kernel, no flip); the input gradient is the one with the *flipped* kernel, and it runs
    over the stride-dilated upstream gradient, not over ``x``.

    Args:
      rhs: the forward kernel ``W``.
      cotangent: ``dl/dy``, of the forward output's shape.
      lhs_shape: the forward input's shape.
      window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type: as in
        ``lax.conv_general_dilated``.

    Returns:
      ``dl/dx`` of shape ``lhs_shape``, equal to ``jax.vjp`` of the lax op, in the dtype JAX
      promotes ``rhs`` and ``cotangent`` to, made floating.

    Raises:
      ValueError: naming the argument when the config is invalid or ``cotangent`` does not have
        the output's shape.

    Examples:
      Input 5 is read by no window of a 3-tap kernel at stride 2, so its gradient is 0:

      >>> import jax.numpy as jnp
      >>> w = jnp.array([[[1.0, 2.0, 3.0]]])  # (O, I, K)
      >>> conv_input_grad(w, jnp.ones((1, 1, 2)), (1, 1, 6), (2,), "VALID").tolist()
      [[[1.0, 2.0, 4.0, 2.0, 3.0, 0.0]]]

    References:
      Dumoulin and Visin, *A guide to convolution arithmetic for deep learning*, 2016
      (arXiv:1603.07285), chapter 4 (the input gradient is a transposed convolution); JAX's
      ``_conv_general_dilated_transpose_lhs`` in ``jax/_src/lax/convolution.py``.
    """
    c = _config(
        lhs_shape,
        jnp.shape(rhs),
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        batch_group_count,
    )
    _check_array("cotangent", cotangent, c.out_shape, "the convolution's output shape")
    return _input_grad(
        c, rhs, cotangent, precision, preferred_element_type, lax.conv_general_dilated
    )


# --------------------------------------------------------------------------------------------
# the custom-VJP drop-in
# --------------------------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(lhs, rhs, c: ConvConfig, precision, pet):
    """The convolution of a resolved config; its VJP is the closed form."""
    lhs, lhs_dilation = _dilate(
        lhs, c.lhs_dilation, c.dimension_numbers[0][2:], c.in_dilated, c.kernel_eff
    )
    return lax.conv_general_dilated(
        lhs,
        rhs,
        c.strides,
        c.padding,
        lhs_dilation,
        c.rhs_dilation,
        c.dimension_numbers,
        c.feature_group_count,
        c.batch_group_count,
        precision,
        pet,
    )


def _conv_fwd(lhs, rhs, c, precision, pet):
    return _conv(lhs, rhs, c, precision, pet), (lhs, rhs)


def _conv_bwd(c, precision, pet, res, g):
    lhs, rhs = res
    # The backward convolutions are this custom-VJP op again, so every order of reverse-mode
    # derivative runs through the closed form.
    dlhs = _input_grad(c, rhs, g, precision, None, _closed_form_op)
    drhs = _weight_grad(c, lhs, g, precision, None, _closed_form_op)
    return dlhs.astype(lhs.dtype), drhs.astype(rhs.dtype)


def _closed_form_op(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """``_conv`` called with lax's keyword names (a derived backward convolution)."""
    c = ConvConfig.resolve(
        jnp.shape(lhs),
        jnp.shape(rhs),
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        batch_group_count,
    )
    return _conv(lhs, rhs, c, precision, preferred_element_type)


_conv.defvjp(_conv_fwd, _conv_bwd)


def _hashable_precision(precision):
    if isinstance(precision, list):
        return tuple(precision)
    return precision


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
):
    r"""Drop-in for ``lax.conv_general_dilated`` whose VJP is the closed form.

    Same arguments, same result, same positional order as the lax op. The backward pass
    (``jax.custom_vjp``) is :func:`conv_input_grad` and :func:`conv_weight_grad`, one
    convolution each, and those convolutions are this op again, so ``grad(grad(...))`` (and
    any higher reverse-mode order) also runs through the closed form. ``jit`` and ``vmap``
    work as for the lax op.
    As for every ``jax.custom_vjp`` function, forward-mode autodiff (``jax.jvp``,
    ``jax.jacfwd``, ``jax.hessian``) is not available: use ``lax.conv_general_dilated`` there.

    The configuration arguments are static (Python values): the config is resolved up front
    into a :class:`gated_jax.shapes.ConvConfig`, so a bad config raises a ``ValueError``
    naming the argument instead of an XLA error.

    Args:
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type: as in
        ``lax.conv_general_dilated``.

    Returns:
      The convolution, equal to ``lax.conv_general_dilated``'s.

    Raises:
      ValueError: naming the argument (``TypeError`` for a wrong type) when the configuration
        is one that ``lax.conv_general_dilated`` or XLA rejects.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> x, w = jnp.arange(6.0).reshape(1, 1, 6), jnp.ones((1, 1, 3))
      >>> conv_general_dilated(x, w, (1,), "VALID").tolist()
      [[[3.0, 6.0, 9.0, 12.0]]]
      >>> jax.grad(lambda w: conv_general_dilated(x, w, (1,), "VALID").sum())(w).tolist()
      [[[6.0, 10.0, 14.0]]]

    References:
      ``jax.custom_vjp`` (JAX documentation, "Custom derivative rules for JAX-transformable
      Python functions"); Dumoulin and Visin, 2016 (arXiv:1603.07285), chapter 4.
    """
    lhs = jnp.asarray(lhs)
    rhs = jnp.asarray(rhs)
    c = _config(
        lhs.shape,
        rhs.shape,
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        batch_group_count,
    )
    return _conv_on(c, lhs, rhs, _hashable_precision(precision), preferred_element_type)


def _conv_on(c: ConvConfig, lhs, rhs, precision, preferred_element_type):
    """The custom-VJP convolution of a resolved config."""
    return _conv(lhs, rhs, c, precision, preferred_element_type)


# --------------------------------------------------------------------------------------------
# dense Jacobians from the Kronecker delta E
# --------------------------------------------------------------------------------------------


def _deltas(c: ConvConfig) -> list[np.ndarray]:
    """``E_j[p, k, t] = [p s + k d == a t + lo]`` per spatial dimension, as 0/1 arrays."""
    out = []
    for n, k, p, s, (lo, _), a, d in zip(
        c.in_spatial,
        c.kernel_spatial,
        c.out_spatial,
        c.strides,
        c.padding,
        c.lhs_dilation,
        c.rhs_dilation,
        strict=True,
    ):
        pp = np.arange(p)[:, None, None]
        kk = np.arange(k)[None, :, None]
        tt = np.arange(n)[None, None, :]
        out.append((pp * s + kk * d == a * tt + lo).astype(np.float64))
    return out


def _group_index(c: ConvConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel ``o``: its batch group and its feature group."""
    o_total = c.rhs_shape[c.dimension_numbers.rhs_spec[0]]
    o = np.arange(o_total)
    return o // (o_total // c.batch_group_count), o // (o_total // c.feature_group_count)


def _to_user_layout(jc, c: ConvConfig, second_spec: Sequence[int]):
    """Canonical ``(N, C, spatial...) + canonical second`` axes -> the user's layouts."""
    r = len(c.out_shape)
    perm = list(np.argsort(c.dimension_numbers.out_spec)) + [
        r + int(i) for i in np.argsort(second_spec)
    ]
    return jnp.transpose(jc, perm)


def _letters(count: int, skip: str) -> list[str]:
    return [ch for ch in string.ascii_letters if ch not in skip][:count]


def conv_weight_jacobian(
    lhs,
    rhs_shape,
    window_strides,
    padding,
    *,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
):
    r"""Dense ``d out / d W`` of ``lax.conv_general_dilated``, from the closed form.

    Shape ``out.shape + rhs_shape``. With :math:`E` the Kronecker delta of the module docstring
    (per spatial dimension :math:`E[p,k,t] = [ps + kd = at + lo]`),

    .. math::

        \frac{\partial y[n', o, p]}{\partial W[o', i, k]}
          = \delta_{o o'} \sum_t x[b(o) N' + n',\; g(o) I + i,\; t]\; E[p, k, t]

    with :math:`b(o)`, :math:`g(o)` the batch and feature group of output channel ``o``. The sum
    has at most one term: it is the input patch under window ``p``, tap ``k`` (zero where the
    tap reads padding or a hole of the input dilation). Built from this formula with constant
    0/1 arrays, not by calling autodiff; the linear map is exact.

    For ``x`` of shape ``(5, 2)`` (``T x C``), ``W`` of shape ``(1, 2, 3)``, stride 2 the
    entries are ``x[2i + k, c]`` (0-based) times :math:`\delta_{f f'}`.

    Args:
      lhs: the input ``x``.
      rhs_shape: the kernel's shape.
      window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count: as in ``lax.conv_general_dilated``.

    Returns:
      An array of shape ``out.shape + rhs_shape``, equal to ``jax.jacrev`` of the lax op
      with respect to the kernel.

    Raises:
      ValueError: naming the argument when the configuration is invalid.

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.arange(5.0).reshape(1, 1, 5)
      >>> jac = conv_weight_jacobian(x, (1, 1, 3), (2,), "VALID")
      >>> jac.shape, jac[0, 0, 1, 0, 0].tolist()  # output 1 reads x[2], x[3], x[4]
      ((1, 1, 2, 1, 1, 3), [2.0, 3.0, 4.0])

    References:
      Dumoulin and Visin, 2016 (arXiv:1603.07285), chapter 2. For one group, no padding and no
      dilation (0-based), ``dy[n, o, i] / dW[o', c, k] = delta(o, o') x[n, c, s i + k]``.
    """
    lhs = jnp.asarray(lhs)
    c = _config(
        lhs.shape,
        rhs_shape,
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        batch_group_count,
    )
    nsp = len(c.in_spatial)
    lhs_spec, rhs_spec, _ = c.dimension_numbers
    xc = jnp.transpose(lhs, lhs_spec)  # (N, C, t...)
    n_total, c_total = xc.shape[:2]
    o_total, i_size = c.rhs_shape[rhs_spec[0]], c.rhs_shape[rhs_spec[1]]
    xc = xc.reshape(
        (c.batch_group_count, n_total // c.batch_group_count, c.feature_group_count, i_size)
        + xc.shape[2:]
    )
    bidx, gidx = _group_index(c)
    xo = xc[bidx, :, gidx]  # (O, N', I, t...)
    p_, k_, t_ = (_letters(3 * nsp, "onicq")[j::3] for j in range(3))
    deltas = [jnp.asarray(e, lhs.dtype) for e in _deltas(c)]
    eye = jnp.eye(o_total, dtype=lhs.dtype)
    spec = (
        "oni"
        + "".join(t_)
        + ","
        + ",".join(p + k + t for p, k, t in zip(p_, k_, t_, strict=True))
        + ",oq"
    )
    spec += "->no" + "".join(p_) + "qi" + "".join(k_)
    jc = jnp.einsum(spec, xo, *deltas, eye, precision=lax.Precision.HIGHEST)
    return _to_user_layout(jc, c, rhs_spec)


def conv_input_jacobian(
    rhs,
    lhs_shape,
    window_strides,
    padding,
    *,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
):
    r"""Dense ``d out / d x`` of ``lax.conv_general_dilated``, from the closed form.

    Shape ``out.shape + lhs_shape``. With :math:`E` as in the module docstring,

    .. math::

        \frac{\partial y[n', o, p]}{\partial x[n, c, t]}
          = [n = b(o) N' + n']\,[c \in \text{group } g(o)]
            \sum_k W[o, c - g(o) I, k]\; E[p, k, t].

    The sum over taps has at most one term (:math:`k = (at + lo - ps)/d` when that is an integer
    in :math:`[0, K)`), and **no term at all** -- a zero entry -- when ``x[t]`` lies outside
    window ``p``.

    Args:
      rhs: the kernel ``W``.
      lhs_shape: the input's shape.
      window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count: as in ``lax.conv_general_dilated``.

    Returns:
      An array of shape ``out.shape + lhs_shape``, equal to ``jax.jacrev`` of the lax op
      with respect to the input.

    Raises:
      ValueError: naming the argument when the configuration is invalid.

    Examples:
      >>> import jax.numpy as jnp
      >>> w = jnp.array([[[1.0, 2.0, 3.0]]])
      >>> conv_input_jacobian(w, (1, 1, 5), (2,), "VALID")[0, 0, 1, 0, 0].tolist()
      [0.0, 0.0, 1.0, 2.0, 3.0]

    References:
      Dumoulin and Visin, 2016 (arXiv:1603.07285), section 4.1 (convolution as a sparse
      matrix). For one group, no padding and no dilation (0-based),
      ``dy[n, o, i] / dx[n', c, j] = delta(n, n') W[o, c, j - s i]`` inside the window
      ``0 <= j - s i < K``, and 0 outside it, where the index runs off the kernel.
    """
    rhs = jnp.asarray(rhs)
    c = _config(
        lhs_shape,
        rhs.shape,
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        batch_group_count,
    )
    nsp = len(c.in_spatial)
    lhs_spec, rhs_spec, _ = c.dimension_numbers
    wc = jnp.transpose(rhs, rhs_spec)  # (O, I, k...)
    o_total, i_size = wc.shape[:2]
    n_total = c.lhs_shape[lhs_spec[0]]
    c_total = c.lhs_shape[lhs_spec[1]]
    n_out = n_total // c.batch_group_count
    bidx, gidx = _group_index(c)
    batch = (
        np.arange(n_total)[None, None, :]
        == (bidx * n_out)[None, :, None] + np.arange(n_out)[:, None, None]
    )
    chan = (
        np.arange(c_total)[None, :, None]
        == (gidx * i_size)[:, None, None] + np.arange(i_size)[None, None, :]
    )
    p_, k_, t_ = (_letters(3 * nsp, "oimcqn")[j::3] for j in range(3))
    deltas = [jnp.asarray(e, rhs.dtype) for e in _deltas(c)]
    spec = (
        "oi" + "".join(k_) + "," + ",".join(p + k + t for p, k, t in zip(p_, k_, t_, strict=True))
    )
    spec += ",qon,oci->qo" + "".join(p_) + "nc" + "".join(t_)
    jc = jnp.einsum(
        spec,
        wc,
        *deltas,
        jnp.asarray(batch, rhs.dtype),
        jnp.asarray(chan, rhs.dtype),
        precision=lax.Precision.HIGHEST,
    )
    return _to_user_layout(jc, c, lhs_spec)


# --------------------------------------------------------------------------------------------
# the 1-D layer in the (T, C) layout
# --------------------------------------------------------------------------------------------


def conv1d(x, w, *, stride: int = 1, padding=0, dilation: int = 1):
    r"""A 1-D convolution layer: ``x`` of shape ``(..., T, C)``, ``w`` of shape ``(F, C, K)``.

    Cross-correlation, as in every deep-learning library:

    .. math::

        y[i, f] = \sum_{k=0}^{K-1} \sum_{c} x_{pad}[i s + k d,\ c]\; W[f, c, k],
        \qquad i = 0, \dots, \lfloor (T + lo + hi - (K-1)d - 1) / s \rfloor,

    with ``x_pad`` the input padded by ``(lo, hi)``. Gradients go through the closed form of
    :func:`conv_general_dilated`.

    Args:
      x: ``(..., T, C)``; leading axes are batch axes.
      w: ``(F, C, K)``.
      stride: window stride ``s >= 1``.
      padding: an int (both sides), a ``(lo, hi)`` pair (negative crops), or ``'SAME'``,
        ``'SAME_LOWER'``, ``'VALID'``.
      dilation: kernel dilation ``d >= 1``.

    Returns:
      ``(..., T_out, F)``.

    Raises:
      ValueError: naming the argument when ``x`` or ``w`` has the wrong rank, their channel
        counts differ, or ``stride``, ``dilation`` or ``padding`` is invalid.

    Examples:
      ``x`` in :math:`\mathbb{R}^{5 \times 2}`, ``W`` in :math:`\mathbb{R}^{1 \times 2 \times 3}`,
      stride 2, no padding: ``y[i, 0] = sum_{k, c} x[2i + k, c] W[0, c, k]``, shape ``(2, 1)``:

      >>> import jax.numpy as jnp
      >>> x = jnp.arange(10.0).reshape(5, 2)
      >>> conv1d(x, jnp.ones((1, 2, 3)), stride=2).tolist()
      [[15.0], [39.0]]

    References:
      Dumoulin and Visin, *A guide to convolution arithmetic for deep learning*, 2016
      (arXiv:1603.07285), chapter 2; ``lax.conv_general_dilated``, of which this is the
      channels-last 1-D case.
    """
    x = jnp.asarray(x)
    w = jnp.asarray(w)
    if x.ndim < 2:
        raise fail("x", x, "an array of shape (..., T, C)")
    if w.ndim != 3:
        raise fail("w", w, "an array of shape (F, C, K)")
    if w.shape[1] != x.shape[-1]:
        raise fail("w", w, f"a kernel with w.shape[1] = x.shape[-1] = {x.shape[-1]} channels")
    s_ = positive_int("stride", stride)
    d_ = positive_int("dilation", dilation)
    batch = x.shape[:-2]
    xb = x.reshape((math.prod(batch),) + x.shape[-2:])
    c = ConvConfig.resolve(
        xb.shape,
        w.shape,
        (s_,),
        padding,
        rhs_dilation=(d_,),
        dimension_numbers=("NWC", "OIW", "NWC"),
        padding_rule="pair",
        names={"window_strides": "stride", "rhs_dilation": "dilation"},
    )
    y = _conv_on(c, xb, w, None, None)
    return y.reshape(batch + y.shape[-2:])
