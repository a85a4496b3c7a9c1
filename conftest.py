"""Doctests of gated_jax's docstrings (``pytest --doctest-modules``, on in pyproject.toml).

Each docstring example runs as a user runs it: JAX's default configuration (float32, rank
promotion allowed, default matmul precision), whatever ``tests/conftest.py`` set for the test
functions in the same worker. An example that needs float64 enables it itself
(``jax.config.update("jax_enable_x64", True)`` or ``with jax.enable_x64(True):``), and the
configuration is put back after every example, so one example never changes the next.
"""

import pytest

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
