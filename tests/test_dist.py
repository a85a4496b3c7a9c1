"""The release: the built wheel, installed into a fresh virtual environment, works on its own.

The wheel is built with pyproject.toml's backend (flit_core, through ``pip wheel``), installed
with ``--no-deps`` into a new venv made without pip and without system site packages, and run
from a scratch folder with ``PYTHONPATH`` removed: the checkout is on no ``sys.path``. The
dependencies (JAX, Flax, ...) are not reinstalled (minutes, and a network): a ``.pth`` file in
the new venv lists this interpreter's site-packages folders. Folders named in a ``.pth`` file
are appended to ``sys.path`` but their own ``.pth`` files are not read, so the editable
install's ``gated_jax.pth`` (which points at the checkout) stays inert; the test checks that
``gated_jax`` resolves to the wheel's copy and that no ``sys.path`` entry is the checkout.
"""

from __future__ import annotations

import importlib.util
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import gated_jax

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # ~10-20 s: a wheel build, a venv and two interpreter starts

QUICKSTART = """
import sys, jax, jax.numpy as jnp
import gated_jax as gj

params = gj.init_gated_params(jax.random.key(0), 3, 4)
zs = gj.gated_scan(params, jnp.ones((2, 5, 3)))
assert zs.shape == (2, 5, 4), zs.shape
assert gj.conv_output_shape((1, 3, 32, 32), (8, 3, 3, 3), (2, 2), "SAME") == (1, 8, 16, 16)
print(gj.__file__)
print(gj.__version__)
print("|".join(sys.path))
"""


def _run(cmd, cwd, env) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def _build_wheel(dest: Path, env) -> Path:
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dest), str(ROOT)]
    if importlib.util.find_spec("flit_core") is not None:
        cmd.insert(4, "--no-build-isolation")  # the backend is here: no isolated environment
    _run(cmd, ROOT, env)
    (wheel,) = dest.glob("gated_jax-*.whl")
    return wheel


def _dependency_dirs() -> list[str]:
    """This interpreter's site-packages folders (where JAX, Flax, ... are), never the checkout."""
    dirs = [*site.getsitepackages(), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    keep = []
    for d in dict.fromkeys(dirs):
        if Path(d).is_dir() and Path(d).resolve() != ROOT:
            keep.append(d)
    return keep


def test_the_built_wheel_installs_and_runs_without_the_checkout(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    wheel = _build_wheel(tmp_path / "wheelhouse", env)
    assert wheel.name.startswith(f"gated_jax-{gated_jax.__version__}-")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        tmp_path,
        env,
    ).strip()
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
        + ["--no-deps", "--no-index", str(wheel)],
        tmp_path,
        env,
    )
    Path(purelib, "_deps_of_the_test.pth").write_text("\n".join(_dependency_dirs()) + "\n")

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    file, version, path = _run([str(python), "-c", QUICKSTART], scratch, env).splitlines()[-3:]
    assert Path(file).resolve().is_relative_to(Path(purelib).resolve()), file
    assert not Path(file).resolve().is_relative_to(ROOT), file
    assert version == gated_jax.__version__
    assert all(Path(p).resolve() != ROOT for p in path.split("|") if p), path

    out = _run([str(venv / "bin" / "gated-jax"), "--version"], scratch, env)
    assert out.strip() == f"gated-jax {gated_jax.__version__}"
