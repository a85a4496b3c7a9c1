"""The full speed map of the gated recurrence (issue 30): every shape of the grid, resumable.

For each shape ``(B, T, n, m)`` of B in {1, 8, 32, 128}, T in {32, 256, 2048} and
(n, m) in {(16, 16), (64, 64), (256, 256), (512, 512), (1, 64), (16, 64)}: forward+backward
(gradient w.r.t. parameters and inputs) of ``gated_scan`` (``backward="auto"``, and each path
the rule chooses between, forced) against the lean autodiff scan, and ``GatedRNN`` against
``nn.RNN(GatedCell)``; interleaved medians in one process, compile times, and in bfloat16 the
gradients' relative error against float64 (``gated_jax.lab.speed`` does the measuring).

Results accumulate in ``benchmarks/results/speed_map_<dtype>.json`` (one record per shape,
saved after each shape); a rerun skips the shapes already there (``--force`` remeasures them;
a record whose ``"auto"`` path is not the one the rule picks now is remeasured anyway),
so the grid can be run in pieces (``--B 1 8 --T 32 256``) or restarted after an interruption.
Every run rewrites the CSV, the Markdown table and the heatmap PNG from all the records in the
file; shapes never measured are listed, and grey ("n/a") in the heatmap.

    python benchmarks/speed_map.py                      # the whole grid, float32
    python benchmarks/speed_map.py --dtype bfloat16     # the whole grid, bfloat16
    python benchmarks/speed_map.py --B 1 8 --T 32       # a subset
    python benchmarks/speed_map.py --plot-only          # redraw from the saved records
    python benchmarks/speed_map.py --profile 32 32 16 64  # where the time goes at one shape
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _parse_nm(text: str) -> tuple[int, int]:
    n, m = text.lower().split("x")
    return int(n), int(m)


def _args(argv=None):
    from gated_jax.lab import speed

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--B", type=int, nargs="+", default=list(speed.GRID_B))
    ap.add_argument("--T", type=int, nargs="+", default=list(speed.GRID_T))
    ap.add_argument(
        "--nm",
        type=_parse_nm,
        nargs="+",
        default=list(speed.GRID_NM),
        help="(n, m) pairs as NxM, e.g. 16x64",
    )
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--out", type=Path, default=None, help="JSON records (default: results/)")
    ap.add_argument("--force", action="store_true", help="remeasure shapes already saved")
    ap.add_argument("--budget", type=float, default=3.0, help="timing seconds per shape")
    ap.add_argument("--max-rounds", type=int, default=11, help="cap on interleaved rounds")
    ap.add_argument("--plot-only", action="store_true", help="only redraw table and heatmap")
    ap.add_argument(
        "--profile",
        type=int,
        nargs=4,
        metavar=("B", "T", "N", "M"),
        help="where the time goes at one shape (forward / backward, HLO counts), then exit",
    )
    return ap.parse_args(argv)


def _rule(s) -> str:
    """The path ``backward="auto"`` takes at ``s`` now: a record measured under another rule
    is stale, and remeasured."""
    from gated_jax import cell

    return cell.resolve_backward("auto", s.B, s.T, s.n, s.m)


def _load(path: Path) -> dict[tuple, dict]:
    if not path.exists():
        return {}
    return {_key(r): r for r in json.loads(path.read_text())}


def _key(r) -> tuple:
    return (r["B"], r["T"], r["n"], r["m"])


def _save(path: Path, records: dict[tuple, dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(records.values(), key=_key), indent=1))
    os.replace(tmp, path)


def _write_outputs(path: Path, records: dict[tuple, dict], dtype: str) -> None:
    from gated_jax.lab import speed
    from gated_jax.lab._harness import device_line

    recs = sorted(records.values(), key=_key)
    if not recs:
        return
    missing = [s for s in speed.grid() if tuple(s) not in records]
    t = speed.table(recs, f"{speed.BENCH_TITLE} ({dtype})")
    t.notes.insert(
        0, f"{device_line()}; {len(recs)} shapes measured, {len(missing)} of the grid not"
    )
    if missing:
        t.notes.append("not measured: " + ", ".join(f"{tuple(s)}" for s in missing))
    path.with_suffix(".md").write_text(t.to_markdown() + "\n")
    with path.with_suffix(".csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(t.columns)
        w.writerows(t.rows)
    speed.heatmap(recs, path.with_suffix(".png"), f"{dtype}, {device_line()}")
    print(t.to_markdown(), flush=True)


def main(argv=None) -> int:
    from gated_jax.lab import speed

    a = _args(argv)
    if a.profile:
        for name, row in speed.pieces(speed.Shape(*a.profile)).items():
            print(name, {k: round(v, 3) for k, v in row.items()}, flush=True)
        return 0
    path = a.out or RESULTS / f"speed_map_{a.dtype}.json"
    records = _load(path)
    todo = speed.grid(a.B, a.T, a.nm)
    if not a.plot_only:
        t0 = time.perf_counter()
        for i, s in enumerate(todo, 1):
            saved = records.get(tuple(s))
            if saved and not a.force and saved["path"] == _rule(s):
                print(f"[{i}/{len(todo)}] {tuple(s)} skip (saved; --force remeasures)", flush=True)
                continue
            t1 = time.perf_counter()
            rec = speed.measure(s, a.dtype, budget_s=a.budget, max_rounds=a.max_rounds)
            records[tuple(s)] = rec
            _save(path, records)
            r = speed.ratio(rec, speed.SCAN, speed.LEAN) or (float("nan"), 0.0)
            q = speed.ratio(rec, speed.RNN, speed.FLAX) or (float("nan"), 0.0)
            print(
                f"[{i}/{len(todo)}] {tuple(s)} path={rec['path']} scan x{r[0]:.2f} "
                f"rnn x{q[0]:.2f} ({time.perf_counter() - t1:.1f} s, "
                f"{time.perf_counter() - t0:.0f} s total, load {rec['load']:.1f})",
                flush=True,
            )
    _write_outputs(path, records, a.dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
