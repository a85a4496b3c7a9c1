"""Report section: seed 1.1(a) and 1.1(b), convolution output shapes derived and checked.

Every number is computed by :mod:`gated_jax.shapes` and compared with ``jax.eval_shape`` of the
real ``lax.conv_general_dilated`` when the report is written.
"""

from __future__ import annotations

import math

ORDER = 10
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
