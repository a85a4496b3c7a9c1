"""The whole gradient-flow experiment in one call: sweeps, baselines, bounds, worst case,
counterexample, learning; data (``.npz``/``.csv``/``summary.json``), PNG figures and a Markdown
summary. Used by ``gated-jax flow`` and by the report's gradient-flow section.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gated_jax._validate import (
    among,
    check_fits_in_memory,
    finite_float,
    finite_floats,
    int_array,
    output_dir,
    positive_int,
)

__all__ = ["FlowConfig", "FlowRun", "run_flow", "PARTS"]

PARTS = ("bounds", "counterexample", "sweep", "worst-case", "learning")
_SIZES = (  # FlowConfig's positive int fields
    "n",
    "m",
    "chunk_size",
    "worst_steps",
    "worst_restarts",
    "learn_steps",
    "learn_hidden",
    "learn_batch",
    "bound_configs",
)


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """Sizes of every part of the experiment (defaults: a few minutes on 2 CPU cores).

    Sweep grid: ``cells``, ``wz_norms``, ``gate_biases``, ``input_scales``, ``lengths``,
    ``seeds``, widths ``n``/``m``, ``chunk_size``. Worst case: ``worst_lengths`` (continuation),
    ``worst_steps``, ``worst_restarts``, bounds ``worst_wz_norm``/``worst_weight_norm``/
    ``worst_input_bound``. Learning: ``learn_lengths``, ``learn_seeds``, ``learn_steps``,
    ``learn_hidden``, ``learn_batch``. ``bound_configs``: random
    configurations for the bound checks. ``counterexample_lengths``: lengths at which the
    counterexample is evaluated. ``parts``: which of :data:`PARTS` to run. ``norm``: the sweep's
    spectral-norm method, ``'auto'`` (default: ``'svd'`` on CPU, ``'power'`` on GPU/TPU),
    ``'svd'`` or ``'power'`` (see :func:`~gated_jax.experiments.flow_sweep`).
    Every field is validated on construction (``ValueError`` naming the field and value).
    """

    cells: tuple[str, ...] = ("gated", "tanh", "gru", "lstm")
    wz_norms: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    gate_biases: tuple[float, ...] = (0.0, -2.0, 2.0)
    input_scales: tuple[float, ...] = (1.0, 0.5, 2.0)
    lengths: tuple[int, ...] = (32, 128)
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    n: int = 8
    m: int = 16
    chunk_size: int = 512
    worst_lengths: tuple[int, ...] = (8, 16, 32, 64)
    worst_steps: int = 300
    worst_restarts: int = 8
    worst_wz_norm: float = 1.5
    worst_weight_norm: float = 1.0
    worst_input_bound: float = 3.0
    learn_lengths: tuple[int, ...] = (10, 30, 60)
    learn_seeds: tuple[int, ...] = (0, 1, 2)
    learn_steps: int = 400
    learn_hidden: int = 32
    learn_batch: int = 64
    bound_configs: int = 256
    counterexample_lengths: tuple[int, ...] = (16, 64, 100)
    parts: tuple[str, ...] = PARTS
    norm: str = "auto"

    def __post_init__(self):
        from gated_jax.experiments.baselines import FAMILIES, check_norm

        check_norm(self.norm)
        for f in dataclasses.fields(self):  # lists (and arrays) for tuple fields become tuples
            v = getattr(self, f.name)
            if isinstance(f.default, tuple) and isinstance(v, (list, np.ndarray)):
                object.__setattr__(self, f.name, tuple(np.asarray(v).tolist()))

        for name in ("lengths", "worst_lengths", "counterexample_lengths"):
            int_array(name, getattr(self, name), minimum=1)
        int_array("seeds", self.seeds, minimum=0)
        int_array("learn_seeds", self.learn_seeds, minimum=0)
        int_array("learn_lengths", self.learn_lengths, minimum=2)
        for name in _SIZES:
            positive_int(name, getattr(self, name))
        finite_floats("gate_biases", self.gate_biases)
        finite_floats("wz_norms", self.wz_norms, minimum=0, strict=True)
        finite_floats("input_scales", self.input_scales, minimum=0, strict=True)
        for name in ("worst_wz_norm", "worst_weight_norm", "worst_input_bound"):
            finite_float(name, getattr(self, name), minimum=0, strict=True)
        among("cells", self.cells, tuple(FAMILIES))
        among("parts", self.parts, PARTS)
        self._check_memory()

    def _check_memory(self) -> None:
        """Refuse sizes whose sweep cannot fit in memory, naming the size that breaks it.

        A sweep chunk holds, per configuration, the ``(T, m, m)`` step Jacobians and their
        reverse products (about four such stacks with temporaries, float64); the result holds
        ``T + 1`` norms per configuration and length.
        """
        if "sweep" not in self.parts:
            return
        T = max(self.lengths)
        grid = len(self.wz_norms) * len(self.gate_biases) * len(self.input_scales)
        configs = grid * len(self.seeds)
        per_config = 4 * 8 * (T * self.m * self.m + T * self.n)
        check_fits_in_memory("m", self.m, 4 * 8 * self.m * self.m, "one step's Jacobians")
        check_fits_in_memory("lengths", self.lengths, per_config, "one configuration's Jacobians")
        check_fits_in_memory(
            "chunk_size", self.chunk_size, min(self.chunk_size, configs) * per_config, "a chunk"
        )
        result = len(self.cells) * configs * sum(t + 1 for t in self.lengths) * 8
        check_fits_in_memory("seeds", self.seeds, result, "the sweep's results")

    @classmethod
    def quick(cls, **overrides) -> FlowConfig:
        """Tiny sizes (seconds): for tests and ``--quick``."""
        small = dict(
            wz_norms=(0.5, 2.0, 8.0),
            gate_biases=(0.0,),
            input_scales=(1.0,),
            lengths=(16,),
            seeds=(0, 1),
            n=4,
            m=6,
            worst_lengths=(8,),
            worst_steps=30,
            worst_restarts=2,
            learn_lengths=(6,),
            learn_seeds=(0, 1),
            learn_steps=20,
            learn_hidden=8,
            learn_batch=16,
            bound_configs=32,
            counterexample_lengths=(8, 16),
        )
        small.update(overrides)
        return cls(**small)


@dataclasses.dataclass
class FlowRun:
    """What :func:`run_flow` produced: paths, key numbers, and a Markdown summary."""

    out_dir: Path
    files: list[Path]
    summary: dict
    markdown: str


def _default_saver(out_dir: Path) -> Callable:
    def save(fig, name: str) -> str:
        import matplotlib.pyplot as plt

        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return f"![{name}]({path.name})"

    return save


def _fmt(v: float | None) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.3g}"


def _json_safe(obj):
    """Non-finite floats as ``None`` (JSON ``null``): ``NaN`` is not JSON."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not np.isfinite(obj):
        return None
    return obj


def run_flow(
    out_dir: str | Path,
    config: FlowConfig | None = None,
    *,
    save_figure: Callable | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> FlowRun:
    """Run every part, write data and figures into ``out_dir``, return a :class:`FlowRun`."""
    cfg = config or FlowConfig()
    out = output_dir("out_dir", out_dir)
    save = save_figure or _default_saver(out)
    say = log or (lambda s: None)
    files: list[Path] = []
    summary: dict = {"config": dataclasses.asdict(cfg)}
    md: list[str] = []
    t_all = time.perf_counter()

    parts = set(cfg.parts)
    if "bounds" in parts:
        _bounds(cfg, summary, md, say)
    if "counterexample" in parts:
        _counterexample(cfg, summary, md, say)
    if "sweep" in parts:
        files += _sweeps(cfg, out, summary, md, save, say, progress)
    if "worst-case" in parts:
        files += _worst(cfg, out, summary, md, save, say)
    if "learning" in parts:
        files += _learning(cfg, out, summary, md, save, say, progress)
    summary["seconds"] = time.perf_counter() - t_all
    spath = out / "summary.json"
    spath.write_text(json.dumps(_json_safe(summary), indent=1, default=float))
    files.append(spath)
    return FlowRun(out, files, summary, "\n".join(md))


def _bounds(cfg, summary, md, say):
    from gated_jax.experiments import analysis

    say("bounds")
    bounds = analysis.check_bounds(cfg.bound_configs, seed=0)
    summary["bounds"] = bounds
    md += [
        "**Bounds that hold** (derived in `gated_jax.experiments.analysis`): each state "
        "coordinate stays in the box spanned by `z[0]` and the candidates `u[t] = W_x x[t]`, "
        "and `||J[t]|| <= max c + max|(z[t-1] - u[t]) c (1 - c)| ||W_z|| < 1 + R ||W_z|| / 4` "
        "(`R` = box width). On "
        f"{int(bounds['configs'])} random configurations (`||W_z||` in [0.1, 20], biases, "
        f"input scales in [0.1, 10]): largest excursion outside the box "
        f"{_fmt(bounds['box_violation'])}; largest `||J||`/bound {bounds['bound_ratio']:.12f}; "
        f"the bound exceeds 1 on {bounds['frac_bound_above_1']:.0%} of steps and the actual "
        f"`||J[t]||` exceeds 1 on {bounds['frac_norm_above_1']:.0%}. So a single step can "
        "amplify; whether products grow with T is measured below.",
        "",
    ]


def _counterexample(cfg, summary, md, say):
    from gated_jax.experiments import analysis

    say("counterexample")
    ce = {t: analysis.counterexample_check(t) for t in cfg.counterexample_lengths}
    summary["counterexample"] = {str(t): v for t, v in ce.items()}
    rows = [
        "| T | (-2)^(T/2) | jax.grad of plain loop | gradient_flow | d z[T]/d W_z | states |",
        "|---:|---:|---:|---:|---:|:-:|",
    ]
    for t, v in ce.items():
        rows.append(
            f"| {t} | {v['analytic']:.6g} | {v['jax_grad']:.6g} | {v['gradient_flow']:.6g} | "
            f"{v['grad_w_z']:.6g} | [{v['state_min']:g}, {v['state_max']:g}] |"
        )
    md += [
        "**Counterexample: the gradient explodes.** Scalar cell (`n = m = 1`, no biases), "
        "`W_x = 1`, `W_c = 1/2`, `W_z = 3/2`, `z[0] = -1`, inputs `x[t] = 3, -3, 3, ...`. The "
        "gate pre-activation is exactly 0, `c = 1/2`, the state cycles -1, 1, -1, ... and the "
        "one-step Jacobians alternate -1 and 2 (all exact in floating point), so "
        "`dz[T]/dz[0] = (-2)^(T/2)`: growth rate log(2)/2 = "
        f"{analysis.COUNTEREXAMPLE_RATE:.4f} per step with a bounded state:",
        "",
        *rows,
        "",
    ]


def _run_sweeps(cfg, out, summary, say, progress) -> tuple[dict, list]:
    """One :func:`flow_sweep` per cell, saved as ``.npz`` and ``.csv``: ``(sweeps, files)``."""
    from gated_jax.experiments.flow import flow_sweep

    files = []
    sweeps = {}
    for cell in cfg.cells:
        say(f"sweep {cell}")
        t0 = time.perf_counter()
        sw = flow_sweep(
            cell,
            wz_norms=cfg.wz_norms,
            gate_biases=cfg.gate_biases,
            input_scales=cfg.input_scales,
            lengths=cfg.lengths,
            seeds=cfg.seeds,
            n=cfg.n,
            m=cfg.m,
            chunk_size=cfg.chunk_size,
            norm=cfg.norm,
            progress=progress,
        )
        summary.setdefault("sweep_seconds", {})[cell] = time.perf_counter() - t0
        sweeps[cell] = sw
        files += [sw.save_npz(out / f"flow_{cell}.npz"), sw.save_csv(out / f"flow_{cell}.csv")]
    return sweeps, files


def _save_growth_rates(sweeps: dict, path: Path) -> Path:
    """Every configuration's median and max growth rate, one CSV row each."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["cell", "length", "wz_norm", "gate_bias", "input_scale", "median_rate", "max_rate"]
        )
        for cell, sw in sweeps.items():
            for t in sw.lengths:
                r = sw.growth_rate(t)
                for i, j, k in np.ndindex(r.shape[:3]):
                    w.writerow(
                        [
                            cell,
                            t,
                            sw.wz_norms[i],
                            sw.gate_biases[j],
                            sw.input_scales[k],
                            repr(float(np.median(r[i, j, k]))),
                            repr(float(r[i, j, k].max())),
                        ]
                    )
    return path


def _typical(sweeps: dict, T: int) -> tuple[dict, list[str]]:
    """Per cell: the rates' summary at ``T`` and its Markdown table."""
    table = [
        "| cell | median rate, ‖W‖ ≤ 1 | max rate, ‖W‖ ≤ 1 | configs with rate > 0 | "
        "largest median rate (at ‖W‖, b, input scale) |",
        "|---|---:|---:|---:|---|",
    ]
    typ = {}
    for cell, sw in sweeps.items():
        r = sw.growth_rate(T)
        small = r[sw.wz_norms <= 1.0]
        med = np.median(r, axis=-1)
        i, j, k = np.unravel_index(np.argmax(med), med.shape)
        typ[cell] = {
            "median_rate_small": float(np.median(small)) if small.size else float("nan"),
            "max_rate_small": float(small.max()) if small.size else float("nan"),
            "frac_positive": float((r > 0).mean()),
            "best_median_rate": float(med[i, j, k]),
            "best_at": [float(sw.wz_norms[i]), float(sw.gate_biases[j]), float(sw.input_scales[k])],
        }
        d = typ[cell]
        table.append(
            f"| {cell} | {_fmt(d['median_rate_small'])} | {_fmt(d['max_rate_small'])} | "
            f"{d['frac_positive']:.0%} | {_fmt(d['best_median_rate'])} "
            f"({d['best_at'][0]:g}, {d['best_at'][1]:g}, {d['best_at'][2]:g}) |"
        )
    return typ, table


def _sweeps(cfg, out, summary, md, save, say, progress):
    from gated_jax.experiments import plots

    sweeps, files = _run_sweeps(cfg, out, summary, say, progress)
    T = max(cfg.lengths)
    files.append(_save_growth_rates(sweeps, out / "growth_rates.csv"))
    typ, table = _typical(sweeps, T)
    summary["typical"] = {"length": T, **typ}
    bi = 0
    si = 0
    shown = sweeps.get("gated") or next(iter(sweeps.values()))
    b_txt = f"b = {shown.gate_biases[bi]:g}, input scale {shown.input_scales[si]:g}"
    nconf = shown.norms[T][..., 0].size
    md += [
        f"**Typical case** (random weights, `x ~ sigma N(0, I)`, `z[0] = 0`; "
        f"{nconf} configurations per cell and length: `||W_z||` in "
        f"{list(cfg.wz_norms)}, gate bias in {list(cfg.gate_biases)}, input scale in "
        f"{list(cfg.input_scales)}, {len(cfg.seeds)} seeds, n = {cfg.n}, m = {cfg.m}, "
        f"T in {list(cfg.lengths)}; one vmapped program per length). Growth rate "
        f"= log ||dz[T]/dz[0]|| / T at T = {T} (> 0: exploding, < 0: vanishing):",
        "",
        *table,
        "",
        save(plots.plot_norm_vs_lag(shown, T, bias_index=bi, scale_index=si), "flow_norm_vs_lag"),
        "",
        save(plots.plot_heatmap(shown, T, bias_index=bi, scale_index=si), "flow_heatmap"),
        "",
        f"Baselines on the same sweep ({b_txt}; for tanh `b` is its pre-activation bias):",
        "",
        save(plots.plot_baselines(sweeps, T, bias_index=bi, scale_index=si), "flow_baselines"),
        "",
        save(plots.plot_growth_rates(sweeps, T, bias_index=bi), "flow_growth_rates"),
        "",
    ]
    return files


def _worst(cfg, out, summary, md, save, say):
    from gated_jax.experiments import analysis, plots
    from gated_jax.experiments.worst_case import worst_case_lengths

    files = []
    say("worst case")
    t0 = time.perf_counter()
    wc = worst_case_lengths(
        cfg.worst_lengths,
        steps=cfg.worst_steps,
        restarts=cfg.worst_restarts,
        wz_norm=cfg.worst_wz_norm,
        weight_norm=cfg.worst_weight_norm,
        input_bound=cfg.worst_input_bound,
    )
    summary["worst_case_seconds"] = time.perf_counter() - t0
    wpath = out / "worst_case.csv"
    with wpath.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["length", "rate", "norm", "bound_rate", "a_priori_rate", "jacrev_rel_error"])
        for r in wc:
            w.writerow(
                [r.length, r.rate, r.norm, r.bound_rate, r.a_priori_rate, r.jacrev_rel_error]
            )
    files.append(wpath)
    npz = {}
    for r in wc:
        npz.update(
            {
                f"T{r.length}_w_x": r.params.w_x,
                f"T{r.length}_w_c": r.params.w_c,
                f"T{r.length}_w_z": r.params.w_z,
                f"T{r.length}_xs": r.xs,
            }
        )
    np.savez(out / "worst_case.npz", **npz)
    files.append(out / "worst_case.npz")
    summary["worst_case"] = [
        {
            k: getattr(r, k)
            for k in ("length", "rate", "norm", "bound_rate", "a_priori_rate", "jacrev_rel_error")
        }
        for r in wc
    ]
    wrows = [
        "| T | rate found | ‖dz[T]/dz[0]‖ | jax.jacrev rel. gap | bound on that path | "
        "a-priori bound |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in wc:
        wrows.append(
            f"| {r.length} | {r.rate:.4f} | {r.norm:.4g} | {r.jacrev_rel_error:.1e} | "
            f"{r.bound_rate:.3f} | {r.a_priori_rate:.3f} |"
        )
    best = max(wc, key=lambda r: r.rate)
    md += [
        f"**Worst case, searched** (optax Adam ascent on log ||dz[T]/dz[0]||_F / T over "
        f"`W_x, W_c, W_z` and the inputs, z[0] = 0, projected onto `||W_z|| <= "
        f"{cfg.worst_wz_norm:g}`, `||W_x||, ||W_c|| <= {cfg.worst_weight_norm:g}`, `|x| <= "
        f"{cfg.worst_input_bound:g}`; n = 2, m = 4, {cfg.worst_restarts} restarts, "
        f"{cfg.worst_steps} steps, each length warm-started from the previous). Exact spectral "
        "norms of the best point:",
        "",
        *wrows,
        "",
        f"The ascent finds rate up to {best.rate:.3f} (T = {best.length}); it is a local "
        "search, so these are lower bounds on the worst case. At long T the objective is itself "
        "a product of T Jacobians and the ascent finds less than the hand-built counterexample "
        f"({analysis.COUNTEREXAMPLE_RATE:.3f} at every T within the same bounds), which "
        "therefore is the sharper evidence.",
        "",
        save(
            plots.plot_worst_case(wc, counterexample_rate=analysis.COUNTEREXAMPLE_RATE),
            "flow_worst_case",
        ),
        "",
    ]
    return files


def _learning(cfg, out, summary, md, save, say, progress):
    from gated_jax.experiments import plots
    from gated_jax.experiments.learning import learning_experiment

    files = []
    say("learning")
    t0 = time.perf_counter()
    lr = learning_experiment(
        lengths=cfg.learn_lengths,
        seeds=cfg.learn_seeds,
        hidden=cfg.learn_hidden,
        batch=cfg.learn_batch,
        steps=cfg.learn_steps,
        progress=progress,
    )
    summary["learning_seconds"] = time.perf_counter() - t0
    files += [lr.save_csv(out / "learning.csv"), lr.save_npz(out / "learning.npz")]
    lrows = [
        "| T | cell | normalised test MSE (mean, min..max) | accuracy (mean) |",
        "|---:|---|---|---:|",
    ]
    summary["learning"] = {}
    for t in lr.lengths:
        for cell in lr.cells:
            nm = lr.normalized_mse(cell, t)
            a = lr.accuracy[(cell, t)]
            summary["learning"][f"{cell}_T{t}"] = {
                "normalized_mse": nm.tolist(),
                "accuracy": a.tolist(),
            }
            lrows.append(
                f"| {t} | {cell} | {nm.mean():.3f} ({nm.min():.3f}..{nm.max():.3f})"
                f" | {a.mean():.2f} |"
            )
    md += [
        f"**Learning: the adding problem** (hidden {cfg.learn_hidden}, batch "
        f"{cfg.learn_batch}, {cfg.learn_steps} Adam steps, seeds {list(cfg.learn_seeds)}; "
        "normalised MSE 1 = predicting the mean, accuracy = |error| < 0.04):",
        "",
        *lrows,
        "",
        save(plots.plot_learning(lr), "flow_learning"),
        "",
    ]

    return files
