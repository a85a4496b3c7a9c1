import sys

from gated_jax.cli import main

sys.exit(main())
