"""The gated recurrence: closed-form BPTT scan vs a plain ``lax.scan`` vs Flax GRU/MGU.

Runs :mod:`gated_jax.lab.cell` at full size (float32, batch 32, T = 256, n = m = 256;
compiled memory at T = 4096) and prints the table. ``--quick`` runs the small version.
"""

import argparse

from gated_jax.lab import cell

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    print(cell.bench(quick=parser.parse_args().quick).to_markdown())
