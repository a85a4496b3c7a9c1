r"""Receptive fields: the analytic rule for conv stacks, and the exact set for any model.

:func:`receptive_field` is the closed-form rule for a plain stack of conv and pooling layers
(size, jump and start per spatial dim). :func:`receptive_field_of` computes the exact set for
any JAX function or Flax module (skip connections, pooling, normalisation, any architecture)
from its ``jaxpr``: the *structural* support of the gradient of one output entry.

Why structural and not ``jax.grad`` at one point: the gradient at a point can vanish where
the dependency exists (a ReLU off at that input, a max-pool window whose maximum is
elsewhere, a weight that happens to be 0, terms that cancel). Here every primitive is
differentiated on its own, with its floating-point operands replaced by random values in
:math:`[0.5, 1.5]` and a cotangent that is the 0/1 mask of the positions reached so far;
integer operands (indices) keep their true values. For the linear primitives (conv,
``dot_general``, sums, reshapes, slices, pads, gathers, ...) and products the vjp is then a sum
of non-negative terms, non-zero exactly on the dependency pattern; elementwise functions
(``tanh``, ``exp``, ``logistic``, powers, ...) have non-zero derivatives there; ``max``,
``min``, ``select_n``, ``clamp`` pass the mask to every operand and the windowed / reduced
maxima (max-pooling, ``reduce_max``, ``cummax``) to every entry of their window, since each
of those entries is the one selected for some input. Masks are combined by logical or, so
no two paths can cancel. Primitives whose derivative is zero everywhere (``floor``,
``sign``, conversions to integers) reach nothing, as ``jax.grad`` says.

The result is exact for models built from these primitives (every ``jit``,
``custom_jvp``/``custom_vjp`` and ``checkpoint`` is entered); control flow (``scan``,
``while``, ``cond``) is differentiated as one primitive at the random positive point, which
is exact when its body holds no max-like selection.

References:
  Araujo, Norris and Sim, *Computing receptive fields of convolutional neural networks*,
  Distill 2019; Luo et al., *Understanding the effective receptive field in deep
  convolutional neural networks*, NeurIPS 2016 (the gradient support as the receptive field).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gated_jax._validate import fail
from gated_jax.shapes._config import _ints, _is_int, _is_seq, _parse_padding

__all__ = ["ConvLayer", "ReceptiveField", "receptive_field", "receptive_field_of"]

# ----------------------------------------------------------------------------------------------
# the analytic rule of a conv / pooling stack


class ConvLayer(NamedTuple):
    """One conv or pooling layer for :func:`receptive_field`.

    ``kernel``, ``stride`` and ``dilation`` are ints (the same in every dim) or per-dim tuples;
    ``padding`` is an int (both sides of every dim), a ``(lo, hi)`` pair of ints (every dim),
    or a per-dim sequence of ``(lo, hi)`` pairs. A plain tuple ``(kernel, stride, dilation,
    padding)`` (or a prefix) is accepted too.
    """

    kernel: int | tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    dilation: int | tuple[int, ...] = 1
    padding: int | tuple[int, int] | tuple[tuple[int, int], ...] = (0, 0)


class ReceptiveField(NamedTuple):
    r"""Receptive field of one output element of a stack of layers, in input coordinates.

    Each field is a tuple with one entry per spatial dim. Along dim ``a``, output element
    ``i`` reads input positions in
    ``[start[a] + i*jump[a], start[a] + i*jump[a] + size[a] - 1]`` (positions ``< 0`` or
    ``>= H`` are padding). With dilation or ``stride > kernel`` the support inside this span
    can have holes.
    """

    size: tuple[int, ...]
    jump: tuple[int, ...]
    start: tuple[int, ...]


def _layer_dims(layer: Any, idx: int) -> list[tuple[int, int, int, int]]:
    """``(kernel, stride, dilation, lo)`` per spatial dim of one layer."""
    name = f"layers[{idx}]"
    if isinstance(layer, dict):
        unknown = sorted(set(layer) - set(ConvLayer._fields))
        if unknown or "kernel" not in layer:
            raise fail(name, layer, f"a dict with the fields {ConvLayer._fields} (kernel required)")
        layer = ConvLayer(**layer)
    elif not isinstance(layer, ConvLayer):
        if _is_int(layer):
            layer = (layer,)
        if not _is_seq(layer) or not 1 <= len(layer) <= 4:
            raise fail(
                name,
                layer,
                "a ConvLayer, an int kernel or a tuple (kernel, stride=1, dilation=1, "
                "padding=(0, 0))",
            )
        layer = ConvLayer(*layer)
    ranks = {len(v) for v in layer[:3] if _is_seq(v)}
    pad = layer.padding
    per_dim_pad = _is_seq(pad) and len(pad) > 0 and all(_is_seq(p) for p in pad)
    if per_dim_pad:
        ranks.add(len(pad))
    if len(ranks) > 1:
        raise fail(name, layer, f"one rank for every field, not {sorted(ranks)}")
    rank = ranks.pop() if ranks else 1
    vals = [
        _ints(f"{name}.{f}", getattr(layer, f), rank, scalar_ok=True) for f in layer._fields[:3]
    ]
    pads = _parse_padding(f"{name}.padding", pad, rank, modes=(), int_ok=True, pair_for_all=True)
    return [(k, s, d, lo) for k, s, d, (lo, _) in zip(*vals, pads, strict=True)]


def receptive_field(layers: Sequence[Any]) -> ReceptiveField:
    r"""Receptive field (size, jump, start) of a stack of conv/pool layers, per spatial dim.

    Layer ``l`` reads, for output ``i``, the positions ``i*s - lo + t*d`` (``t < k``) of its
    input. Composing from the network input (``size = jump = 1``, ``start = 0``):

    .. math::

        \text{size}_l = \text{size}_{l-1} + (k_l - 1) d_l\,\text{jump}_{l-1}, \quad
        \text{jump}_l = s_l\,\text{jump}_{l-1}, \quad
        \text{start}_l = \text{start}_{l-1} - lo_l\,\text{jump}_{l-1}

    Output element ``i`` of the last layer depends on input positions inside
    ``[start + i*jump, start + i*jump + size - 1]``: the support of ``jax.grad`` of that
    output element always lies inside this span (clipped to the input). With non-zero weights,
    no padding, and no holes from dilation or ``stride > kernel``, it *is* the span. Padding on
    an inner layer can leave positions at the span's edge unread: a window that reaches into an
    inner layer's padding reads zeros there, not the input positions the span formula maps them
    to.

    Args:
      layers: a sequence of :class:`ConvLayer`, plain tuples ``(kernel, stride, dilation,
        padding)`` (trailing fields optional), ints (a kernel) or dicts of those fields. A layer
        given with ints everywhere applies to every dim of the others.

    Returns:
      :class:`ReceptiveField` of per-dim tuples (one entry for a stack of 1-D layers).

    Examples:
      >>> receptive_field([ConvLayer(3, 2), ConvLayer(3, 2)])
      ReceptiveField(size=(7,), jump=(4,), start=(0,))
      >>> receptive_field([ConvLayer((3, 5), (2, 1)), (2, 2)])
      ReceptiveField(size=(5, 6), jump=(4, 2), start=(0, 0))

    References:
      Araujo, Norris and Sim, *Computing receptive fields of convolutional neural networks*,
      Distill 2019 (they track the centre ``start + (size - 1)/2`` instead of the first
      position).
    """
    if not _is_seq(layers):
        raise fail("layers", layers, "a sequence of layers")
    parsed = [_layer_dims(layer, i) for i, layer in enumerate(layers)]
    rank = max((len(d) for d in parsed), default=1)
    for i, dims in enumerate(parsed):
        if len(dims) not in (1, rank):
            raise fail(f"layers[{i}]", layers[i], f"a layer of 1 or {rank} dims, as the others")
    size, jump, start = [1] * rank, [1] * rank, [0] * rank
    for dims in parsed:
        for a, (k, s, d, lo) in enumerate(dims * rank if len(dims) == 1 else dims):
            size[a] += (k - 1) * d * jump[a]
            start[a] -= lo * jump[a]
            jump[a] *= s
    return ReceptiveField(tuple(size), tuple(jump), tuple(start))


# ----------------------------------------------------------------------------------------------
# the structural gradient support of any model

_CALLS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "checkpoint": "jaxpr",
    "remat": "jaxpr",
}
_SELECT = {"max", "min", "select_n", "clamp"}
_REDUCE_SELECT = {"reduce_max", "reduce_min", "argmax", "argmin"}
_WINDOW_SELECT = {"reduce_window_max", "reduce_window_min"}
_CUM_SELECT = {"cummax", "cummin"}


def _is_float(x) -> bool:
    return np.issubdtype(np.dtype(x.dtype), np.inexact)


def _eqn_masks(eqn, invals, out_masks, rng) -> list[Any]:
    """Which entries of each operand reach the masked entries of the eqn's results."""
    name = eqn.primitive.name
    if name in _CALLS and _CALLS[name] in eqn.params:
        sub = eqn.params[_CALLS[name]]
        jaxpr, consts = (sub.jaxpr, sub.consts) if hasattr(sub, "consts") else (sub, [])
        return _backward(jaxpr, consts, invals, out_masks, rng)
    out = out_masks[0]
    if name in _SELECT:
        return [
            None
            if not _is_float(v)
            else (out if np.shape(v) == out.shape else jnp.full(np.shape(v), out.any()))
            for v in invals
        ]
    if name in _REDUCE_SELECT:
        axes = tuple(eqn.params["axes"])
        shape = np.shape(invals[0])
        return [jnp.broadcast_to(jnp.expand_dims(out, axes), shape)] + [None] * (len(invals) - 1)
    if name in _CUM_SELECT:
        axis, reverse = eqn.params["axis"], eqn.params["reverse"]
        # entry i reads entries 0..i (i..n-1 when reversed): j reaches a masked i on its side
        if reverse:
            return [jnp.cumsum(out, axis) > 0]
        return [jnp.flip(jnp.cumsum(jnp.flip(out, axis), axis), axis) > 0]
    if name in _WINDOW_SELECT:
        p = eqn.params
        x = invals[0]

        def window_sum(v):
            return lax.reduce_window(
                v,
                np.array(0, v.dtype),
                lax.add,
                p["window_dimensions"],
                p["window_strides"],
                p["padding"],
                p["base_dilation"],
                p["window_dilation"],
            )

        pos = rng.uniform(0.5, 1.5, np.shape(x)).astype(x.dtype)
        _, vjp = jax.vjp(window_sum, pos)
        return [jnp.abs(vjp(out.astype(x.dtype))[0]) > 0]
    # generic: differentiate the primitive alone at random positive float operands
    float_idx = [i for i, v in enumerate(invals) if _is_float(v)]
    if not float_idx:
        return [None] * len(invals)
    bind_params = eqn.primitive.get_bind_params(eqn.params)

    def call(*floats):
        args = list(invals)
        for i, f in zip(float_idx, floats, strict=True):
            args[i] = f
        res = eqn.primitive.bind(*args, **bind_params)
        return list(res) if eqn.primitive.multiple_results else [res]

    pos = [rng.uniform(0.5, 1.5, np.shape(invals[i])).astype(invals[i].dtype) for i in float_idx]
    results, vjp = jax.vjp(call, *pos)
    cts = [
        m.astype(r.dtype) if _is_float(r) else np.zeros(r.shape, jax.dtypes.float0)
        for m, r in zip(out_masks, results, strict=True)
    ]
    grads = vjp(cts)
    masks: list[Any] = [None] * len(invals)
    for i, g in zip(float_idx, grads, strict=True):
        masks[i] = jnp.abs(g) > 0
    return masks


def _backward(jaxpr, consts, args, out_masks, rng) -> list[Any]:
    """Forward values (for integer operands), then the masks from the results back."""
    from jax.extend.core import Literal  # on first use: `import gated_jax` stays light

    env: dict[Any, Any] = {}

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    for v, val in zip(jaxpr.constvars, consts, strict=True):
        env[v] = val
    for v, val in zip(jaxpr.invars, args, strict=True):
        env[v] = val
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        res = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
        for v, r in zip(eqn.outvars, res if eqn.primitive.multiple_results else [res], strict=True):
            env[v] = r
    masks: dict[Any, Any] = {}

    def add(v, m):
        if m is None or isinstance(v, Literal):
            return
        masks[v] = masks[v] | m if v in masks else m

    for v, m in zip(jaxpr.outvars, out_masks, strict=True):
        add(v, m)
    for eqn in reversed(jaxpr.eqns):
        outs = [masks.get(v) for v in eqn.outvars]
        if all(m is None for m in outs):
            continue
        outs = [
            np.zeros(np.shape(env[v]), bool) if m is None else m
            for v, m in zip(eqn.outvars, outs, strict=True)
        ]
        invals = [read(v) for v in eqn.invars]
        for v, m in zip(eqn.invars, _eqn_masks(eqn, invals, outs, rng), strict=True):
            add(v, m)
    return [masks.get(v) for v in jaxpr.invars]


def receptive_field_of(
    model: Callable | Any,
    input_shape: Sequence[int],
    output_index: int | Sequence[int],
    *,
    variables: Any = None,
    seed: int = 0,
) -> np.ndarray:
    r"""The exact set of input positions that reach one output position of any model.

    The structural support of :math:`\partial\, y[\text{output\_index}] / \partial x`: a
    position is in it when some path of non-zero-derivative primitives joins it to that
    output entry, whatever the weights' values (see the module docstring for how each
    primitive is treated and why no cancellation can hide a position). For a plain stack of
    conv / pooling layers without padding it equals the Minkowski sum of the layers' taps
    placed by :func:`gated_jax.shapes.receptive_field` (``start + i * jump``, within
    ``size``); with a skip connection it is the union over the paths.

    Args:
      model: a function ``x -> y`` of one array, a Flax linen module (initialised with
        ``variables`` or from ``seed``), or an NNX module (called as ``model(x)``); with
        ``variables`` and a plain function, ``model(variables, x)``.
      input_shape: the shape of ``x`` (batch and channel dims included).
      output_index: an index into ``y`` (a tuple of ints, one per dim of ``y``, or a flat int).
      variables: the linen module's variables or the function's first argument.
      seed: for the random positive operands (the result does not depend on it).

    Returns:
      A boolean array of ``input_shape``, ``True`` where the input entry reaches the output.

    Raises:
      ValueError: `` `output_index` (=...) must be ...`` outside the output's shape.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jax import lax
      >>> conv = lambda x: lax.conv_general_dilated(x, jnp.ones((1, 1, 3)), (2,), "VALID")
      >>> receptive_field_of(conv, (1, 1, 9), (0, 0, 1))[0, 0].astype(int).tolist()
      [0, 0, 1, 1, 1, 0, 0, 0, 0]
      >>> relu_max = lambda x: jnp.maximum(x, 0.0)[:2].max()
      >>> receptive_field_of(relu_max, (4,), ()).tolist()  # both rows, whatever the input
      [True, True, False, False]
    """
    shape = tuple(int(d) for d in input_shape)
    dtype = jnp.zeros((), float).dtype
    rng = np.random.default_rng(seed)
    x0 = jnp.asarray(rng.uniform(0.5, 1.5, shape).astype(dtype))
    if hasattr(model, "init") and hasattr(model, "apply"):  # flax.linen
        vs = variables if variables is not None else model.init(jax.random.key(seed), x0)

        def fn(x):
            return model.apply(vs, x)
    elif callable(model):

        def fn(x):
            return model(x) if variables is None else model(variables, x)
    else:
        raise fail("model", model, "a function of one array or a Flax module")
    closed = jax.make_jaxpr(fn)(x0)
    outs = closed.out_avals
    if len(outs) != 1:
        raise fail("model", model, f"a model with one array output, not {len(outs)}")
    out_shape = tuple(outs[0].shape)
    size = int(np.prod(out_shape, dtype=np.int64))
    if isinstance(output_index, (int, np.integer)) and not isinstance(output_index, bool):
        if not 0 <= output_index < max(size, 1):
            raise fail("output_index", output_index, f"a flat index in [0, {size}) of {out_shape}")
        index = np.unravel_index(int(output_index), out_shape) if out_shape else ()
    else:
        index = tuple(output_index)  # type: ignore[arg-type]  # a bool fails here, as before
        if len(index) != len(out_shape) or not all(
            isinstance(i, (int, np.integer)) and 0 <= i < n
            for i, n in zip(index, out_shape, strict=True)
        ):
            raise fail("output_index", output_index, f"one index per dim of the output {out_shape}")
    mask = np.zeros(out_shape, bool)
    mask[tuple(int(i) for i in index)] = True

    @jax.jit  # one compilation for the whole backward pass
    def masks(x, m):
        got = _backward(closed.jaxpr, closed.consts, [x], [m], rng)[0]
        return jnp.zeros(shape, bool) if got is None else got

    return np.asarray(masks(x0, mask), bool)
