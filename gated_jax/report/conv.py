"""Report section: seed 1.1(c)(i)-(iv), the strided 1-D convolution and its derivatives.

Everything is computed by :mod:`gated_jax.conv` on the seed's own example (``x`` in
``R^{5x2}``, ``W`` in ``R^{1x2x3}``, stride 2), with small integer entries so that the numbers
can be checked by eye, and compared against the seed's index formulas and JAX autodiff.
"""

from __future__ import annotations

import numpy as np

ORDER = 20
TITLE = "Convolution derivatives (seed 1.1(c)): output, Jacobians, gradients"

_NWC = ("NWC", "OIW", "NWC")


def _matrix(a, row_names, col_names) -> str:
    a = np.asarray(a)
    lines = ["| | " + " | ".join(col_names) + " |", "|---" * (len(col_names) + 1) + "|"]
    for name, row in zip(row_names, a, strict=True):
        lines.append(f"| **{name}** | " + " | ".join(f"{v:g}" for v in row) + " |")
    return "\n".join(lines)


def _figure(ctx, jw, ji, jw_big, ji_big):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 5.4), gridspec_kw={"width_ratios": [1, 1.6]})
    panels = [
        (jw, "seed example: dy/dW  (rows i, cols (c, k))"),
        (ji, "seed example: dy/dx  (rows i, cols (t, c))"),
        (jw_big, "T=12, K=3, s=2, d=1, pad (1,1): dy/dW"),
        (ji_big, "T=12, K=3, s=2, d=1, pad (1,1): dy/dx"),
    ]
    for ax, (m, title) in zip(axes.ravel(), panels, strict=True):
        lim = float(np.max(np.abs(m))) or 1.0
        ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
        zero = np.argwhere(m == 0)
        ax.scatter(zero[:, 1], zero[:, 0], marker=".", s=6, c="0.5")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks(range(m.shape[0]), [f"i={i}" for i in range(1, m.shape[0] + 1)])
    fig.suptitle("Dense Jacobians from the closed form (grey dots: exact zeros)", fontsize=10)
    fig.tight_layout()
    return ctx.save_figure(fig, "conv_jacobians")


def section(ctx) -> str:
    import jax
    import jax.numpy as jnp
    from jax import lax

    from gated_jax import conv

    rng = np.random.default_rng(ctx.seed + 1)
    with jax.enable_x64(True):
        # nonzero integers: every zero of a Jacobian below comes from the window structure
        nonzero = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
        x = rng.choice(nonzero, size=(5, 2))
        w = rng.choice(nonzero[1:-1], size=(1, 2, 3))
        g = np.array([[1.5], [-2.0]])
        xj, wj, gj = jnp.asarray(x), jnp.asarray(w), jnp.asarray(g)
        f = lambda x_, w_: conv.conv1d(x_, w_, stride=2)
        y = np.asarray(f(xj, wj))

        # (i) the seed's formula, 1-based: fw(x)[i] = sum_{m=-1}^{1} sum_c x[2i+m][c] W[m+2][c]
        seed_y = np.array(
            [
                [
                    sum(x[2 * i + m - 1, c] * w[0, c, m + 1] for m in (-1, 0, 1) for c in (0, 1))
                    for _ in (1,)
                ]
                for i in (1, 2)
            ]
        )

        # (ii), (iii): dense Jacobians from the closed form, against jax.jacrev
        jw = np.asarray(
            conv.conv_weight_jacobian(xj[None], w.shape, (2,), "VALID", dimension_numbers=_NWC)
        )[0]
        ji = np.asarray(
            conv.conv_input_jacobian(wj, (1, 5, 2), (2,), "VALID", dimension_numbers=_NWC)
        )[0, :, :, 0]
        ref_w = np.asarray(jax.jacrev(f, argnums=1)(xj, wj))
        ref_x = np.asarray(jax.jacrev(f, argnums=0)(xj, wj))
        seed_ii = np.array(
            [[x[m + 2 * (i - 1) - 1, l - 1] for l in (1, 2) for m in (1, 2, 3)] for i in (1, 2)]
        )
        undefined = 0
        seed_iii_ok = True
        for i in (1, 2):
            for k in range(1, 6):
                for l in (1, 2):
                    tap = k - 2 * (i - 1)
                    if 1 <= tap <= 3:
                        seed_iii_ok &= ji[i - 1, 0, k - 1, l - 1] == w[0, l - 1, tap - 1]
                    else:
                        undefined += 1
                        seed_iii_ok &= ji[i - 1, 0, k - 1, l - 1] == 0.0

        # (iv): weight gradient; the seed's two terms; stride 1 needs three
        dw = np.asarray(
            conv.conv_weight_grad(
                xj[None], gj[None], w.shape, (2,), "VALID", dimension_numbers=_NWC
            )
        )
        ref_dw = np.asarray(jax.vjp(lambda w_: f(xj, w_), wj)[1](gj)[0])
        seed_iv = np.array(
            [[g[0, 0] * x[m - 1, l] + g[1, 0] * x[m + 1, l] for m in (1, 2, 3)] for l in (0, 1)]
        )[None]
        g1 = np.array([[1.5], [-2.0], [0.5]])  # stride 1: three output positions
        dw1 = np.asarray(
            conv.conv_weight_grad(
                xj[None], jnp.asarray(g1)[None], w.shape, (1,), "VALID", dimension_numbers=_NWC
            )
        )
        two_terms_s1 = np.array(
            [[g1[0, 0] * x[m - 1, l] + g1[1, 0] * x[m, l] for m in (1, 2, 3)] for l in (0, 1)]
        )[None]

        # similarities / differences, numerically
        dx = np.asarray(
            conv.conv_input_grad(wj, gj[None], (1, 5, 2), (2,), "VALID", dimension_numbers=_NWC)
        )[0]
        ref_dx = np.asarray(jax.vjp(lambda x_: f(x_, wj), xj)[1](gj)[0])
        # weight grad with a flipped "kernel" (the seed's "spatially-flipped filters"): wrong
        gdil = np.zeros((3, 1))
        gdil[::2] = g
        flipped_wgrad = np.array(
            [
                [sum(gdil[::-1][j, 0] * x[k + j, c] for j in range(3)) for k in range(3)]
                for c in (0, 1)
            ]
        )[None]
        # input grad without the flip: wrong
        noflip = np.asarray(
            lax.conv_general_dilated(
                gj[None],
                jnp.swapaxes(wj, 0, 1),
                (1,),
                [(2, 2)],
                lhs_dilation=(2,),
                dimension_numbers=_NWC,
            )
        )[0]
        wg_jaxpr = jax.make_jaxpr(
            lambda x_, g_: conv.conv_weight_grad(
                x_, g_, w.shape, (2,), "VALID", dimension_numbers=_NWC
            )
        )(xj[None], gj[None])
        conv_eqn = next(
            e for e in wg_jaxpr.jaxpr.eqns if e.primitive.name == "conv_general_dilated"
        )

        # a longer signal for the figure: the band structure of both Jacobians
        xb = jnp.asarray(rng.standard_normal((12, 2)))
        wb = jnp.asarray(rng.standard_normal((1, 2, 3)))
        jw_big = np.asarray(
            conv.conv_weight_jacobian(xb[None], (1, 2, 3), (2,), [(1, 1)], dimension_numbers=_NWC)
        )[0, :, 0, 0].reshape(6, 6)
        ji_big = np.asarray(
            conv.conv_input_jacobian(wb, (1, 12, 2), (2,), [(1, 1)], dimension_numbers=_NWC)
        )[0, :, 0, 0].reshape(6, 24)

    err = lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    fig = _figure(ctx, jw[:, 0, 0].reshape(2, 6), ji[:, 0].reshape(2, 10), jw_big, ji_big)
    conv_params = ", ".join(
        f"{k}={conv_eqn.params[k]}"
        for k in ("window_strides", "padding", "lhs_dilation", "rhs_dilation")
    )
    err_s1 = err(dw1, two_terms_s1)
    jw_cols = [f"c={c},k={k}" for c in (1, 2) for k in (1, 2, 3)]
    ji_cols = [f"t={t},c={c}" for t in range(1, 6) for c in (1, 2)]
    yes = lambda ok: "yes" if ok else "**no**"

    return f"""
The layer is a strided 1-D **cross-correlation** (`gated_jax.conv1d`, seed layout `x: (T, C)`,
`W: (F, C, K)`): `y[i, f] = sum_(k, c) x[s*i + k*d, c] * W[f, c, k]` (0-based), the seed's
`fw(x)[i] = sum_(m=-1..1) sum_c x[2i+m][c] W[m+2][c]` (1-based). The seed's example, with small
integers:

{_matrix(x.T, ["x[:, c=1]", "x[:, c=2]"], [f"t={t}" for t in range(1, 6)])}

{_matrix(w[0], ["W[1, c=1]", "W[1, c=2]"], ["k=1", "k=2", "k=3"])}

**(i)** `conv1d(x, W, stride=2)` has shape `{y.shape}` (the seed: `R^(2x1)`), values
`{y.ravel().tolist()}`; the seed's formula gives `{seed_y.ravel().tolist()}` (max difference
{err(y, seed_y):.1e}). Output length `floor((5 - 3) / 2) + 1 = 2`: with stride 2 the windows
start at `t = 1, 3` (1-based) and every input row is covered.

**(ii)** `conv_weight_jacobian` has shape `{tuple(jw.shape)}` = `out.shape + W.shape`, built from
the closed form `dy[i, f]/dW[f', c, k] = delta(f, f') * x[s*i + k*d, c]` (patches of `x`; no
autodiff), equal to `jax.jacrev` (max difference {err(jw, ref_w):.1e}). The seed's
`x[m + 2(i-1)][l]` matches every entry: {yes(np.array_equal(jw[:, 0, 0], seed_ii.reshape(2, 2, 3)))}
(its delta over filters is invisible with one filter; with `F > 1`, `dy[., f]/dW[f', ...] = 0`
for `f != f'`).

{_matrix(jw[:, 0, 0].reshape(2, 6), ["i=1", "i=2"], jw_cols)}

**(iii)** `conv_input_jacobian` has shape `{tuple(ji.shape)}` = `out.shape + x.shape`, equal to
`jax.jacrev` (max difference {err(ji, ref_x):.1e}). The seed writes `W[1]^T[k - 2(i-1)][l]` for
all `k in 1..5`, but the tap index `k - 2(i-1)` lies in `1..3` only when `x[k]` is inside window
`i`: for **{undefined} of the 20 entries** it is `4, 5` (past the kernel) or `0, -1` (before it;
NumPy/Python indexing would even wrap these around silently). The true derivative there is
**0**, and the library's entries are: seed's entries inside the windows, zeros outside:
{yes(seed_iii_ok)}.

{_matrix(ji[:, 0].reshape(2, 10), ["i=1", "i=2"], ji_cols)}

{fig}

**(iv)** With upstream gradient `dl/dy = {g.ravel().tolist()}`, `conv_weight_grad` gives
`dl/dW = {dw.reshape(2, 3).tolist()}` (rows `c`), equal to `jax.vjp`
(max difference {err(dw, ref_dw):.1e}) and to the seed's two terms
`g[1] x[m][l] + g[2] x[m+2][l]` (max difference {err(dw, seed_iv):.1e}). The general formula is a
**sum over every output position**, `dl/dW[f, c, k] = sum_i g[i, f] x[s*i + k*d, c]`; the seed's
two terms are that sum for its example only (the seed also indexes the upstream gradient as
`[1][1], [1][2]`, i.e. as `1 x 2`; it has the output's shape `2 x 1`). With stride 1 the same
`x` has 3 output positions and the two-term formula misses one: max error {err_s1:.2g}.

**Similarities and differences (precisely).** All three maps are sums over the same index set
`{{(i, k): s*i + k*d = t}}` (the Kronecker delta `E[i, k, t]` of `gated_jax.conv`); they differ in
which two of `x`, `W`, `dl/dy` are combined and how:

* forward: `x` **correlated** with `W` (stride `s`, dilation `d`);
* weight gradient: `x` **correlated** with the upstream gradient, which plays the kernel
  **dilated by the forward stride** (taps `s` apart), window stride `d`. No flip. This is one
  `conv_general_dilated` call; its parameters, read from the jaxpr:
  `{conv_params}`;
* input gradient: the upstream gradient **dilated by the stride** (zeros between samples), padded
  by `K_eff - 1 - lo`, **convolved** with `W` (= correlated with the **spatially flipped** kernel),
  input and output channels swapped. Equal to `jax.vjp`: max difference {err(dx, ref_dx):.1e}.

The seed's "the backward pass (for the weights) is a convolution of the input" is right; its
"difference: spatially-flipped filters" belongs to the *input* gradient. Applied to the weight
gradient the flip is wrong (max error {err(flipped_wgrad, dw):.2g}); omitted from the input
gradient it is wrong too (max error {err(noflip, dx):.2g}).
"""
