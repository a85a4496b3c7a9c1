"""Strict numerics for every test: float64 available, no silent rank promotion."""

import jax
from hypothesis import settings

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

# JAX compiles on first call: per-example deadlines would measure compilation, not the code.
settings.register_profile("gated_jax", deadline=None, print_blob=True)
settings.load_profile("gated_jax")
