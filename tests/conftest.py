"""Strict numerics for every test: float64 available, no silent rank promotion, full float32.

GPUs (TF32) and TPUs (bfloat16 passes) run float32 matmuls in reduced precision by default, which
moves float32 results by ~1e-3 relative (measured on an H200: the float32 tests comparing two
groupings of the same matmuls differed by up to 3e-4 .. 1e-2). The tests check the math, so they
ask for full float32 matmuls on every platform; the README says what the defaults do.
"""

import os

import jax
from hypothesis import settings

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")

# JAX compiles on first call: per-example deadlines would measure compilation, not the code.
# `make test` (and CI) draw the same examples every run, so a result never depends on luck;
# GATED_JAX_HYPOTHESIS_RANDOM=1 draws fresh ones (for exploring; a failure prints its blob).
_random = os.environ.get("GATED_JAX_HYPOTHESIS_RANDOM", "0") not in ("", "0")
settings.register_profile("gated_jax", deadline=None, print_blob=True, derandomize=not _random)
settings.load_profile("gated_jax")


# `make test` runs two workers. Each test file runs on one worker (its compiled programs and
# module fixtures are shared by its tests), except these, whose tests are independent and slow
# (a long sequence of its own shape each): they spread over the workers.
SPREAD_FILES = {"tests/test_cell_memory.py"}
# The longest files start first (each on the first free worker), so that no worker is left with
# one of them at the end while the other idles: the notebooks (one kernel for all of them), the
# multi-process launches, the documentation site.
FIRST_FILES = (
    "tests/test_notebooks.py",
    "tests/test_distributed.py",
    "tests/test_sequence_parallel.py",
    "tests/test_docs.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(FIRST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # the order above, not the most tests first

    class Scheduler(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            path = nodeid.split("::", 1)[0]
            return nodeid if path in SPREAD_FILES else path

    return Scheduler(config, log)
