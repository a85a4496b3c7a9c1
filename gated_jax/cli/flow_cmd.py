"""``gated-jax flow``: the gradient-flow experiment (do gradients vanish or explode?), data
and plots to ``--out``."""

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
    p.add_argument(
        "--gate-biases",
        type=_list(float, "--gate-biases"),
        default=None,
        help="biases of the gate of the sweep, e.g. 0,-2,2",
    )
    p.add_argument(
        "--input-scales",
        type=_list(float, "--input-scales"),
        default=None,
        help="scales of the random inputs of the sweep, e.g. 1,0.5,2",
    )
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
    p.add_argument(
        "--worst-lengths",
        type=_list(int, "--worst-lengths"),
        default=None,
        help="lengths of the worst-case gradient-growth search, each warm-started from the "
        "previous, e.g. 8,16,32,64",
    )
    p.add_argument(
        "--worst-steps", type=int, default=None, help="optimizer steps of each worst-case search"
    )
    p.add_argument(
        "--worst-restarts",
        type=int,
        default=None,
        help="random starts of the worst-case search (the best one is kept)",
    )
    p.add_argument(
        "--learn-lengths",
        type=_list(int, "--learn-lengths"),
        default=None,
        help="sequence lengths (>= 2) of the adding-problem training runs, e.g. 10,30,60",
    )
    p.add_argument(
        "--learn-steps", type=int, default=None, help="training steps of each learning run"
    )
    p.add_argument("--learn-seeds", type=int, default=None, help="number of seeds (0..N-1)")
    p.add_argument(
        "--learn-hidden", type=int, default=None, help="state width of the trained cells"
    )
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    add_distributed_arguments(p)


def add_distributed_arguments(p) -> None:
    """``--coordinator``, ``--num-processes``, ``--process-id``, ``--distributed``,
    ``--init-timeout``: join a multi-process JAX job (shared with ``gated-jax report``)."""
    g = p.add_argument_group(
        "several processes (one per host or GPU; every process runs the same command)"
    )
    g.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        default=None,
        help="address of process 0, which serves the coordinator on PORT",
    )
    g.add_argument(
        "--num-processes", type=int, default=None, metavar="N", help="number of processes"
    )
    g.add_argument("--process-id", type=int, default=None, metavar="I", help="0 .. N-1")
    g.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process job; values not given come from the environment as "
        "jax.distributed.initialize() reads it (SLURM, Open MPI, Cloud TPU, "
        "JAX_COORDINATOR_ADDRESS)",
    )
    g.add_argument(
        "--init-timeout",
        type=int,
        default=300,
        metavar="SECONDS",
        help="how long to wait for the coordinator and the other processes (default 300)",
    )


_DIST_NAMES = {
    "coordinator": "--coordinator",
    "num_processes": "--num-processes",
    "process_id": "--process-id",
    "timeout": "--init-timeout",
}


def start_distributed(args) -> bool:
    """Join the multi-process job the options ask for; ``True`` if this is process 0.

    Without any of the options, nothing starts (one process). Bad values, a missing value the
    environment does not set and a coordinator JAX's runtime could not use (a host that does
    not resolve, a port already in use on process 0, an address that does not lead to process
    0's host, nothing listening there within ``--init-timeout``) raise a one-line
    ``ValueError`` naming the option before the runtime starts (the CLI exits with status 2;
    the runtime itself would abort or crash the process).
    """
    from gated_jax._validate import positive_int

    wanted = args.distributed or any(
        v is not None for v in (args.coordinator, args.num_processes, args.process_id)
    )
    positive_int("--init-timeout", args.init_timeout)
    if not wanted:
        return True
    from gated_jax.experiments import distributed

    if args.coordinator is not None:
        distributed.parse_coordinator("--coordinator", args.coordinator)
    if args.num_processes is not None:
        positive_int("--num-processes", args.num_processes)
    if args.process_id is not None:
        top = None if args.num_processes is None else args.num_processes - 1
        positive_int("--process-id", args.process_id, minimum=0, maximum=top)
    try:
        index, _ = distributed.initialize(
            args.coordinator, args.num_processes, args.process_id, timeout=args.init_timeout
        )
    except ValueError as e:
        msg = str(e)
        for name, option in _DIST_NAMES.items():
            if msg.startswith(f"`{name}`"):
                msg = f"`{option}`" + msg[len(name) + 2 :]
                break
        raise ValueError(msg) from None
    return index == 0


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


def check_out_dir(out, main: bool) -> None:
    """``--out`` checked (and created) on process 0, its verdict shared with every process.

    Only process 0 writes, so only it creates the folder; a bad ``--out`` then raises the same
    one-line error on every process instead of leaving the others waiting in a collective.
    """
    from gated_jax._validate import output_dir
    from gated_jax.experiments.distributed import check_same_on_all_processes

    error = None
    if main:
        try:
            output_dir("--out", out)
        except ValueError as e:
            error = str(e)
    check_same_on_all_processes({}, error=error)


def _discard_figure(fig, name: str) -> str:
    import matplotlib.pyplot as plt

    plt.close(fig)
    return name


def run(args) -> int:
    import sys
    import tempfile

    main = start_distributed(args)  # first: validating the sizes initializes JAX's backend
    cfg = config_from_args(args)

    import matplotlib

    matplotlib.use("Agg")
    from gated_jax.experiments.runner import run_flow

    check_out_dir(args.out, main)
    if not main:  # every process computes (the sweeps are collective); process 0 writes
        with tempfile.TemporaryDirectory(prefix="gated-jax-flow-") as scratch:
            run_flow(scratch, cfg, save_figure=_discard_figure, progress=False)
        return 0
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
