"""Gradient-flow sweep: vmap over 64 configurations vs a Python loop (full size).

Run: ``python benchmarks/sweep.py`` (``--quick`` for small sizes).
"""

import sys

from gated_jax.lab._harness import device_line
from gated_jax.lab.flow import bench

if __name__ == "__main__":
    print(device_line())
    print(bench(quick="--quick" in sys.argv).to_markdown())
