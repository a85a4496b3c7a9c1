"""Convolution shape arithmetic: the capability's verify rows, report section and benchmark.

Verify rows (``checks``): Shape arithmetic checked against JAX: ``jax.eval_shape`` on random
configs, ``jax.grad``.

Rows: the fraction of random configs where :func:`gated_jax.shapes.conv_output_shape` /
:func:`~gated_jax.shapes.conv_transpose_output_shape` disagree with ``jax.eval_shape`` (a
disagreement is a different shape, or one side raising while the other does not), and the
fraction of random conv stacks whose :func:`~gated_jax.shapes.receptive_field` span differs
from the support of ``jax.grad`` of one output element. All must be 0.

Report section (``section``): seed 1.1(a) and 1.1(b), convolution output shapes derived and
checked.

Every number is computed by :mod:`gated_jax.shapes` and compared with ``jax.eval_shape`` of the
real ``lax.conv_general_dilated`` when the report is written.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np

from gated_jax.lab._verify import Check

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
    rows.append(_inverse_row(rng))
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


def section(ctx) -> str:
    from gated_jax.shapes import conv_output_shape, conv_output_size, explain_conv, padding_pairs

    parts: list[str] = []
    # (a) -------------------------------------------------------------------------------------
    e = explain_conv((10, 11), 3, stride=2)
    lib = conv_output_shape((1, 1, 10, 11), (1, 1, 3, 3), (2, 2), "VALID")
    real = _jax_shape((1, 1, 10, 11), (1, 1, 3, 3), (2, 2), "VALID")
    parts += [
        "### 1.1(a): 10 x 11 input, 3 x 3 kernel, stride 2, no padding",
        "",
        f"**Answer: {' x '.join(map(str, e.output_shape))}** "
        f"(`conv_output_shape` gives `{lib}`, `jax.eval_shape` of the real op gives `{real}`).",
        "",
        "```text",
        "$ gated-jax shape 10x11 --kernel 3 --stride 2",
        " x ".join(map(str, e.output_shape)),
        "",
        str(e),
        "```",
        "",
        _coverage_figure(ctx),
        "",
        "**What the seed gets wrong.** It writes `(10 - (3 - 2))/2 = 4.5 ≈ 4` and "
        "`(11 - (3 - 2))/2 = 5`. That is not the rule: the rule is "
        "`floor((H - K)/S) + 1`, i.e. `floor((10 - 3)/2) + 1 = 4` and "
        "`floor((11 - 3)/2) + 1 = 5`. Both land on 4 x 5 here only because `H - (K - 2)` and "
        "`H - K + S` coincide when `S = 2`. The fractional part is not a rounding nuisance: "
        "`(10 - 3)/2 + 1 = 4.5 -> 4` means the last input row (row 9) is read by no window, "
        "which the seed does not mention.",
        "",
    ]
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
    parts += [
        "The seed's arithmetic applied to other layers (no padding, no dilation) disagrees "
        "with JAX:",
        "",
        "| H | K | S | seed's `(H - (K-2))/S`, floored | rule | `jax.eval_shape` |",
        "|---:|---:|---:|---|---|---:|",
        *rows,
        "",
    ]
    # (b) -------------------------------------------------------------------------------------
    c, h, w, k, p, s, d, f = 3, 32, 28, 5, 2, 2, 2, 16
    eb = explain_conv((h, w), k, stride=s, padding=p, dilation=d, channels=c, filters=f)
    realb = _jax_shape((1, c, h, w), (f, c, k, k), (s, s), ((p, p), (p, p)), rhs_dilation=(d, d))
    parts += [
        "### 1.1(b): the general rule",
        "",
        "For a `C x H x W` input and `F` filters of `C x K x K` with padding `P`, stride `S` "
        "and dilation `D`, the output is `F x H1 x W1` with",
        "",
        "`H1 = max(0, floor((H + 2P - (K + (K-1)(D-1))) / S) + 1)` (and the same for `W1`).",
        "",
        "The seed's formula is this one without the `max(0, .)`. Example with "
        f"C={c}, H={h}, W={w}, K={k}, P={p}, S={s}, D={d}, F={f}: "
        f"`{' x '.join(map(str, eb.output_shape))}` "
        f"(`jax.eval_shape`: `{realb}`).",
        "",
        "```text",
        str(eb),
        "```",
        "",
        "The warnings are not decoration: with `S = D = 2` every kernel tap lands on an even "
        "padded position, so every odd input row is read by no output at all, something the "
        "shape formula alone hides (the rows are listed exactly; `tests/test_shapes_explain.py` "
        "checks them against the rows where `jax.grad` is zero).",
        "",
        "**What 1.1(b) leaves out**, each checked against `jax.eval_shape`:",
        "",
    ]
    gaps = []
    # clamp at zero
    raw = math.floor((2 + 0 - 5) / 1) + 1
    z = conv_output_size(2, 5)
    gaps.append(
        f"- *No clamp at 0*: H=2, K=5 gives `floor((2 - 5)/1) + 1 = {raw}` by the formula; "
        f"the real output is {z} "
        f"(`{_jax_shape((1, 1, 2), (1, 1, 5), (1,), 'VALID')}`)."
    )
    # asymmetric padding (SAME with even kernel)
    pads = padding_pairs("SAME", (10,), (4,), (1,))
    gaps.append(
        f"- *Only symmetric padding*: `'SAME'` with K=4 pads `{pads[0]}` (odd total, the extra "
        "row at the end; `'SAME_LOWER'` puts it first), which no integer `P` expresses; "
        f"output {conv_output_size(10, 4, padding='SAME')} = "
        f"`{_jax_shape((1, 1, 10), (1, 1, 4), (1,), 'SAME')[2]}` from JAX."
    )
    # input dilation
    ld = conv_output_size(10, 3, input_dilation=2, padding=(2, 2))
    gaps.append(
        "- *Input (lhs) dilation* `L`, the transposed-convolution mechanism: `H` becomes "
        f"`(H-1)L + 1`, padding applies after it: H=10, L=2, K=3, P=2 gives {ld} "
        f"(`{_jax_shape((1, 1, 10), (1, 1, 3), (1,), ((2, 2),), lhs_dilation=(2,))[2]}`)."
    )
    # groups
    g = conv_output_shape((1, 6, 8, 8), (9, 2, 3, 3), (1, 1), "VALID", feature_group_count=3)
    gaps.append(
        "- *Grouped convolutions*: with `G` groups each filter sees `C/G` channels, so the "
        f"kernel is `F x C/G x K x K`: C=6, G=3, F=9 uses a 9 x 2 x 3 x 3 kernel, output `{g}` "
        f"(`{_jax_shape((1, 6, 8, 8), (9, 2, 3, 3), (1, 1), 'VALID', feature_group_count=3)}`)."
    )
    # transposed
    from jax import lax

    from gated_jax.shapes import conv_transpose_output_shape

    t = conv_transpose_output_shape((1, 10, 1), (3, 1, 1), (2,), "VALID", rhs_dilation=(2,))
    lax_says = int(
        lax.conv_transpose_shape_tuple((1, 10, 1), (3, 1, 1), (2,), "VALID", ("NHC", "HIO", "NHC"))[
            1
        ]
    )
    gaps.append(
        "- *Transposed convolutions*: `lax.conv_transpose` with K=3, S=2, D=2, `'VALID'` on "
        f"H=10 gives {t[1]} (`HS + max(K_eff - S, 0)`); JAX's own "
        f"`lax.conv_transpose_shape_tuple` ignores the dilation and says {lax_says}."
    )
    gaps.append(
        "- *Negative padding* (cropping) is allowed while the padded size stays >= 0, and a "
        "kernel wider than the input silently yields a zero-size output; `explain_conv` warns "
        "about both."
    )
    parts += gaps
    return "\n".join(parts)


bench = None  # no benchmark: shape rules are pure Python
