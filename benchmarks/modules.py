"""GatedRNN (fast path) against nn.RNN(GatedCell), forward + backward, in one process.

Runs :mod:`gated_jax.lab.modules` at full size (batch 32, T = 256, width 256, float32) and
prints the table. ``--quick`` runs the small version in seconds.
"""

import argparse

from gated_jax.lab import modules

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    print(modules.bench(quick=parser.parse_args().quick).to_markdown())
