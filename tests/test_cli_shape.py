"""``gated-jax shape``: a worked example on the command line, options, one-line errors."""

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


def test_missing_kernel_is_one_line(capsys):
    assert main(["shape", "10x11"]) == 2
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
    # a bad value's exit 2 and one line through a real process: test_foundation's
    # `python -m gated_jax.cli` run; in process, tests/test_fuzz_cli.py


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


# --from-torch / --from-keras / --from-onnx: the printed JAX and Flax code, run


FROM_CASES = [
    ("torch", "7x6", "ConvTranspose2d(2, 3, (3, 2), stride=2, padding=1, output_padding=1)"),
    ("torch", "9", "nn.Conv1d(2, 4, 3, stride=2, padding=1, padding_mode='circular', groups=2)"),
    ("torch", "5", "ConvTranspose1d(4, 2, 3, stride=3, groups=2, dilation=2)"),
    ("keras", "9x8", "Conv2D(3, 3, strides=2, padding='same', dilation_rate=1)"),
    ("keras", "5", "layers.Conv1DTranspose(3, 4, strides=2, padding='same', output_padding=1)"),
    ("onnx", "6x5", "ConvTranspose(kernel_shape=[3, 3], strides=[2, 2], output_shape=[12, 11])"),
    ("onnx", "9", "Conv(kernel_shape=[4], auto_pad='SAME_LOWER', strides=[2])"),
]


@pytest.mark.parametrize("framework, size, layer", FROM_CASES)
def test_from_framework_prints_code_that_equals_the_port(capsys, framework, size, layer):
    import ast

    import flax.linen as nn
    import numpy as np

    import gated_jax

    code, out, err = run_cli(capsys, size, f"--from-{framework}", layer)
    assert code == 0 and err == "", err
    lines = out.splitlines()
    spatial = tuple(int(v) for v in size.split("x"))
    n = len(spatial)
    call = ast.parse(layer.split(".")[-1] if "." in layer.split("(")[0] else layer).body[0].value
    args = [ast.literal_eval(a) for a in call.args]
    kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    name = call.func.id if isinstance(call.func, ast.Name) else call.func.attr
    rng = np.random.default_rng(0)
    transposed = "Transpose" in name
    if framework == "torch":
        cin, cout = args[0], args[1]
        k = args[2] if isinstance(args[2], tuple) else (args[2],) * n
        g = kw.get("groups", 1)
        w = rng.standard_normal((cin, cout // g, *k) if transposed else (cout, cin // g, *k))
        fn = gated_jax.torch_conv_transpose if transposed else gated_jax.torch_conv
        port = fn(n, args[2], **{a: v for a, v in kw.items()})
        env = {"weight": w}
    elif framework == "keras":
        cin, cout = 2, args[0]
        k = args[1] if isinstance(args[1], tuple) else (args[1],) * n
        w = rng.standard_normal((*k, cout, cin) if transposed else (*k, cin, cout))
        fn = gated_jax.keras_conv_transpose if transposed else gated_jax.keras_conv
        port = fn(n, args[1], **kw)
        env = {"keras_kernel": w}
    else:
        cin = cout = 2
        k = tuple(kw["kernel_shape"])
        w = rng.standard_normal((cin, cout, *k))
        fn = gated_jax.onnx_conv_transpose if transposed else gated_jax.onnx_conv
        port = fn(**kw)
        env = {"W": w}
    x_first = rng.standard_normal((1, cin, *spatial))
    x_last = np.moveaxis(x_first, 1, -1)
    want = np.asarray(port(x_last if framework == "keras" else x_first, w))
    if framework != "keras":
        want = np.moveaxis(want, 1, -1)
    assert lines[0] == " x ".join(map(str, want.shape[1:-1]))
    env.update(x=x_last, lax=lax, jnp=jnp, gated_jax=gated_jax, nn=nn)
    for line in lines:
        if line.startswith(("kernel = ", "x = ", "y = ")):
            exec(line.split("  #")[0], env)
    np.testing.assert_allclose(np.asarray(env["y"]), want, rtol=1e-12, atol=1e-12)
    layer_line = next((ln for ln in lines if ln.startswith("layer = ")), None)
    if layer_line is not None:
        exec(layer_line.split("  #")[0].replace("features=C_out", f"features={cout}"), env)
        params = {"kernel": env["kernel"], "bias": np.zeros(cout)}
        y = env["layer"].apply({"params": params}, env["x"])
        np.testing.assert_allclose(np.asarray(y), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "argv",
    [
        ["12x9", "-k", "3x2", "-s", "2", "-d", "2x1", "--target", "25x18", "--transposed"],
        ["7", "-k", "4", "-s", "3", "--target", "20", "--transposed"],
        ["12x9", "-k", "3x2", "-s", "2", "-d", "2x1", "--target", "6x5"],
    ],
)
def test_target_both_directions_round_trip(capsys, argv):
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0
    pads = [tuple(int(v) for v in p.split(",")) for p in out.split()[1].split("x")]
    opt = dict(zip(argv[1::2], argv[2::2], strict=False))
    ins = tuple(int(v) for v in argv[0].split("x"))
    n = len(ins)

    def per_dim(key, default="1"):
        vals = tuple(int(v) for v in opt.get(key, default).split("x"))
        return vals * n if len(vals) == 1 else vals

    k, s, d = per_dim("-k"), per_dim("-s"), per_dim("-d")
    if "--transposed" in argv:

        def f(x, w):
            return lax.conv_transpose(
                x, w, s, pads, d, ("NC" + "HW"[:n], "OI" + "HW"[:n], "NC" + "HW"[:n])
            )
    else:

        def f(x, w):
            return lax.conv_general_dilated(x, w, s, pads, rhs_dilation=d)

    shape = jax.eval_shape(
        f,
        jax.ShapeDtypeStruct((1, 1, *ins), jnp.float32),
        jax.ShapeDtypeStruct((1, 1, *k), jnp.float32),
    ).shape
    assert shape[2:] == per_dim("--target")
