"""Shape arithmetic checked against JAX: ``jax.eval_shape`` on random configs, ``jax.grad``.

Rows: the fraction of random configs where :func:`gated_jax.shapes.conv_output_shape` /
:func:`~gated_jax.shapes.conv_transpose_output_shape` disagree with ``jax.eval_shape`` (a
disagreement is a different shape, or one side raising while the other does not), and the
fraction of random conv stacks whose :func:`~gated_jax.shapes.receptive_field` span differs
from the support of ``jax.grad`` of one output element. All must be 0.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from gated_jax.verification import Check

ORDER = 10

__all__ = [
    "ORDER",
    "checks",
    "grad_support",
    "jax_conv_outcome",
    "jax_conv_transpose_outcome",
    "lay_out",
    "random_conv_config",
    "random_flax_module_args",
    "random_stack",
    "random_transpose_config",
    "tap_positions",
]

_PAD_STRINGS = ("SAME", "same", "Same_Lower", "SAME_LOWER", "VALID", "valid")


def lay_out(specs, sizes, kernel, batch, feat, out_f, in_f, *, as_cdn: bool = False) -> tuple:
    """``(lhs_shape, rhs_shape, dimension_numbers)`` for spec strings ``(lhs, rhs, out)``.

    ``specs=None`` is lax's default layout (``NC...``/``OI...``). Spatial sizes follow the order
    of the spatial letters in the kernel spec, as ``window_strides`` and the dilations do.
    ``as_cdn`` returns the dimension numbers as a ``ConvDimensionNumbers``.
    """
    if specs is None:
        return (batch, feat, *sizes), (out_f, in_f, *kernel), None
    from jax import lax

    lhs_spec, rhs_spec, _ = specs
    order = [c for c in rhs_spec if c not in "OI"]
    size_of = dict(zip(order, sizes, strict=True)) | {"N": batch, "C": feat}
    k_of = dict(zip(order, kernel, strict=True)) | {"O": out_f, "I": in_f}
    lhs = tuple(size_of[c] for c in lhs_spec)
    rhs = tuple(k_of[c] for c in rhs_spec)
    dn = lax.conv_dimension_numbers(lhs, rhs, tuple(specs)) if as_cdn else tuple(specs)
    return lhs, rhs, dn


def random_conv_config(rng: random.Random, *, max_size: int = 12) -> tuple:
    """``(lhs_shape, rhs_shape, window_strides, padding, kwargs)`` for ``conv_general_dilated``.

    Valid up to padding: 0-3 spatial dims, dimension numbers ``None`` / shuffled spec strings /
    ``ConvDimensionNumbers``, feature or batch groups, dilations, string padding in any case or
    explicit pairs in ``[-4, 5]`` (which may crop more than the input has: JAX rejects those).
    """
    n = rng.randint(0, 3)
    letters = list("HWD"[:n])
    groups = rng.randint(1, 3)
    fgc, bgc = (groups, 1) if rng.random() < 0.5 else (1, groups)
    in_f = rng.randint(0, 3)
    feat = in_f * fgc
    out_f = fgc * bgc * rng.randint(0, 3)
    batch = bgc * rng.randint(0, 3)
    sizes = [rng.randint(0, max_size) for _ in range(n)]
    kernel = [rng.randint(1, 5) for _ in range(n)]
    strides = tuple(rng.randint(1, 3) for _ in range(n))
    lhs_dil = None if rng.random() < 0.4 else tuple(rng.randint(1, 3) for _ in range(n))
    rhs_dil = None if rng.random() < 0.4 else tuple(rng.randint(1, 3) for _ in range(n))
    string_ok = lhs_dil is None or all(d == 1 for d in lhs_dil)
    if string_ok and rng.random() < 0.5:
        padding: Any = rng.choice(_PAD_STRINGS)
    else:
        padding = tuple((rng.randint(-4, 5), rng.randint(-4, 5)) for _ in range(n))
    kind = rng.choice(("none", "strings", "cdn"))
    specs = None
    if kind != "none":

        def perm(chars):
            chars = list(chars)
            rng.shuffle(chars)
            return "".join(chars)

        specs = (perm("NC" + "".join(letters)), perm("OI" + "".join(letters)))
        specs += (perm("NC" + "".join(letters)),)
    lhs, rhs, dn = lay_out(specs, sizes, kernel, batch, feat, out_f, in_f, as_cdn=kind == "cdn")
    kw = dict(
        lhs_dilation=lhs_dil,
        rhs_dilation=rhs_dil,
        dimension_numbers=dn,
        feature_group_count=fgc,
        batch_group_count=bgc,
    )
    return lhs, rhs, strides, padding, kw


def random_transpose_config(rng: random.Random) -> tuple:
    """``(lhs_shape, rhs_shape, strides, padding, kwargs)`` for ``lax.conv_transpose``."""
    n = rng.randint(0, 3)
    cin, cout = rng.randint(1, 3), rng.randint(1, 3)
    sizes = [rng.randint(0, 9) for _ in range(n)]
    kernel = [rng.randint(1, 5) for _ in range(n)]
    strides = tuple(rng.randint(1, 3) for _ in range(n))
    rhs_dil = None if rng.random() < 0.3 else tuple(rng.randint(1, 3) for _ in range(n))
    tk = rng.random() < 0.5
    consistent = rng.random() < 0.5
    if rng.random() < 0.5:
        padding: Any = rng.choice(("SAME", "VALID", "SAME", "VALID", "same", "SAME_LOWER"))
    else:
        padding = tuple((rng.randint(-2, 4), rng.randint(-2, 4)) for _ in range(n))
    lhs = (2, *sizes, cin)
    rhs = (*kernel, cout, cin) if tk else (*kernel, cin, cout)
    kw = dict(rhs_dilation=rhs_dil, transpose_kernel=tk, use_consistent_padding=consistent)
    return lhs, rhs, strides, padding, kw


def random_flax_module_args(rng: random.Random, transpose: bool) -> tuple[dict, tuple]:
    """Keyword arguments of a Flax ``Conv``/``ConvTranspose`` and an input shape.

    Covers every padding form Flax accepts (strings, ints, per-dim ints and pairs), int and
    per-dim strides and dilations, ``None`` defaults, 0/1/2 batch dims and empty batches.
    """
    conv_pads = ["SAME", "VALID", "same", "SAME_LOWER", "CIRCULAR", "REFLECT", "CAUSAL"]
    transpose_pads = ["SAME", "VALID", "CIRCULAR", "same"]
    n = rng.randint(1, 3)
    kernel = tuple(rng.randint(1, 4) for _ in range(n))
    kernel_size = kernel[0] if n == 1 and rng.random() < 0.5 else kernel
    strides = rng.choice([None, 1, rng.randint(1, 3), tuple(rng.randint(1, 3) for _ in range(n))])
    kdil = rng.choice([None, 1, 2, tuple(rng.randint(1, 2) for _ in range(n))])
    r = rng.random()
    if r < 0.55:
        padding: Any = rng.choice(transpose_pads if transpose else conv_pads)
    elif r < 0.7:
        padding = rng.randint(0, 3)
    elif r < 0.85:
        padding = [rng.randint(0, 2) for _ in range(n)]
    else:
        padding = [(rng.randint(-1, 3), rng.randint(-1, 3)) for _ in range(n)]
    kw: dict[str, Any] = dict(
        kernel_size=kernel_size, strides=strides, kernel_dilation=kdil, padding=padding
    )
    if transpose:
        kw["transpose_kernel"] = rng.random() < 0.5
    else:
        kw["input_dilation"] = rng.choice([1, 1, 1, 2, tuple(rng.randint(1, 2) for _ in range(n))])
        kw["feature_group_count"] = rng.choice([1, 1, 2])
    batch = rng.choice([(), (2,), (2, 3), (0,)])
    channels = 2 * rng.randint(1, 2)
    spatial = tuple(rng.randint(1, 9) for _ in range(n))
    return kw, (*batch, *spatial, channels)


def random_stack(rng: random.Random, *, max_layers: int = 4) -> list[tuple[int, int, int, tuple]]:
    """A random 1-D stack of ``(kernel, stride, dilation, (lo, hi))`` layers."""
    return [
        (
            rng.randint(1, 4),
            rng.randint(1, 3),
            rng.randint(1, 2),
            (rng.randint(0, 2), rng.randint(0, 2)),
        )
        for _ in range(rng.randint(1, max_layers))
    ]


def tap_positions(stack, index: int, length: int | None = None) -> set[int]:
    """Input positions that output ``index`` reads, by brute force.

    Without ``length``: every position the windows cover, padding included, as if every
    layer's input extended forever (the span the receptive-field formula describes). With the
    network's input ``length``: only positions reached through real (non-padding) positions
    of every layer, i.e. what ``jax.grad`` can see: a tap on an inner layer's padding reads a
    zero, not an input position.
    """
    lengths = [length]
    if length is not None:
        for k, s, d, (lo, hi) in stack:
            n = lengths[-1] + lo + hi - (k - 1) * d - 1
            lengths.append(max(0, n // s + 1) if n >= 0 else 0)
    pos = {index}
    for layer in range(len(stack) - 1, -1, -1):
        k, s, d, (lo, _) = stack[layer]
        pos = {p * s - lo + t * d for p in pos for t in range(k)}
        if length is not None:
            pos = {p for p in pos if 0 <= p < lengths[layer]}
    return pos


def jax_conv_outcome(lhs, rhs, strides, padding, **kw):
    """``jax.eval_shape(lax.conv_general_dilated, ...)`` as a tuple, or the exception type."""
    import jax
    from jax import lax

    return _outcome(
        lambda: (
            jax.eval_shape(
                lambda x, w: lax.conv_general_dilated(x, w, strides, padding, **kw),
                _sds(lhs),
                _sds(rhs),
            ).shape
        )
    )


def jax_conv_transpose_outcome(lhs, rhs, strides, padding, **kw):
    """``jax.eval_shape(lax.conv_transpose, ...)`` as a tuple, or the exception type."""
    import jax
    from jax import lax

    return _outcome(
        lambda: (
            jax.eval_shape(
                lambda x, w: lax.conv_transpose(x, w, strides, padding, **kw), _sds(lhs), _sds(rhs)
            ).shape
        )
    )


def _sds(shape):
    import jax
    import jax.numpy as jnp

    return jax.ShapeDtypeStruct(tuple(shape), jnp.float32)


def _outcome(fn, *args, **kw):
    try:
        return tuple(int(d) for d in fn(*args, **kw))
    except Exception as e:  # the oracle and the rule may both reject: compare kinds
        return type(e)


def grad_support(stack, length: int, index: int) -> tuple[np.ndarray, int]:
    """Input positions with non-zero ``d out[index] / d x`` (positive weights, ones input)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    def net(x):
        y = x[None, None, :]
        for k, s, d, (lo, hi) in stack:
            w = jnp.linspace(0.5, 1.5, k, dtype=x.dtype)[None, None, :]
            y = lax.conv_general_dilated(y, w, (s,), ((lo, hi),), rhs_dilation=(d,))
        return y[0, 0]

    x = jnp.ones((length,), jnp.float64)
    out_len = jax.eval_shape(net, x).shape[0]
    if out_len == 0:
        return np.zeros(0, dtype=int), 0
    g = jax.jit(jax.grad(lambda x: net(x)[min(index, out_len - 1)]))(x)  # one compilation
    return np.flatnonzero(np.asarray(g) != 0), out_len


def checks(seed: int) -> list[Check]:
    """Rows whose error is the fraction of random cases where the rule and JAX disagree."""

    from gated_jax import shapes

    rng = random.Random(seed)

    n_conv, bad = 600, 0
    for _ in range(n_conv):
        lhs, rhs, strides, padding, kw = random_conv_config(rng)
        ref = jax_conv_outcome(lhs, rhs, strides, padding, **kw)
        ours = _outcome(shapes.conv_output_shape, lhs, rhs, strides, padding, **kw)
        if isinstance(ref, tuple):
            bad += ours != ref
        else:
            bad += ours is not ValueError
    rows = [
        Check(
            "shapes",
            "conv_output_shape (error: fraction of configs that disagree)",
            f"jax.eval_shape(lax.conv_general_dilated), {n_conv} random configs",
            bad / n_conv,
            n_conv,
        )
    ]

    n_tr, bad = 300, 0
    for _ in range(n_tr):
        lhs, rhs, strides, padding, kw = random_transpose_config(rng)
        ref = jax_conv_transpose_outcome(lhs, rhs, strides, padding, **kw)
        ours = _outcome(shapes.conv_transpose_output_shape, lhs, rhs, strides, padding, **kw)
        if isinstance(ref, tuple):
            bad += ours != ref
        else:
            bad += ours is not ValueError
    rows.append(
        Check(
            "shapes",
            "conv_transpose_output_shape",
            f"jax.eval_shape(lax.conv_transpose), {n_tr} random configs",
            bad / n_tr,
            n_tr,
        )
    )

    import flax.linen as nn
    import jax

    n_flax, bad = 80, 0
    for i in range(n_flax):
        transpose = i % 2 == 1
        kw, shape = random_flax_module_args(rng, transpose)
        cls = nn.ConvTranspose if transpose else nn.Conv
        module = cls(features=3, kernel_init=nn.initializers.ones, use_bias=False, **kw)
        ref = _outcome(
            lambda m=module, shape=shape: (
                jax.eval_shape(
                    lambda x: m.init_with_output(jax.random.key(0), x)[0], _sds(shape)
                ).shape
            )
        )
        ours = _outcome(shapes.flax_conv_output_shape, module, shape)
        bad += (ours != ref) if isinstance(ref, tuple) else (ours is not ValueError)
    rows.append(
        Check(
            "shapes",
            "flax_conv_output_shape (linen Conv / ConvTranspose)",
            f"applying the module (jax.eval_shape of init), {n_flax} random configs",
            bad / n_flax,
            n_flax,
        )
    )

    n_rf, bad = 12, 0
    for _ in range(n_rf):
        stack = random_stack(rng, max_layers=3)
        length = rng.randint(8, 24)
        index = rng.randint(0, 3)
        support, out_len = grad_support(stack, length, index)
        if out_len == 0:
            continue
        i = min(index, out_len - 1)
        (size,), (jump,), (start,) = shapes.receptive_field(stack)
        taps = tap_positions(stack, i)
        # The span is exactly [min, max] of the positions the windows cover; jax.grad sees
        # those reached through real positions of every layer.
        ok = min(taps) == start + i * jump and max(taps) == min(taps) + size - 1
        ok &= set(support.tolist()) == tap_positions(stack, i, length)
        bad += not ok
    rows.append(
        Check(
            "shapes",
            "receptive_field (size, jump, start)",
            f"support of jax.grad of one output, {n_rf} random 1-D stacks",
            bad / n_rf,
            n_rf,
        )
    )
    return rows
