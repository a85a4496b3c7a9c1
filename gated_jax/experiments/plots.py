"""Matplotlib figures of the experiments (each function returns a ``Figure``; callers save it).

* :func:`plot_norm_vs_lag`: ``||dz[T]/dz[T-L]||`` against the lag ``L``, one curve per
  recurrent-weight scale (median over seeds, band = min..max), log scale.
* :func:`plot_heatmap`: ``log10`` of the median norm over (recurrent-weight scale x lag).
* :func:`plot_baselines`: the same curves for every cell family side by side.
* :func:`plot_growth_rates`: growth rate against scale, one line per input scale.
* :func:`plot_worst_case`: the ascent's progress and ``log ||dz[T]/dz[0]||`` against ``T``.
* :func:`plot_learning`: training curves of the adding problem per length, gated vs tanh.
"""

from __future__ import annotations

import numpy as np

from gated_jax._validate import index, present

__all__ = [
    "plot_norm_vs_lag",
    "plot_heatmap",
    "plot_baselines",
    "plot_growth_rates",
    "plot_worst_case",
    "plot_learning",
]


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slice(sweep, length, bias_index, scale_index):
    """``norms[length][:, bias_index, scale_index]`` (``(W, R, T+1)``), arguments checked."""
    present("length", length, sweep.norms, f"a swept length, one of {sweep.lengths}")
    index("bias_index", bias_index, sweep.gate_biases.size)
    index("scale_index", scale_index, sweep.input_scales.size)
    return sweep.norms[length][:, bias_index, scale_index]


def _curves(ax, sweep, length, bias_index, scale_index, title):
    a = _slice(sweep, length, bias_index, scale_index)  # (W, R, T+1)
    lags = np.arange(length + 1)
    cmap = _plt().get_cmap("viridis")
    for i, rho in enumerate(sweep.wz_norms):
        color = cmap(i / max(len(sweep.wz_norms) - 1, 1))
        med = np.median(a[i], axis=0)
        ax.plot(lags, med, color=color, label=f"{rho:g}")
        ax.fill_between(lags, a[i].min(axis=0), a[i].max(axis=0), color=color, alpha=0.15)
    ax.set_yscale("log")
    ax.axhline(1.0, color="k", lw=0.7, ls=":")
    ax.set_xlabel("lag L = T - k")
    ax.set_title(title, fontsize=10)


def plot_norm_vs_lag(sweep, length: int, *, bias_index: int = 0, scale_index: int = 0):
    """Norm of ``dz[T]/dz[T-L]`` against ``L`` for every recurrent-weight scale."""
    _slice(sweep, length, bias_index, scale_index)  # check the arguments before drawing
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    b = sweep.gate_biases[bias_index]
    s = sweep.input_scales[scale_index]
    _curves(
        ax,
        sweep,
        length,
        bias_index,
        scale_index,
        f"{sweep.cell}: T={length}, b={b:g}, "
        f"input scale {s:g} (median, min-max over {len(sweep.seeds)} seeds)",
    )
    ax.set_ylabel("||dz[T]/dz[T-L]||_2")
    ax.legend(title="||W_z||_2", fontsize=8)
    return fig


def plot_heatmap(sweep, length: int, *, bias_index: int = 0, scale_index: int = 0):
    """``log10`` median norm over (scale, lag)."""
    a = np.log10(np.median(_slice(sweep, length, bias_index, scale_index), axis=1))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    lim = max(float(np.nanmax(np.abs(a[np.isfinite(a)]))), 1.0) if np.isfinite(a).any() else 1.0
    im = ax.imshow(
        a,
        aspect="auto",
        cmap="RdBu_r",
        vmin=-lim,
        vmax=lim,
        origin="lower",
        extent=(-0.5, length + 0.5, -0.5, len(sweep.wz_norms) - 0.5),
        interpolation="nearest",
    )
    ax.set_yticks(range(len(sweep.wz_norms)), [f"{v:g}" for v in sweep.wz_norms])
    ax.set_ylabel("||W_z||_2")
    ax.set_xlabel("lag L")
    b = sweep.gate_biases[bias_index]
    s = sweep.input_scales[scale_index]
    ax.set_title(
        f"{sweep.cell}: log10 median ||dz[T]/dz[T-L]||, T={length}, b={b:g}, input scale {s:g}",
        fontsize=10,
    )
    fig.colorbar(im, ax=ax, label="log10 norm (red: growth, blue: decay)")
    return fig


def plot_baselines(sweeps: dict, length: int, *, bias_index: int = 0, scale_index: int = 0):
    """One panel per cell family, same axes."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4 * len(sweeps), 3.6), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, (name, sweep) in zip(axes, sweeps.items(), strict=True):
        _curves(ax, sweep, length, bias_index, scale_index, name)
    axes[0].set_ylabel("||dz[T]/dz[T-L]||_2")
    axes[-1].legend(title="recurrent ||W||_2", fontsize=7)
    return fig


def plot_growth_rates(sweeps: dict, length: int, *, bias_index: int = 0):
    """Median growth rate ``log ||dz[T]/dz[0]|| / T`` against scale, per family and input scale."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4 * len(sweeps), 3.4), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, (name, sweep) in zip(axes, sweeps.items(), strict=True):
        r = np.median(sweep.growth_rate(length)[:, bias_index], axis=-1)  # (W, S)
        for j, s in enumerate(sweep.input_scales):
            ax.plot(sweep.wz_norms, r[:, j], marker="o", label=f"{s:g}")
        ax.axhline(0.0, color="k", lw=0.7)
        ax.set_xscale("log")
        ax.set_xlabel("recurrent ||W||_2")
        ax.set_title(name, fontsize=10)
    axes[0].set_ylabel(f"median log||dz[T]/dz[0]|| / T (T={length})")
    axes[-1].legend(title="input scale", fontsize=8)
    return fig


def plot_worst_case(results: list, *, counterexample_rate: float | None = None):
    """Left: ascent history of the longest search. Right: ``log ||dz[T]/dz[0]||`` vs ``T``."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    last = results[-1]
    a1.plot(last.history, lw=0.8)
    a1.set_xlabel("ascent step")
    a1.set_ylabel("log||dz[T]/dz[0]||_F / T")
    a1.set_title(f"optax ascent, T={last.length}, {last.history.shape[1]} restarts", fontsize=10)
    ts = np.array([r.length for r in results])
    a2.plot(ts, [np.log(r.norm) for r in results], "o-", label="worst case found")
    a2.plot(ts, [r.bound_rate * r.length for r in results], "s--", label="bound on that path")
    if counterexample_rate is not None:
        a2.plot(ts, counterexample_rate * ts, "k:", label="counterexample (T/2) log 2")
    a2.set_xlabel("T")
    a2.set_ylabel("log ||dz[T]/dz[0]||_2")
    a2.legend(fontsize=8)
    a2.set_title("growth with T", fontsize=10)
    return fig


def plot_learning(result):
    """Training MSE (normalised by 1/6) per length: mean over seeds, band = min..max."""
    plt = _plt()
    from gated_jax.experiments.learning import BASELINE_MSE

    fig, axes = plt.subplots(
        1, len(result.lengths), figsize=(4 * len(result.lengths), 3.4), sharey=True
    )
    axes = np.atleast_1d(axes)
    colors = {"gated": "C0", "tanh": "C3"}
    for ax, t in zip(axes, result.lengths, strict=True):
        for cell in result.cells:
            c = result.curves[(cell, t)] / BASELINE_MSE
            k = max(1, c.shape[1] // 50)
            kernel = np.ones(k) / k
            sm = np.array([np.convolve(row, kernel, mode="valid") for row in c])
            x = np.arange(sm.shape[1]) + k - 1
            ax.plot(x, sm.mean(0), color=colors.get(cell), label=cell)
            ax.fill_between(x, sm.min(0), sm.max(0), color=colors.get(cell), alpha=0.2)
        ax.axhline(1.0, color="k", lw=0.7, ls=":")
        ax.set_yscale("log")
        ax.set_title(f"adding problem, T={t}", fontsize=10)
        ax.set_xlabel("training step")
    axes[0].set_ylabel("train MSE / (1/6)")
    axes[-1].legend(fontsize=8)
    return fig
