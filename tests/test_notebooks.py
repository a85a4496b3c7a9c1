"""The notebooks: Colab-ready, stored without outputs, and executed top to bottom (small sizes).

Each notebook asserts its own claims, so executing it is a test. The kernel runs the
interpreter running pytest (``sys.executable``), with ``GATED_JAX_NOTEBOOK_SMALL=1`` so the
parameter cell picks small sizes. The file runs on one pytest worker, which starts one kernel
and runs the notebooks in it one after another, resetting the kernel in between (``%reset -f``,
JAX's configuration as the kernel started, no open figures), so only the imports are shared.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
REQUIRED = {
    "01_conv_shapes.ipynb",
    "02_conv_derivatives.ipynb",
    "03_gated_recurrence.ipynb",
    "04_gradient_flow.ipynb",
}
SMALL_ENV = "GATED_JAX_NOTEBOOK_SMALL"
CELL_TIMEOUT_S = 300
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _code(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_the_four_notebooks_exist_and_share_one_repository_url():
    names = {p.name for p in NOTEBOOKS}
    assert REQUIRED <= names, f"missing: {sorted(REQUIRED - names)}"
    urls = {
        re.search(r'^REPO = "(.*)"$', _read(p).cells[1].source, re.M).group(1) for p in NOTEBOOKS
    }
    assert len(urls) == 1, f"notebooks disagree on the repository URL: {sorted(urls)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_colab_ready_and_stored_without_outputs(path):
    nb = _read(path)
    nbformat.validate(nb)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and BADGE in first.source, "badge must come first"
    install = nb.cells[1]
    assert install.cell_type == "code"
    m = re.search(r'^REPO = "(https://github\.com/[\w.-]+/[\w.-]+)"$', install.source, re.M)
    assert m, "the install cell must set REPO, the one place the repository URL lives"
    repo = m.group(1)
    colab = repo.replace("https://github.com/", "https://colab.research.google.com/github/")
    assert f"({colab}/blob/main/notebooks/{path.name})" in first.source, "badge must use REPO"
    assert "except ImportError" in install.source and "pip" in install.source
    assert install.source.index("import gated_jax") < install.source.index("pip")
    # Exactly one parameter cell, right after the install cell, reading the small-size switch.
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and nb.cells[2] is tagged[0]
    assert SMALL_ENV in tagged[0].source
    # Stored without outputs or execution counts, so diffs stay reviewable.
    for c in _code(nb):
        assert c.outputs == [] and c.execution_count is None, "strip outputs before committing"
    src = "\n".join(c.source for c in _code(nb))
    # Device-agnostic: prints the devices it got, never pins a platform.
    assert "jax.devices()" in src
    for pinned in ("JAX_PLATFORMS", "jax_platforms", 'devices("cpu")', "devices('cpu')"):
        assert pinned not in src
    assert len(re.findall(r"^\s*assert ", src, re.M)) >= 3, "a notebook asserts its claims"


def _kernel_manager(spec_dir: Path):
    """A kernel running THIS interpreter (never a ``python3`` kernelspec found elsewhere).

    A user-level ``python3`` kernelspec (``~/.local/share/jupyter``) takes precedence over the
    venv's and may point at another Python, where ``gated_jax`` would not import and the install
    cell would reach for the network. So the test writes its own spec for ``sys.executable``.
    """
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    kdir = spec_dir / "gated_jax_test"
    kdir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "gated_jax test", "language": "python"}
    (kdir / "kernel.json").write_text(json.dumps(spec))
    ksm = KernelSpecManager(kernel_dirs=[str(spec_dir)])
    return AsyncKernelManager(kernel_name="gated_jax_test", kernel_spec_manager=ksm)


# A kernel's first cell records JAX's configuration as the kernel started; before each later
# notebook the kernel is reset: no names of the notebook before, that configuration put
# back, no open figures. Only the imported modules stay: a kernel per notebook started a process
# and imported JAX, Flax and gated_jax again for each.
_SNAPSHOT = """
import sys as _sys, types as _types
import jax as _jax
_sys.modules["_gated_jax_test_kernel"] = _types.SimpleNamespace(config=dict(_jax.config.values))
del _sys, _types, _jax
"""
_RESET = """
%reset -f
import sys as _sys
import jax as _jax, matplotlib.pyplot as _plt
_plt.close("all")
for _k, _v in _sys.modules["_gated_jax_test_kernel"].config.items():
    if _jax.config.values.get(_k) != _v:
        _jax.config.update(_k, _v)
del _sys, _jax, _plt, _k, _v
"""


class _Kernel:
    """One kernel, reused by the notebooks, each after a reset."""

    def __init__(self, spec_dir: Path):
        self.spec_dir = spec_dir
        self.km = None

    def execute(self, nb) -> None:
        from nbclient import NotebookClient

        fresh = self.km is None or not self.km.has_kernel
        if fresh:
            self.km = _kernel_manager(self.spec_dir)
        setup = nbformat.v4.new_code_cell(_SNAPSHOT if fresh else _RESET)
        run = nbformat.v4.new_notebook(cells=[setup, *nb.cells], metadata=nb.metadata)
        client = NotebookClient(
            run,
            km=self.km,
            timeout=CELL_TIMEOUT_S,
            resources={"metadata": {"path": str(NB_DIR)}},
        )
        try:
            # The env reaches the kernel when it starts; CellExecutionError on a failing cell.
            client.execute(env=dict(os.environ, **{SMALL_ENV: "1"}))
        except BaseException:
            self.shutdown()  # the next notebook gets a fresh kernel
            raise
        finally:
            if client.kc is not None:
                client.kc.stop_channels()

    def shutdown(self) -> None:
        if self.km is not None and self.km.has_kernel:
            from jupyter_core.utils import run_sync

            run_sync(self.km.shutdown_kernel)(now=True)
        self.km = None


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    k = _Kernel(tmp_path_factory.mktemp("kernelspec"))
    yield k
    k.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_top_to_bottom(path, kernel):
    t0 = time.perf_counter()
    kernel.execute(_read(path))
    print(f"{path.name}: {time.perf_counter() - t0:.1f} s")


def test_a_notebook_sees_nothing_of_the_one_before_in_the_shared_kernel(kernel):
    first = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "import jax, matplotlib.pyplot as plt\n"
                "LEFT_OVER = 1\n"
                'jax.config.update("jax_enable_x64", not jax.config.jax_enable_x64)\n'
                "plt.figure()"
            )
        ]
    )
    second = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "import jax, os, sys, matplotlib.pyplot as plt\n"
                'assert "LEFT_OVER" not in globals()\n'
                "assert plt.get_fignums() == []\n"
                f'assert os.environ["{SMALL_ENV}"] == "1"\n'
                'started = sys.modules["_gated_jax_test_kernel"].config["jax_enable_x64"]\n'
                "print(jax.config.jax_enable_x64 == started)"
            )
        ]
    )
    kernel.execute(first)
    kernel.execute(second)
    # x64 is back to the kernel's setting at its start (the first notebook flipped it).
    printed = [o for o in second.cells[0].outputs if o.get("name") == "stdout"]
    assert printed and printed[0]["text"].strip() == "True"
