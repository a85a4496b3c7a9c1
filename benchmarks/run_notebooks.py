"""Run the notebooks' code cells top to bottom without Jupyter, on whatever device JAX finds.

For machines that have JAX (a GPU or TPU box) but no Jupyter kernel: each notebook runs in its
own Python process, its code cells executed in order in one namespace (the notebooks use no
IPython magics), figures drawn with matplotlib's Agg backend and not shown. The notebooks assert
their own claims, so a notebook that finishes is a notebook whose checks passed. ``make test``
executes the same notebooks through a real kernel (``tests/test_notebooks.py``).

Run: ``python benchmarks/run_notebooks.py [--small] [--timeout S] [NOTEBOOK ...]``; prints one
line per notebook (device, seconds, ok/failed) and exits non-zero when one fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, os, sys
import matplotlib
matplotlib.use("Agg")
import jax
nb = json.load(open(sys.argv[1]))
os.chdir(os.path.dirname(os.path.abspath(sys.argv[1])))
ns = {"__name__": "__main__"}
for i, cell in enumerate(nb["cells"]):
    if cell["cell_type"] != "code":
        continue
    src = "".join(cell["source"])
    exec(compile(src, f"{sys.argv[1]}[cell {i}]", "exec"), ns)
print("devices:", jax.devices())
"""


def run_one(path: Path, small: bool, timeout: float) -> tuple[bool, float, str]:
    env = dict(os.environ, MPLBACKEND="Agg", GATED_JAX_NOTEBOOK_SMALL="1" if small else "0")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - t0, f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - t0
    out = (proc.stdout + proc.stderr).strip().splitlines()
    if proc.returncode != 0:
        return False, seconds, "\n".join(out[-15:])
    devices = next((line for line in reversed(out) if line.startswith("devices:")), "")
    return True, seconds, devices


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--small", action="store_true", help="GATED_JAX_NOTEBOOK_SMALL=1")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per notebook")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    failed = 0
    for path in paths:
        json.loads(Path(path).read_text())  # a clear error for a path that is not a notebook
        ok, seconds, info = run_one(Path(path), args.small, args.timeout)
        size = "small" if args.small else "full"
        print(f"{Path(path).name} ({size}): {'ok' if ok else 'FAILED'} in {seconds:.1f} s; {info}")
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
