"""Convolution shape arithmetic: the capability's verify rows, report section and benchmark.

Verify rows (``checks``): Shape arithmetic checked against JAX: ``jax.eval_shape`` on random
configs, ``jax.grad``.

Rows: the fraction of random configs where :func:`gated_jax.shapes.conv_output_shape` /
:func:`~gated_jax.shapes.conv_transpose_output_shape` disagree with ``jax.eval_shape`` (a
disagreement is a different shape, or one side raising while the other does not), and the
fraction of random conv stacks whose :func:`~gated_jax.shapes.receptive_field` span differs
from the support of ``jax.grad`` of one output element. All must be 0.

Rows of the ports: each framework's Conv / ConvTranspose port (PyTorch, Keras, ONNX), called
on random configs drawn from the seed, against that framework's definition written out in
NumPy here (padded grouped correlation; transposed: each input entry scatters its kernel copy,
the documented output window kept), in float64.

Report section (``section``): seed 1.1(a) and 1.1(b), convolution output shapes derived and
checked; then the inverse direction (padding for a target size, the ConvTranspose that undoes
a Conv), the framework ports and the receptive field of any model, each with the tracker
thread it answers (jax#4592, flax#1872, flax#4593).

Every number is computed by :mod:`gated_jax.shapes` and compared with ``jax.eval_shape`` of the
real ``lax.conv_general_dilated`` when the report is written.
"""

from __future__ import annotations

import math
import random
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gated_jax.lab._report import render
from gated_jax.lab._verify import Check
from gated_jax.testing import numpy_conv, numpy_conv_transpose

# --- from verification/shapes.py ----------------------------------------------------------

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


def receptive_field_case(stack, length: int, index: int) -> bool | None:
    """One case of the receptive-field row: do the span and ``jax.grad`` agree?

    The span ``(size, jump, start)`` of output ``index`` is exactly ``[min, max]`` of the
    positions its windows cover; ``jax.grad`` of that output on a ``length``-long input sees
    those reached through real positions of every layer. ``None`` when the stack leaves no
    output (the row skips the case).
    """
    from gated_jax import shapes

    support, out_len = grad_support(stack, length, index)
    if out_len == 0:
        return None
    i = min(index, out_len - 1)
    (size,), (jump,), (start,) = shapes.receptive_field(stack)
    taps = tap_positions(stack, i)
    ok = min(taps) == start + i * jump and max(taps) == min(taps) + size - 1
    return ok and set(support.tolist()) == tap_positions(stack, i, length)


def _conv_row(rng: random.Random) -> Check:
    from gated_jax import shapes

    n_conv, bad = 600, 0
    for _ in range(n_conv):
        lhs, rhs, strides, padding, kw = random_conv_config(rng)
        ref = jax_conv_outcome(lhs, rhs, strides, padding, **kw)
        ours = _outcome(shapes.conv_output_shape, lhs, rhs, strides, padding, **kw)
        if isinstance(ref, tuple):
            bad += ours != ref
        else:
            bad += ours is not ValueError
    return Check(
        "shapes",
        "conv_output_shape (error: fraction of configs that disagree)",
        f"jax.eval_shape(lax.conv_general_dilated), {n_conv} random configs",
        bad / n_conv,
        n_conv,
    )


def _transpose_row(rng: random.Random) -> Check:
    from gated_jax import shapes

    n_tr, bad = 300, 0
    for _ in range(n_tr):
        lhs, rhs, strides, padding, kw = random_transpose_config(rng)
        ref = jax_conv_transpose_outcome(lhs, rhs, strides, padding, **kw)
        ours = _outcome(shapes.conv_transpose_output_shape, lhs, rhs, strides, padding, **kw)
        if isinstance(ref, tuple):
            bad += ours != ref
        else:
            bad += ours is not ValueError
    return Check(
        "shapes",
        "conv_transpose_output_shape",
        f"jax.eval_shape(lax.conv_transpose), {n_tr} random configs",
        bad / n_tr,
        n_tr,
    )


def _flax_row(rng: random.Random) -> Check:
    import flax.linen as nn
    import jax

    from gated_jax import shapes

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
    return Check(
        "shapes",
        "flax_conv_output_shape (linen Conv / ConvTranspose)",
        f"applying the module (jax.eval_shape of init), {n_flax} random configs",
        bad / n_flax,
        n_flax,
    )


def _receptive_row(rng: random.Random) -> Check:
    n_rf, bad = 12, 0
    for _ in range(n_rf):
        stack = random_stack(rng, max_layers=3)
        length = rng.randint(8, 24)
        index = rng.randint(0, 3)
        bad += receptive_field_case(stack, length, index) is False
    return Check(
        "shapes",
        "receptive_field (size, jump, start)",
        f"support of jax.grad of one output, {n_rf} random 1-D stacks",
        bad / n_rf,
        n_rf,
    )


def checks(seed: int) -> list[Check]:
    """Rows whose error is the fraction of random cases where the rule and JAX disagree."""
    rng = random.Random(seed)  # one stream, drawn in row order
    rows = [_conv_row(rng), _transpose_row(rng), _flax_row(rng), _receptive_row(rng)]
    rows.append(_inverse_row(rng))
    rows += _port_rows(random.Random(seed))  # its own stream: the rows of a seed, alone
    return rows


# --- the framework ports: definitions written out in NumPy, independent of gated_jax.ports ----


def _keff(k: int, d: int) -> int:
    return (k - 1) * d + 1


def _tf_same(h: int, k: int, s: int, d: int, lower: bool = False) -> tuple[int, int]:
    total = max((math.ceil(h / s) - 1) * s + _keff(k, d) - h, 0)
    small = total // 2
    return (total - small, small) if lower else (small, total - small)


def _draw_dims(rng: random.Random):
    n = rng.randint(1, 2)
    return (
        n,
        tuple(rng.randint(1, 3) for _ in range(n)),
        tuple(rng.randint(1, 3) for _ in range(n)),
        tuple(rng.randint(1, 2) for _ in range(n)),
    )


def _keras_transpose(rng, n, ks, ss, ds, hs):
    """Keras ``Conv*DTranspose``: ``(port, begin, size)`` of its documented output window."""
    from gated_jax import ports

    padding = rng.choice(["valid", "same"])
    ops = None if rng.random() < 0.4 else tuple(rng.randint(0, s - 1) for s in ss)
    port = ports.keras_conv_transpose(
        n, ks, strides=ss, padding=padding, output_padding=ops, dilation_rate=ds
    )
    begin, size = [], []
    for i, (h, k, s, d) in enumerate(zip(hs, ks, ss, ds, strict=True)):
        ke = _keff(k, d)  # keras conv_utils.deconv_output_length
        if ops is None:
            t = h * s + max(ke - s, 0) if padding == "valid" else h * s
        else:
            t = (h - 1) * s + ke - 2 * (ke // 2 if padding == "same" else 0) + ops[i]
        size.append(t)  # start: TF's 'SAME' low padding of the forward conv t -> h
        begin.append(0 if padding == "valid" else max((h - 1) * s + ke - t, 0) // 2)
    return port, begin, size


def _onnx_transpose(rng, n, ks, ss, ds, hs, g):
    """ONNX ``ConvTranspose``: ``(port, begin, size)`` by the spec's output_shape / pads rule."""
    from gated_jax import ports

    auto = rng.choice(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])
    ops = [rng.randint(0, s - 1) for s in ss]  # ONNX: output_padding < stride
    full = [
        s * (h - 1) + op + _keff(k, d) for h, s, op, k, d in zip(hs, ss, ops, ks, ds, strict=True)
    ]
    shape = None
    if rng.random() < 0.4:
        shape = [rng.randint(max(1, f - 3), f) for f in full]  # at most the full result
    pads = [rng.randint(0, 1) for _ in range(2 * n)]
    port = ports.onnx_conv_transpose(
        ks,
        auto_pad=auto,
        pads=pads if auto == "NOTSET" else None,  # the spec: not with auto_pad
        strides=ss,
        dilations=ds,
        group=g,
        output_padding=ops,
        output_shape=shape,
    )
    begin, size = [], []
    for i, f in enumerate(full):  # the ONNX spec's output_shape / pads rule
        if shape is None and auto in ("NOTSET", "VALID"):
            b, e = (pads[i], pads[n + i]) if auto == "NOTSET" else (0, 0)
            begin.append(b)
            size.append(f - b - e)
            continue
        t = shape[i] if shape is not None else hs[i] * ss[i]
        total = f - t
        begin.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
        size.append(t)
    return port, begin, size


def _torch_transpose(rng, n, ks, ss, ds, hs, g):
    """PyTorch ``ConvTranspose*d``: ``(port, begin, size)`` by its documented size rule."""
    from gated_jax import shapes

    ops = tuple(rng.randint(0, max(s, d) - 1) for s, d in zip(ss, ds, strict=True))
    ps = tuple(
        rng.randint(0, min(d * (k - 1), ((h - 1) * s + d * (k - 1) + op) // 2))
        for h, k, s, d, op in zip(hs, ks, ss, ds, ops, strict=True)
    )
    port = shapes.torch_conv_transpose(
        n, ks, stride=ss, padding=ps, output_padding=ops, groups=g, dilation=ds
    )
    begin = list(ps)  # PyTorch's documented size rule
    size = [
        (h - 1) * s - 2 * p + d * (k - 1) + op + 1
        for h, s, p, d, k, op in zip(hs, ss, ps, ds, ks, ops, strict=True)
    ]
    return port, begin, size


def _keras_forward(rng, n, ks, ss, ds, hs, g):
    """Keras ``Conv*D``: ``(port, pad pairs, pad mode)``."""
    from gated_jax import ports

    padding = rng.choice(["valid", "same"] + (["causal"] if n == 1 else []))
    port = ports.keras_conv(n, ks, strides=ss, padding=padding, dilation_rate=ds, groups=g)
    if padding == "valid":
        pairs = [(0, 0)] * n
    elif padding == "causal":
        pairs = [(_keff(ks[0], ds[0]) - 1, 0)]
    else:
        pairs = [_tf_same(h, k, s, d) for h, k, s, d in zip(hs, ks, ss, ds, strict=True)]
    return port, pairs, "constant"


def _onnx_forward(rng, n, ks, ss, ds, hs, g):
    """ONNX ``Conv``: ``(port, pad pairs, pad mode)``."""
    from gated_jax import ports

    auto = rng.choice(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])
    pads = [rng.randint(0, 2) for _ in range(2 * n)]
    pads_arg = pads if auto == "NOTSET" else None  # the spec: not with auto_pad
    port = ports.onnx_conv(ks, auto_pad=auto, pads=pads_arg, strides=ss, dilations=ds, group=g)
    if auto == "NOTSET":
        pairs = [(pads[i], pads[n + i]) for i in range(n)]
    elif auto == "VALID":
        pairs = [(0, 0)] * n
    else:
        pairs = [
            _tf_same(h, k, s, d, auto == "SAME_LOWER")
            for h, k, s, d in zip(hs, ks, ss, ds, strict=True)
        ]
    return port, pairs, "constant"


def _torch_forward(rng, n, ks, ss, ds, hs, g):
    """PyTorch ``Conv*d``: ``(port, pad pairs, pad mode)`` (its four ``padding_mode`` values)."""
    from gated_jax import shapes

    torch_modes = {
        "zeros": "constant",
        "reflect": "reflect",
        "replicate": "edge",
        "circular": "wrap",
    }
    pm = rng.choice(list(torch_modes))
    ps = tuple(rng.randint(0, min(2, h - 1)) for h in hs)
    port = shapes.torch_conv(n, ks, stride=ss, padding=ps, dilation=ds, groups=g, padding_mode=pm)
    pairs, mode = [(p, p) for p in ps], torch_modes[pm]
    return port, pairs, mode


def _channels_last(port, x, w, want, keras: bool):
    """The case in the framework's layout: Keras is channels last, kernel ``(*k, ..., ...)``."""
    if keras:
        return port, np.moveaxis(x, 1, -1), np.moveaxis(np.moveaxis(w, 0, -1), 0, -2), want, True
    return port, x, w, want, False


def _port_case(rng: random.Random, framework: str, transposed: bool):
    """``(port, x, w, want, native_layout)`` for one random config of a framework."""
    n, ks, ss, ds = _draw_dims(rng)
    if framework == "keras" and max(ss) > 1 and max(ds) > 1:
        ds = (1,) * n  # Keras refuses strides > 1 together with dilation_rate > 1
    g = rng.choice([1, 2])
    nrng = np.random.default_rng(rng.randrange(2**31))
    if transposed:
        hs = tuple(rng.randint(1, 4) for _ in range(n))
        if framework == "keras":
            g = 1
            port, begin, size = _keras_transpose(rng, n, ks, ss, ds, hs)
        elif framework == "onnx":
            port, begin, size = _onnx_transpose(rng, n, ks, ss, ds, hs, g)
        else:
            port, begin, size = _torch_transpose(rng, n, ks, ss, ds, hs, g)
        if min(size) < 1:
            return _port_case(rng, framework, transposed)
        x = nrng.standard_normal((1, 2 * g, *hs))
        w = nrng.standard_normal((2 * g, 2, *ks))  # (C_in, C_out/g, *k)
        want = numpy_conv_transpose(x, w, ss, ds, g, begin, size)
        return _channels_last(port, x, w, want, framework == "keras")
    hs = tuple(rng.randint(_keff(k, d), 8) for k, d in zip(ks, ds, strict=True))
    forward = {"keras": _keras_forward, "onnx": _onnx_forward}.get(framework, _torch_forward)
    port, pairs, mode = forward(rng, n, ks, ss, ds, hs, g)
    x = nrng.standard_normal((1, 2 * g, *hs))
    w = nrng.standard_normal((2 * g, 2, *ks))  # (O, I/g, *k)
    want = numpy_conv(x, w, ss, pairs, ds, g, mode)
    return _channels_last(port, x, w, want, framework == "keras")


def _port_rows(rng: random.Random, per_framework: int = 4) -> list[Check]:
    """The ports' own calls (one XLA conv each) against the frameworks' definitions, float64."""
    import jax

    from gated_jax.testing import max_rel_error

    rows = []
    names = {"torch": "PyTorch", "keras": "Keras", "onnx": "ONNX"}
    with jax.enable_x64(True):
        for framework, label in names.items():
            err, cases = 0.0, 0
            for i in range(per_framework):
                port, x, w, want, last = _port_case(rng, framework, transposed=i % 2 == 1)
                got = np.asarray(port(x, w))
                err = max(err, max_rel_error(np.moveaxis(got, -1, 1) if last else got, want))
                cases += 1
            rows.append(
                Check(
                    "shapes",
                    f"{label} Conv / ConvTranspose ports (values, float64)",
                    "the framework's definition in NumPy (padded grouped correlation; "
                    f"transposed: scatter, documented output window), {cases} random configs",
                    err,
                    cases,
                )
            )
    return rows


def _inverse_row(rng: random.Random, n_cases: int = 200) -> Check:
    """padding_for_output / transpose_padding_for_output round trips through eval_shape."""
    import jax
    from jax import lax

    from gated_jax import shapes

    bad = 0
    for i in range(n_cases):
        n = rng.randint(1, 2)
        ks = tuple(rng.randint(1, 4) for _ in range(n))
        ss = tuple(rng.randint(1, 3) for _ in range(n))
        ds = tuple(rng.randint(1, 2) for _ in range(n))
        ins = tuple(rng.randint(1, 12) for _ in range(n))
        kernel = _sds((*ks, 1, 1))
        if i % 2:  # the transposed direction: any target size >= 1
            outs = tuple(rng.randint(1, 30) for _ in range(n))
            pads = shapes.transpose_padding_for_output(ins, outs, ks, stride=ss, dilation=ds)
            fn = lambda x, w, p=pads, s=ss, d=ds: lax.conv_transpose(x, w, s, p, rhs_dilation=d)  # noqa: E731
        else:
            valid = [
                shapes.conv_output_size(h, k, stride=s, dilation=d)
                for h, k, s, d in zip(ins, ks, ss, ds, strict=True)
            ]
            outs = tuple(v + rng.randint(0, 4) for v in valid)
            pads = shapes.padding_for_output(ins, outs, ks, stride=ss, dilation=ds)
            fn = lambda x, w, p=pads, s=ss, d=ds, n=n: lax.conv_general_dilated(  # noqa: E731
                x, w, s, p, rhs_dilation=d, dimension_numbers=_nhwc(n)
            )
        got = jax.eval_shape(fn, _sds((1, *ins, 1)), kernel).shape[1:-1]
        bad += tuple(got) != outs
    return Check(
        "shapes",
        "padding_for_output, transpose_padding_for_output (target size reached)",
        f"jax.eval_shape of the conv / conv_transpose, {n_cases} random targets",
        bad / n_cases,
        n_cases,
    )


def _nhwc(n: int) -> tuple[str, str, str]:
    sp = "HW"[:n]
    return ("N" + sp + "C", sp + "IO", "N" + sp + "C")


# --- from report/shapes.py ----------------------------------------------------------------

TITLE = "Convolution output shapes (seed 1.1(a), 1.1(b))"


def _jax_shape(lhs, rhs, strides, padding, **kw) -> tuple[int, ...]:
    import jax
    import jax.numpy as jnp
    from jax import lax

    return tuple(
        jax.eval_shape(
            lambda x, w: lax.conv_general_dilated(x, w, strides, padding, **kw),
            jax.ShapeDtypeStruct(lhs, jnp.float32),
            jax.ShapeDtypeStruct(rhs, jnp.float32),
        ).shape
    )


def _coverage_figure(ctx) -> str:
    """The 4 windows of seed 1.1(a) along the 10 rows: row 9 is read by none."""
    import matplotlib.pyplot as plt

    n, k, s = 10, 3, 2
    out = (n - k) // s + 1
    fig, ax = plt.subplots(figsize=(7, 2.2))
    for r in range(n):
        covered = any(i * s <= r < i * s + k for i in range(out))
        ax.add_patch(
            plt.Rectangle(
                (r, 0), 0.95, 0.9, color="#9ecae1" if covered else "#fc9272", ec="black", lw=0.5
            )
        )
        ax.text(r + 0.47, 0.45, str(r), ha="center", va="center", fontsize=9)
    for i in range(out):
        y = 1.1 + 0.35 * i
        ax.plot([i * s + 0.05, i * s + k - 0.1], [y, y], lw=4, color="#3182bd")
        ax.text(i * s + k + 0.05, y, f"window {i}", va="center", fontsize=8)
    ax.set_xlim(-0.2, n + 1.6)
    ax.set_ylim(-0.2, 1.1 + 0.35 * out + 0.1)
    ax.axis("off")
    ax.set_title(
        "seed 1.1(a), H = 10, K = 3, S = 2: windows start at 0, 2, 4, 6; row 9 (red) is unread"
    )
    return ctx.save_figure(fig, "shapes_seed_1_1a_windows")


SECTION = """\
### 1.1(a): 10 x 11 input, 3 x 3 kernel, stride 2, no padding

**Answer: {a_shape}** (`conv_output_shape` gives `{a_lib}`, `jax.eval_shape` of the real op \
gives `{a_real}`).

```text
$ gated-jax shape 10x11 --kernel 3 --stride 2
{a_shape}

{a_explain}
```

{a_fig}

**What the seed gets wrong.** It writes `(10 - (3 - 2))/2 = 4.5 ≈ 4` and \
`(11 - (3 - 2))/2 = 5`. That is not the rule: the rule is `floor((H - K)/S) + 1`, i.e. \
`floor((10 - 3)/2) + 1 = 4` and `floor((11 - 3)/2) + 1 = 5`. Both land on 4 x 5 here only \
because `H - (K - 2)` and `H - K + S` coincide when `S = 2`. The fractional part is not a \
rounding nuisance: `(10 - 3)/2 + 1 = 4.5 -> 4` means the last input row (row 9) is read by no \
window, which the seed does not mention.

The seed's arithmetic applied to other layers (no padding, no dilation) disagrees with JAX:

| H | K | S | seed's `(H - (K-2))/S`, floored | rule | `jax.eval_shape` |
|---:|---:|---:|---|---|---:|
{seed_rule_rows}

### 1.1(b): the general rule

For a `C x H x W` input and `F` filters of `C x K x K` with padding `P`, stride `S` and \
dilation `D`, the output is `F x H1 x W1` with

`H1 = max(0, floor((H + 2P - (K + (K-1)(D-1))) / S) + 1)` (and the same for `W1`).

The seed's formula is this one without the `max(0, .)`. Example with \
C={c}, H={h}, W={w}, K={k}, P={p}, S={s}, D={d}, F={f}: `{b_shape}` (`jax.eval_shape`: \
`{b_real}`).

```text
{b_explain}
```

The warnings are not decoration: with `S = D = 2` every kernel tap lands on an even padded \
position, so every odd input row is read by no output at all, something the shape formula alone \
hides (the rows are listed exactly; `tests/test_shapes_explain.py` checks them against the rows \
where `jax.grad` is zero).

**What 1.1(b) leaves out**, each checked against `jax.eval_shape`:

- *No clamp at 0*: H=2, K=5 gives `floor((2 - 5)/1) + 1 = {raw}` by the formula; the real \
output is {clamped} (`{clamped_real}`).
- *Only symmetric padding*: `'SAME'` with K=4 pads `{same_pads}` (odd total, the extra row at \
the end; `'SAME_LOWER'` puts it first), which no integer `P` expresses; output {same_size} = \
`{same_real}` from JAX.
- *Input (lhs) dilation* `L`, the transposed-convolution mechanism: `H` becomes `(H-1)L + 1`, \
padding applies after it: H=10, L=2, K=3, P=2 gives {ld} (`{ld_real}`).
- *Grouped convolutions*: with `G` groups each filter sees `C/G` channels, so the kernel is \
`F x C/G x K x K`: C=6, G=3, F=9 uses a 9 x 2 x 3 x 3 kernel, output `{grouped}` \
(`{grouped_real}`).
- *Transposed convolutions*: `lax.conv_transpose` with K=3, S=2, D=2, `'VALID'` on H=10 gives \
{transposed} (`HS + max(K_eff - S, 0)`); JAX's own `lax.conv_transpose_shape_tuple` ignores \
the dilation and says {lax_says}.
- *Negative padding* (cropping) is allowed while the padded size stays >= 0, and a kernel wider \
than the input silently yields a zero-size output; `explain_conv` warns about both.

### Backwards and across frameworks

The questions users bring to the JAX and Flax trackers run the other way: *which* padding \
gives a size, *which* ConvTranspose undoes a Conv, and what a PyTorch, Keras or ONNX layer is \
in JAX.

- *jax#4592, `output_shape` for `lax.conv_transpose`*: \
`transpose_padding_for_output(32, 65, 3, stride=2)` = `{t_pads}`; `lax.conv_transpose` with it \
outputs {t_got} (`jax.eval_shape`). Every size >= 1 is reachable; the split returned is the \
gradient's, so with `transpose_kernel=True` the values are the input gradient of the conv from \
65 to 32.
- *flax#1872, PyTorch's `ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1)` in \
Flax*: `nn.ConvTranspose(..., strides=(2, 2), padding={torch_padding}, transpose_kernel=True)` \
with `kernel_from_torch(weight, transposed=True)`: explicit \
`(d(k-1) - p, d(k-1) - p + output_padding)` on the stretched input, {torch_out} from 16 x 16 \
as PyTorch's rule says. `gated-jax shape 16x16 --from-torch 'ConvTranspose2d(C, F, 3, \
stride=2, padding=1, output_padding=1)'` prints it.
- *flax#4593, the ConvTranspose that undoes a Conv*: for a stride-2 `'SAME'` conv of 10, \
`inverse_conv_transpose(10, 3, stride=2, padding='SAME')` gives padding `{inv_padding}` (not \
`'SAME'`), output {inv_size}, and equals `jax.vjp` of the conv (max abs difference \
{inv_err:.1e} in float64), for any size, also where the stride does not divide it.
- *Keras / TensorFlow `'same'` depends on the input size* (total \
`max((ceil(H/S) - 1) S + K_eff - H, 0)`, the extra at the end): \
`keras_conv(1, 3, strides=2, padding='same')` pads {keras_rows}. No fixed padding expresses it \
(PyTorch's symmetric `padding=p` cannot express the odd totals), but lax's `'SAME'` is the same \
rule resolved at trace time, so one lax / Flax call does. `Conv*Transpose` follows \
`deconv_output_length`: `keras_conv_transpose(1, 3, strides=2, padding='same')` maps 5 to \
{keras_t}.
- *ONNX `ConvTranspose(output_shape=...)`*: the spec's `total_padding = S(H-1) + \
output_padding + K_eff - output_shape`, split by `auto_pad`: for H=5, K=3, S=2, \
`output_shape=[10]`, `SAME_UPPER`, the window of the full result is `{onnx_window}` (begin, \
size), i.e. `lax.conv_transpose` padding `{onnx_padding}`.
- *Receptive field of any model*: `receptive_field_of` reads the structural support of the \
gradient from the jaxpr (no ReLU, max-pool or zero weight can hide a position). For a block of \
two dilated 3-tap convs plus a 2-tap skip conv, output 10 is reached from inputs {rf_inputs}: \
the main path's taps (`receptive_field` span {rf_size} from {rf_start}, every third position) \
and the skip's 10, 11; neither stack formula alone gives the union.

The ports are checked on 500 random configs per framework against the frameworks' definitions \
(`tests/test_ports.py`) and by the verify rows below."""


def _shape_text(shape) -> str:
    return " x ".join(map(str, shape))


def _part_a(ctx) -> dict:
    """1.1(a): the answer, its explanation, the coverage figure."""
    from gated_jax.shapes import conv_output_shape, explain_conv

    e = explain_conv((10, 11), 3, stride=2)
    return {
        "a_shape": _shape_text(e.output_shape),
        "a_lib": conv_output_shape((1, 1, 10, 11), (1, 1, 3, 3), (2, 2), "VALID"),
        "a_real": _jax_shape((1, 1, 10, 11), (1, 1, 3, 3), (2, 2), "VALID"),
        "a_explain": str(e),
        "a_fig": _coverage_figure(ctx),
    }


def _seed_rule_rows() -> str:
    """The layers where the seed's ``(H - (K - 2)) / S`` floored is not the output size."""
    from gated_jax.shapes import conv_output_size

    rows = []
    for h, k, s in [(12, 3, 3), (10, 5, 3), (7, 3, 1), (9, 2, 4), (28, 5, 1), (15, 4, 3)]:
        seed_val = (h - (k - 2)) / s
        rule = conv_output_size(h, k, stride=s)
        if math.floor(seed_val) == rule:
            continue
        assert rule == _jax_shape((1, 1, h), (1, 1, k), (s,), "VALID")[2]
        rows.append(
            f"| {h} | {k} | {s} | ({h} - ({k} - 2))/{s} = {seed_val:.3g} -> "
            f"{math.floor(seed_val)} | floor(({h} - {k})/{s}) + 1 = {rule} | {rule} |"
        )
    return "\n".join(rows)


def _part_b() -> dict:
    """1.1(b): the general rule on one example."""
    from gated_jax.shapes import explain_conv

    c, h, w, k, p, s, d, f = 3, 32, 28, 5, 2, 2, 2, 16
    eb = explain_conv((h, w), k, stride=s, padding=p, dilation=d, channels=c, filters=f)
    realb = _jax_shape((1, c, h, w), (f, c, k, k), (s, s), ((p, p), (p, p)), rhs_dilation=(d, d))
    example = dict(c=c, h=h, w=w, k=k, p=p, s=s, d=d, f=f)
    return example | {"b_shape": _shape_text(eb.output_shape), "b_real": realb, "b_explain": eb}


def _gaps() -> dict:
    """What 1.1(b) leaves out, each number from the library and from ``jax.eval_shape``."""
    from gated_jax.shapes import (
        conv_output_shape,
        conv_output_size,
        conv_transpose_output_shape,
        padding_pairs,
    )

    groups = dict(feature_group_count=3)
    t = conv_transpose_output_shape((1, 10, 1), (3, 1, 1), (2,), "VALID", rhs_dilation=(2,))
    lax_says = lax.conv_transpose_shape_tuple(
        (1, 10, 1), (3, 1, 1), (2,), "VALID", ("NHC", "HIO", "NHC")
    )
    return {
        "raw": math.floor((2 + 0 - 5) / 1) + 1,
        "clamped": conv_output_size(2, 5),
        "clamped_real": _jax_shape((1, 1, 2), (1, 1, 5), (1,), "VALID"),
        "same_pads": padding_pairs("SAME", (10,), (4,), (1,))[0],
        "same_size": conv_output_size(10, 4, padding="SAME"),
        "same_real": _jax_shape((1, 1, 10), (1, 1, 4), (1,), "SAME")[2],
        "ld": conv_output_size(10, 3, input_dilation=2, padding=(2, 2)),
        "ld_real": _jax_shape((1, 1, 10), (1, 1, 3), (1,), ((2, 2),), lhs_dilation=(2,))[2],
        "grouped": conv_output_shape((1, 6, 8, 8), (9, 2, 3, 3), (1, 1), "VALID", **groups),
        "grouped_real": _jax_shape((1, 6, 8, 8), (9, 2, 3, 3), (1, 1), "VALID", **groups),
        "transposed": t[1],
        "lax_says": int(lax_says[1]),
    }


def _inverse_data() -> dict:
    """jax#4592, flax#1872, flax#4593: the inverse direction, values against ``jax.vjp``."""
    from gated_jax import shapes

    pads = shapes.transpose_padding_for_output(32, 65, 3, stride=2)
    t = shapes.torch_conv_transpose(2, 3, stride=2, padding=1, output_padding=1)
    args = shapes.inverse_conv_transpose(10, 3, stride=2, padding="SAME")
    with jax.enable_x64(True):
        w = jnp.asarray(np.random.default_rng(0).standard_normal((3, 2, 2)))
        y = jnp.asarray(np.random.default_rng(1).standard_normal((1, 5, 2)))

        def fwd(x):
            return lax.conv_general_dilated(x, w, (2,), "SAME", dimension_numbers=_nhwc(1))

        _, vjp = jax.vjp(fwd, jnp.zeros((1, 10, 2)))
        want = vjp(y)[0]
        mine = lax.conv_transpose(y, w, dimension_numbers=_nhwc(1), **args.lax_kwargs())
        err = float(jnp.max(jnp.abs(mine - want)))
    return {
        "t_pads": pads,
        "t_got": _jax_transpose_size((1, 32, 1), (3, 1, 1), (2,), pads),
        "torch_padding": t.conv_kwargs((16, 16))["padding"],
        "torch_out": t.output_shape((16, 16)),
        "inv_padding": args.padding,
        "inv_size": args.output_size[0],
        "inv_err": err,
    }


def _ports_data() -> dict:
    """Keras' input-dependent ``'same'`` and ONNX's ``output_shape``."""
    from gated_jax import ports

    conv = ports.keras_conv(1, 3, strides=2, padding="same")
    keras_t = ports.keras_conv_transpose(1, 3, strides=2, padding="same")
    o = ports.onnx_conv_transpose((3,), strides=[2], output_shape=[10], auto_pad="SAME_UPPER")
    return {
        "keras_rows": ", ".join(
            f"H={h}: `{conv.explicit_padding((h,))[0]}`" for h in (9, 10, 11, 12)
        ),
        "keras_t": keras_t.output_shape((5,))[0],
        "onnx_window": o.window((5,)),
        "onnx_padding": o.padding_for((5,)),
    }


def _skip_block(x):
    """Two dilated 3-tap convs plus a 2-tap skip conv (a model no stack formula describes)."""
    k = jnp.ones((3, 1, 1))
    h = lax.conv_general_dilated(x, k, (1,), "SAME", rhs_dilation=(3,), dimension_numbers=_nhwc(1))
    h = lax.conv_general_dilated(
        jax.nn.relu(h), k, (1,), "SAME", rhs_dilation=(3,), dimension_numbers=_nhwc(1)
    )
    skip = lax.conv_general_dilated(
        x, jnp.ones((2, 1, 1)), (1,), "SAME", dimension_numbers=_nhwc(1)
    )
    return jax.nn.relu(h + skip)


def _receptive_data() -> dict:
    """The receptive field of :func:`_skip_block` against the stack formula."""
    from gated_jax import shapes
    from gated_jax.shapes import receptive

    mask = receptive.receptive_field_of(_skip_block, (1, 20, 1), (0, 10, 0))[0, :, 0]
    rf = shapes.receptive_field([(3, 1, 3, 3), (3, 1, 3, 3)])
    return {
        "rf_inputs": np.flatnonzero(mask).tolist(),
        "rf_size": rf.size[0],
        "rf_start": rf.start[0] + 10,
    }


def section(ctx) -> str:
    """Seed 1.1(a), 1.1(b), what 1.1(b) leaves out, and the inverse/ports: data + template."""
    data = _part_a(ctx) | {"seed_rule_rows": _seed_rule_rows()} | _part_b() | _gaps()
    data |= _inverse_data() | _ports_data() | _receptive_data()
    return render(SECTION, data)


def _jax_transpose_size(lhs, rhs, strides, padding) -> int:
    import jax
    import jax.numpy as jnp
    from jax import lax

    return int(
        jax.eval_shape(
            lambda x, w: lax.conv_transpose(x, w, strides, padding, dimension_numbers=_nhwc(1)),
            jax.ShapeDtypeStruct(lhs, jnp.float32),
            jax.ShapeDtypeStruct(rhs, jnp.float32),
        ).shape[1]
    )


bench = None  # no benchmark: shape rules are pure Python
