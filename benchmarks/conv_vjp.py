"""Closed-form convolution VJP against ``jax.vjp(lax.conv_general_dilated)``.

Runs :mod:`gated_jax.lab.conv` at full size (batch 16, 64 channels, 32x32, 3x3, stride 1 and
2, NHWC and NCHW) and prints the table. ``--quick`` runs the small version in seconds.
"""

import argparse

from gated_jax.lab import conv

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    print(conv.bench(quick=parser.parse_args().quick).to_markdown())
