"""The digits classifier of ``train_digits.py`` with each recurrence: test accuracy and time.

Trains every method for the full run (several seeds: parameters, split and data order), then
times one epoch of training steps per method in interleaved rounds on the trained state
(compiled already; medians over rounds, so every method sees the same machine load), and
reports the compile time (first epoch minus the median) separately.

    python examples/compare_methods.py                  # digits, 30 epochs, seeds 0 1 2
    python examples/compare_methods.py --small --seeds 0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_digits as td  # noqa: E402


def epoch_ms(config: td.Config, state: dict, data: td.Dataset) -> float:
    """Wall time of one epoch of training steps (batches as ``train`` draws them)."""
    steps = td.steps_for(config)
    x = jnp.asarray(data.x_train, config.dtype)
    y = jnp.asarray(data.y_train, jnp.int32)
    order = td.epoch_order(td.data_key(config), 0, len(data.y_train))
    params, opt_state = state["params"], state["opt_state"]
    per_epoch = len(data.y_train) // config.batch_size
    t0 = time.perf_counter()
    for i in range(per_epoch):
        index = order[i * config.batch_size : (i + 1) * config.batch_size]
        params, opt_state, loss = steps.train_step(params, opt_state, x, y, index)
    jax.block_until_ready(loss)
    return 1e3 * (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["sequential", "mingru", "quasi_deer", "gru"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    p.add_argument("--small", action="store_true")
    args = p.parse_args(argv)
    make = td.Config.small_run if args.small else td.Config
    extra = {} if args.epochs is None else {"epochs": args.epochs}
    acc, first, final = {}, {}, {}
    for method in args.methods:
        for seed in args.seeds:
            config = make(method=method, seed=seed, **extra)
            r = td.train(config, progress=False)
            acc.setdefault(method, []).append(r.test_accuracy)
            first.setdefault(method, r.epoch_ms[0] - float(np.median(r.epoch_ms[1:])))
            data = td.load_data(config.data, config.small, seed)
            final.setdefault(method, (config, r.state, data))
            print(f"{method} seed {seed}: test accuracy {r.test_accuracy:.4f}", flush=True)
    times = {m: [] for m in args.methods}
    for _ in range(args.rounds):
        for m in args.methods:
            times[m].append(epoch_ms(*final[m]))
    print(f"\n{r.dataset}, {len(args.seeds)} seeds, {jax.devices()[0].device_kind}")
    print(f"{'method':<12} {'test acc (mean, min-max)':>26} {'ms/epoch':>9} {'compile s':>10}")
    base = float(np.median(times["gru"])) if "gru" in times else None
    for m in args.methods:
        a, ms = np.asarray(acc[m]), float(np.median(times[m]))
        ratio = f"  ({ms / base:.2f}x gru)" if base else ""
        print(
            f"{m:<12} {a.mean():>12.4f} ({a.min():.4f}-{a.max():.4f}) {ms:>9.1f} "
            f"{first[m] / 1e3:>10.1f}{ratio}"
        )


if __name__ == "__main__":
    main()
