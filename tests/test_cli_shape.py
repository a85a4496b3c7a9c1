"""``gated-jax shape``: seed 1.1(a) on the command line, options, one-line errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from gated_jax.cli import main


def run_cli(capsys, *argv):
    code = main(["shape", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_seed_1_1a(capsys):
    code, out, err = run_cli(capsys, "10x11", "--kernel", "3", "--stride", "2")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "4 x 5"
    assert "floor((10 + 0 + 0 - 3) / 2) + 1 = floor(3.5) + 1 = 4" in out
    assert "(10 - 3)/2 + 1 = 4.5 -> 4" in out


@pytest.mark.parametrize(
    "argv, lhs, rhs, strides, padding, kw",
    [
        (
            ["9x8", "-k", "3x2", "-p", "SAME", "-s", "2x1"],
            (1, 1, 9, 8),
            (1, 1, 3, 2),
            (2, 1),
            "SAME",
            {},
        ),
        (
            ["9x8", "-k", "3", "-p", "1,2x0"],
            (1, 1, 9, 8),
            (1, 1, 3, 3),
            (1, 1),
            ((1, 2), (0, 0)),
            {},
        ),
        (
            ["9", "-k", "3", "-p", "2", "-d", "3"],
            (1, 1, 9),
            (1, 1, 3),
            (1,),
            ((2, 2),),
            {"rhs_dilation": (3,)},
        ),
        (
            ["9", "-k", "3", "-p", "0,1", "--input-dilation", "2"],
            (1, 1, 9),
            (1, 1, 3),
            (1,),
            ((0, 1),),
            {"lhs_dilation": (2,)},
        ),
        (
            ["9x8", "-k", "3", "-c", "4", "-f", "6", "-g", "2", "-p", "same_lower"],
            (1, 4, 9, 8),
            (6, 2, 3, 3),
            (1, 1),
            "SAME_LOWER",
            {"feature_group_count": 2},
        ),
    ],
)
def test_options_agree_with_eval_shape(capsys, argv, lhs, rhs, strides, padding, kw):
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0
    expected = jax.eval_shape(
        lambda x, w: lax.conv_general_dilated(x, w, strides, padding, **kw),
        jax.ShapeDtypeStruct(lhs, jnp.float32),
        jax.ShapeDtypeStruct(rhs, jnp.float32),
    ).shape
    first = tuple(int(v) for v in out.splitlines()[0].split(" x "))
    with_filters = "-f" in argv
    assert first == (tuple(expected[1:]) if with_filters else tuple(expected[2:]))


def test_transposed(capsys):
    code, out, _ = run_cli(capsys, "7", "-k", "3", "-s", "2", "-p", "VALID", "--transposed")
    expected = jax.eval_shape(
        lambda x, w: lax.conv_transpose(x, w, (2,), "VALID"),
        jax.ShapeDtypeStruct((1, 7, 1), jnp.float32),
        jax.ShapeDtypeStruct((3, 1, 1), jnp.float32),
    ).shape
    assert code == 0 and out.splitlines()[0] == str(expected[1])


@pytest.mark.parametrize(
    "argv, word",
    [
        (["10x11", "--kernel", "3", "--stride", "0"], "stride"),
        (["10x11", "--kernel", "0"], "kernel"),
        (["10x11", "--kernel", "3", "--padding", "foo"], "--padding"),
        (["10x11", "--kernel", "3", "--padding", "1,2,3"], "--padding"),
        (["10xa", "--kernel", "3"], "input"),
        (["10x11", "--kernel", "3x3x3"], "kernel_size"),
        (["10x11", "--kernel", "3", "--padding", "-9"], "padding"),
        (["10x11", "--kernel", "3", "--channels", "3", "--groups", "2"], "channels"),
        (["10x11", "--kernel", "3", "--filters", "two"], "--filters"),
        (["10x11", "--kernel", "3", "--padding", "SAME", "--input-dilation", "2"], "padding"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv, word):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("gated-jax shape: error:") and word in err


def test_missing_kernel_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["shape", "10x11"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--kernel" in err


def test_installed_console_script():
    exe = Path(sys.executable).with_name("gated-jax")
    cmd = [str(exe)] if exe.exists() else [shutil.which("gated-jax") or "gated-jax"]
    ok = subprocess.run(
        [*cmd, "shape", "10x11", "--kernel", "3", "--stride", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0 and ok.stdout.splitlines()[0] == "4 x 5"
    bad = subprocess.run(
        [*cmd, "shape", "10x11", "--kernel", "3", "--stride", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "stride" in bad.stderr


@pytest.mark.parametrize(
    "argv, n",
    [
        (["64x64", "-k", "3", "-s", "2", "--target", "32"], 2),
        (["10", "-k", "3", "-s", "2", "-d", "2", "--target", "7"], 1),
        (["9x8", "-k", "4x2", "--target", "16x16", "--input-dilation", "2"], 2),
    ],
)
def test_target_prints_the_padding_that_gives_it(capsys, argv, n):
    code, out, err = run_cli(capsys, *argv)
    assert code == 0 and err == ""
    first = out.splitlines()[0]
    assert first.startswith("padding ")
    pads = [tuple(int(v) for v in p.split(",")) for p in first.split()[1].split("x")]
    opt = dict(zip(argv[1::2], argv[2::2], strict=False))
    ins = tuple(int(v) for v in argv[0].split("x"))

    def per_dim(key, default="1"):
        vals = tuple(int(v) for v in opt.get(key, default).split("x"))
        return vals * n if len(vals) == 1 else vals

    k, s, d, ld = per_dim("-k"), per_dim("-s"), per_dim("-d"), per_dim("--input-dilation")
    expected = jax.eval_shape(
        lambda x, w: lax.conv_general_dilated(x, w, s, pads, lhs_dilation=ld, rhs_dilation=d),
        jax.ShapeDtypeStruct((1, 1, *ins), jnp.float32),
        jax.ShapeDtypeStruct((1, 1, *k), jnp.float32),
    ).shape
    assert expected[2:] == per_dim("--target")
    assert " x ".join(map(str, expected[2:])) in out.splitlines()


def test_target_transposed_is_the_conv_transpose_padding(capsys):
    code, out, _ = run_cli(capsys, "32", "-k", "3", "-s", "2", "--target", "65", "--transposed")
    assert code == 0
    lo, hi = (int(v) for v in out.split()[1].split(","))
    shape = jax.eval_shape(
        lambda x, w: lax.conv_transpose(x, w, (2,), [(lo, hi)]),
        jax.ShapeDtypeStruct((1, 32, 1), jnp.float32),
        jax.ShapeDtypeStruct((3, 1, 1), jnp.float32),
    ).shape
    assert shape[1] == 65 and "65" in out.splitlines()


def test_unreachable_target_exits_2_naming_the_option(capsys):
    code, out, err = run_cli(capsys, "10", "-k", "3", "--target", "4")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("gated-jax shape: error: `--target` (='4') must be reachable")
