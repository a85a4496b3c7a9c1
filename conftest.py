"""Doctests of gated_jax's docstrings (``pytest --doctest-modules``, on in pyproject.toml).

Each docstring example runs as a user runs it: JAX's default configuration (float32, rank
promotion allowed, default matmul precision), whatever ``tests/conftest.py`` set for the test
functions in the same worker. An example that needs float64 enables it itself
(``jax.config.update("jax_enable_x64", True)`` or ``with jax.enable_x64(True):``), and the
configuration is put back after every example, so one example never changes the next.
"""

import os
import shutil
import sys
from pathlib import Path

import pytest

# Compile fast, run slower: the tests are mostly XLA compilations of small programs, and LLVM's
# optimisation of the generated machine code was ~40% of the suite's time. The flag lowers
# XLA:CPU's backend optimisation level only: the HLO passes (fusion, buffer assignment) still
# run, so `memory_analysis()` figures are unchanged, and so is what is computed. Set here,
# before JAX is imported, so subprocesses and notebook kernels inherit it. The benchmarks and
# `gated-jax` itself run with full optimisation. JAX_DISABLE_MOST_OPTIMIZATIONS=0 turns it off.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# XLA:CPU's legacy elemental emitters instead of its MLIR fusion emitters: a code-generation
# choice after the HLO passes (fusion and buffer assignment run as before, so `memory_analysis()`
# is unchanged), about half the backend compile time of the tests' small programs. And each
# program's machine code generated as one LLVM module, not split into parts compiled on a thread
# pool: for small programs on two busy cores the split costs more than it saves (~12% of the
# backend compile time in a micro-benchmark of gated_scan gradients and small ops).
# GATED_JAX_TEST_FUSION_EMITTERS=1 keeps XLA's default code generation (both choices).
# An explicit --xla_cpu_use_fusion_emitters or --xla_cpu_parallel_codegen_split_count in
# XLA_FLAGS wins.
_xla_flags = os.environ.get("XLA_FLAGS", "")
if os.environ.get("GATED_JAX_TEST_FUSION_EMITTERS", "0") in ("", "0"):
    for _flag, _value in (
        ("--xla_cpu_use_fusion_emitters", "false"),
        ("--xla_cpu_parallel_codegen_split_count", "1"),
    ):
        if _flag not in _xla_flags:
            _xla_flags = f"{_xla_flags} {_flag}={_value}"
    os.environ["XLA_FLAGS"] = _xla_flags.strip()
# A persistent compilation cache for the test runs, in `.jax_cache/` at the repository root:
# a program compiled by one run (in any worker, subprocess or notebook kernel) is loaded by the
# next run instead of compiled again. Its key is the program together with the compile options
# and XLA flags, so an edit to the code compiles what it changed. JAX's own size limit takes a
# file lock per entry (a cold run took 3.5x as long with it), so instead the controller empties
# the folder when it has grown past 1 GiB. A fresh clone (CI) starts empty.
# GATED_JAX_TEST_COMPILATION_CACHE=0 turns it off; a JAX_COMPILATION_CACHE_DIR set by the
# user wins.
_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": str(Path(__file__).resolve().parent / ".jax_cache"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # the tests' programs are small
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}
_CACHE_LIMIT = 1 << 30
if os.environ.get("GATED_JAX_TEST_COMPILATION_CACHE", "1") not in ("", "0"):
    for _name, _value in _CACHE.items():
        os.environ.setdefault(_name, _value)
    _ours = Path(_CACHE["JAX_COMPILATION_CACHE_DIR"])
    _controller = "PYTEST_XDIST_WORKER" not in os.environ
    if _controller and Path(os.environ["JAX_COMPILATION_CACHE_DIR"]) == _ours:
        if sum(f.stat().st_size for f in _ours.glob("*") if f.is_file()) > _CACHE_LIMIT:
            shutil.rmtree(_ours, ignore_errors=True)
if "jax" in sys.modules:  # imported by a plugin before this file: set it on the live config
    _config = sys.modules["jax"].config
    _config.update(
        "jax_disable_most_optimizations", os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == "1"
    )
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        _env = lambda name: os.environ.get(name, _CACHE[name])
        _config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        _config.update(
            "jax_persistent_cache_min_compile_time_secs",
            float(_env("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")),
        )
        _config.update(
            "jax_persistent_cache_min_entry_size_bytes",
            int(_env("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES")),
        )

# Running the package as a program is not an example to collect.
collect_ignore = ["gated_jax/cli/__main__.py"]

_DEFAULTS = {
    "jax_enable_x64": False,
    "jax_numpy_rank_promotion": "allow",
    "jax_default_matmul_precision": None,
}


@pytest.fixture(autouse=True)
def _jax_defaults_for_doctests(request):
    if not isinstance(request.node, pytest.DoctestItem):
        yield
        return
    import jax

    saved = {name: getattr(jax.config, name) for name in _DEFAULTS}
    for name, value in _DEFAULTS.items():
        jax.config.update(name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)
