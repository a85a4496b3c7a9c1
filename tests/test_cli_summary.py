"""``gated-jax summary module:attr --input SHAPE``: the table, the model kinds, one-line errors."""

from __future__ import annotations

import pytest

from gated_jax.cli import main

MODELS = """
import flax.linen as nn
from flax import nnx
from jax import lax


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), strides=2, padding="VALID", name="conv")(x)
        return nn.Dense(3, name="head")(x.reshape(x.shape[0], -1))


net = Net()


class Small(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 2, (3, 3), strides=2, padding="SAME", rngs=rngs)

    def __call__(self, x):
        return self.conv(x)


def pool(x):
    return lax.reduce_window(x, 0.0, lax.add, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")
"""


@pytest.fixture
def models(tmp_path, monkeypatch):
    (tmp_path / "gj_cli_summary_models.py").write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return "gj_cli_summary_models"


def test_summary_of_a_linen_instance(models, capsys):
    assert main(["summary", f"{models}:net", "--input", "1x9x9x1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "input 1x9x9x1"
    conv = next(line for line in lines if line.startswith("conv "))
    assert conv.split()[:4] == ["conv", "Conv", "1x4x4x4", "40"]
    assert conv.split()[-3:] == ["3x3", "2x2", "0,0"]
    assert any(line.startswith("head ") and " 195 " in line for line in lines)


def test_summary_of_an_nnx_class_and_a_function(models, capsys):
    assert main(["summary", f"{models}:Small", "--input", "1x8x8x1", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "asymmetric SAME padding (0, 1)" in out and "1x4x4x2" in out
    assert main(["summary", f"{models}:pool", "--input", "1x10x10x1", "--no-costs"]) == 0
    out = capsys.readouterr().out
    assert "reduce_window_sum_0" in out and "covered by no window" in out
    row = next(line for line in out.splitlines() if line.startswith("reduce_window_sum_0"))
    assert row.split()[4:7] == ["-", "-", "-"]  # no costs


@pytest.mark.parametrize(
    "argv, named",
    [
        (["nomodule_gj_xyz:f", "--input", "1x8"], "`model`"),
        (["no_colon", "--input", "1x8"], "`model`"),
        (["{m}:missing", "--input", "1x8"], "`model`"),
        (["{m}:pool", "--input", "1x0x4x1"], "`--input`"),
        (["{m}:pool", "--input", "1xax4"], "`--input`"),
        (["{m}:pool", "--input", "1x8x8x1", "--dtype", "int8"], "`--dtype`"),
        (["{m}:pool", "--input", "1x8x8x1", "--wrt", "3"], "`--wrt`"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(models, capsys, argv, named):
    argv = [a.format(m=models) for a in argv]
    assert main(["summary", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err, err
