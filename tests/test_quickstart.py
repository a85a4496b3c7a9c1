"""The README's quickstart runs as written and does what it says: the shape it prints is JAX's,
and the classifier it trains learns its task."""

import contextlib
import io
import re
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import lax

README = Path(__file__).resolve().parents[1] / "README.md"


def _quickstart() -> str:
    text = README.read_text()
    section = text.split("<!-- site:quickstart -->")[1].split("<!-- /site:quickstart -->")[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_the_readme_quickstart_runs_and_learns():
    out = io.StringIO()
    with jax.enable_x64(False), contextlib.redirect_stdout(out):
        exec(compile(_quickstart(), "README quickstart", "exec"), {"__name__": "quickstart"})
    lines = out.getvalue().splitlines()
    x = jnp.zeros((1, 28, 28, 3))
    w = jnp.zeros((3, 3, 3, 8))
    expected = lax.conv_general_dilated(
        x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    ).shape
    assert lines[0] == str(tuple(expected))
    assert any("asymmetric SAME" in line for line in lines)
    loss, accuracy = map(float, re.fullmatch(r"loss (\S+), accuracy (\S+)", lines[-1]).groups())
    assert accuracy >= 0.9 and loss < 0.3
