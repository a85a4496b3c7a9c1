"""``gated-jax flow``: the gradient-flow experiment (seed 1.2(d)), data and plots to ``--out``."""

from __future__ import annotations

import argparse

HELP = "gradient-flow experiment: bounds, counterexample, sweeps, baselines, worst case, learning"


def _list(kind, name):
    def parse(text: str):
        try:
            vals = tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be a comma-separated list of {kind.__name__}s, got {text!r}"
            ) from None
        if not vals:
            raise argparse.ArgumentTypeError(f"{name} must not be empty, got {text!r}")
        return vals

    return parse


def _words(name):
    def parse(text: str):
        vals = tuple(v.strip() for v in text.split(",") if v.strip())
        if not vals:
            raise argparse.ArgumentTypeError(f"{name} must not be empty, got {text!r}")
        return vals

    return parse


def add_arguments(p) -> None:
    p.add_argument("--out", default="flow", help="output folder (default: flow/)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds); options override")
    p.add_argument(
        "--parts",
        type=_words("--parts"),
        default=None,
        help="comma list of: bounds,counterexample,sweep,worst-case,learning",
    )
    p.add_argument(
        "--cells", type=_words("--cells"), default=None, help="comma list of gated,tanh,gru,lstm"
    )
    p.add_argument(
        "--wz-norms",
        type=_list(float, "--wz-norms"),
        default=None,
        help="spectral norms of the recurrent weights, e.g. 0.5,1,2,4",
    )
    p.add_argument("--gate-biases", type=_list(float, "--gate-biases"), default=None)
    p.add_argument("--input-scales", type=_list(float, "--input-scales"), default=None)
    p.add_argument(
        "--lengths",
        type=_list(int, "--lengths"),
        default=None,
        help="sequence lengths of the sweep, e.g. 32,128",
    )
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1)")
    p.add_argument("--inputs", type=int, default=None, help="input width n")
    p.add_argument("--hidden", type=int, default=None, help="state width m")
    p.add_argument("--chunk-size", type=int, default=None, help="configurations per chunk")
    p.add_argument(
        "--norm",
        choices=("auto", "svd", "power"),
        default=None,
        help="spectral norms of the sweep: auto (default: svd on CPU, power on GPU/TPU), svd, "
        "or power (batched matmuls only)",
    )
    p.add_argument("--worst-lengths", type=_list(int, "--worst-lengths"), default=None)
    p.add_argument("--worst-steps", type=int, default=None)
    p.add_argument("--worst-restarts", type=int, default=None)
    p.add_argument("--learn-lengths", type=_list(int, "--learn-lengths"), default=None)
    p.add_argument("--learn-steps", type=int, default=None)
    p.add_argument("--learn-seeds", type=int, default=None, help="number of seeds (0..N-1)")
    p.add_argument("--learn-hidden", type=int, default=None)
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")


_FIELDS = {
    "parts": "parts",
    "cells": "cells",
    "wz_norms": "wz_norms",
    "gate_biases": "gate_biases",
    "input_scales": "input_scales",
    "lengths": "lengths",
    "inputs": "n",
    "hidden": "m",
    "chunk_size": "chunk_size",
    "norm": "norm",
    "worst_lengths": "worst_lengths",
    "worst_steps": "worst_steps",
    "worst_restarts": "worst_restarts",
    "learn_lengths": "learn_lengths",
    "learn_steps": "learn_steps",
    "learn_hidden": "learn_hidden",
}


def config_from_args(args):
    """A validated :class:`~gated_jax.experiments.runner.FlowConfig` from parsed options."""
    from gated_jax._validate import check_fits_in_memory, positive_int
    from gated_jax.experiments.runner import FlowConfig

    over = {}
    for opt, field in _FIELDS.items():
        v = getattr(args, opt)
        if v is not None:
            over[field] = v
    for opt in ("seeds", "learn_seeds"):
        v = getattr(args, opt)
        if v is not None:
            positive_int(_option(opt), v)
            check_fits_in_memory(_option(opt), v, v * 8, "the seed list")
            over[opt] = tuple(range(v))
    try:
        return FlowConfig.quick(**over) if args.quick else FlowConfig(**over)
    except ValueError as e:  # name the option the user typed, not the config field
        text = str(e)
        for opt, field in (*_FIELDS.items(), ("seeds", "seeds"), ("learn_seeds", "learn_seeds")):
            if text.startswith(f"`{field}` "):
                raise ValueError(f"`{_option(opt)}`" + text[len(field) + 2 :]) from None
        raise


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def run(args) -> int:
    import sys

    import matplotlib

    matplotlib.use("Agg")
    from gated_jax._validate import output_dir
    from gated_jax.experiments.runner import run_flow

    cfg = config_from_args(args)
    output_dir("--out", args.out)
    log = lambda s: print(f"flow: {s} ...", file=sys.stderr, flush=True)
    result = run_flow(args.out, cfg, progress=not args.no_progress, log=log)
    (result.out_dir / "flow.md").write_text(result.markdown + "\n")
    print(f"wrote {len(result.files) + 1} data files and the figures to {result.out_dir.resolve()}")
    s = result.summary
    if "counterexample" in s:
        for t, v in s["counterexample"].items():
            print(f"counterexample T={t}: dz[T]/dz[0] = {v['jax_grad']:.6g} (jax.grad)")
    if "typical" in s:
        for cell, d in s["typical"].items():
            if isinstance(d, dict):
                print(
                    f"{cell}: largest median growth rate {d['best_median_rate']:.3g} at "
                    f"(||W||, b, input scale) = {tuple(d['best_at'])}"
                )
    for r in s.get("worst_case", []):
        print(f"worst case T={r['length']}: rate {r['rate']:.3f}, norm {r['norm']:.4g}")
    return 0
