"""Bad input on the command line: exit status 2, one line on stderr naming the option, no work.

Each case is one category of mistake a user can type. Every case must be rejected before any
computation (so the whole file runs in seconds) and must leave no output folder behind.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from gated_jax.cli import main


@dataclasses.dataclass(frozen=True)
class BadCommand:
    id: str
    argv: tuple[str, ...]
    needle: str  # what the one-line message must contain (the option and/or the value)


HUGE = str(10**23)

CASES = [
    # verify
    BadCommand("verify-seed-negative", ("verify", "--seed", "-1"), "-1"),
    BadCommand("verify-seed-huge", ("verify", "--seed", HUGE), HUGE),
    BadCommand("verify-seed-not-int", ("verify", "--seed", "abc"), "abc"),
    BadCommand("verify-seed-float", ("verify", "--seed", "1.5"), "1.5"),
    # report
    BadCommand("report-seed-negative", ("report", "--quick", "--seed", "-3"), "-3"),
    BadCommand("report-seed-huge", ("report", "--quick", "--seed", HUGE), HUGE),
    BadCommand("report-out-under-a-file", ("report", "--quick", "--out", "{file}/sub"), "{file}"),
    BadCommand("report-out-is-a-file", ("report", "--quick", "--out", "{file}"), "{file}"),
    BadCommand("report-out-empty", ("report", "--quick", "--out", ""), "--out"),
    # bench
    BadCommand("bench-only-unknown", ("bench", "--only", "nope"), "nope"),
    BadCommand("bench-only-empty", ("bench", "--only"), "--only"),
    # flow: sizes
    BadCommand("flow-hidden-zero", ("flow", "--quick", "--hidden", "0"), "--hidden"),
    BadCommand("flow-inputs-negative", ("flow", "--quick", "--inputs", "-2"), "--inputs"),
    BadCommand("flow-seeds-zero", ("flow", "--quick", "--seeds", "0"), "--seeds"),
    BadCommand("flow-lengths-zero", ("flow", "--quick", "--lengths", "0"), "lengths"),
    BadCommand("flow-lengths-not-int", ("flow", "--quick", "--lengths", "8,x"), "--lengths"),
    BadCommand("flow-lengths-empty", ("flow", "--quick", "--lengths", ","), "--lengths"),
    BadCommand("flow-chunk-zero", ("flow", "--quick", "--chunk-size", "0"), "--chunk-size"),
    BadCommand("flow-worst-steps-zero", ("flow", "--quick", "--worst-steps", "0"), "worst"),
    BadCommand("flow-learn-seeds-zero", ("flow", "--quick", "--learn-seeds", "0"), "--learn-seeds"),
    # flow: sizes too large for memory are refused up front with the bytes needed
    BadCommand("flow-hidden-huge", ("flow", "--quick", "--hidden", "1000000"), "--hidden"),
    BadCommand("flow-lengths-huge", ("flow", "--quick", "--lengths", "100000000000"), "lengths"),
    BadCommand("flow-seeds-huge", ("flow", "--quick", "--seeds", "1000000000000"), "--seeds"),
    # flow: values
    BadCommand("flow-wz-nan", ("flow", "--quick", "--wz-norms", "nan"), "wz"),
    BadCommand("flow-wz-inf", ("flow", "--quick", "--wz-norms", "1,inf"), "wz"),
    BadCommand("flow-gate-bias-nan", ("flow", "--quick", "--gate-biases", "nan"), "gate"),
    BadCommand("flow-norm-unknown", ("flow", "--quick", "--norm", "frobenius"), "frobenius"),
    BadCommand("flow-parts-unknown", ("flow", "--quick", "--parts", "bounds,nope"), "nope"),
    BadCommand("flow-cells-unknown", ("flow", "--quick", "--cells", "gated,lstmx"), "lstmx"),
    BadCommand("flow-out-is-a-file", ("flow", "--quick", "--out", "{file}"), "{file}"),
    # shape --from-*
    BadCommand(
        "shape-from-torch-unclosed", ("shape", "9", "--from-torch", "Conv1d(4, 4"), "--from-torch"
    ),
    BadCommand(
        "shape-from-torch-code", ("shape", "9", "--from-torch", "Conv1d(n, 4, 3)"), "Conv1d"
    ),
    BadCommand("shape-from-keras-rank", ("shape", "9", "--from-keras", "Conv2D(8, 3)"), "input"),
    BadCommand(
        "shape-from-onnx-positional", ("shape", "9", "--from-onnx", "Conv([3])"), "--from-onnx"
    ),
    BadCommand(
        "shape-from-torch-groups",
        ("shape", "32x32", "--from-torch", "Conv2d(3, 8, 3, groups=2)"),
        "in_channels (=3) divisible by groups (=2)",
    ),
    BadCommand(
        "shape-from-torch-out-groups",
        ("shape", "9", "--from-torch", "ConvTranspose1d(4, 6, 3, groups=4)"),
        "out_channels (=6) divisible by groups (=4)",
    ),
    BadCommand(
        "shape-from-onnx-kernel-int",
        ("shape", "9", "--from-onnx", "Conv(kernel_shape=3)"),
        "kernel_shape given as a list",
    ),
    BadCommand("shape-no-kernel", ("shape", "9"), "--kernel"),
    # top level
    BadCommand("unknown-command", ("frobnicate",), "frobnicate"),
    BadCommand("unknown-option", ("verify", "--sed", "1"), "--sed"),
]


@pytest.fixture
def afile(tmp_path):
    path = tmp_path / "afile"
    path.write_text("")
    return str(path)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_command_exits_2_with_one_line(case, afile, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{file}", afile) for a in case.argv]
    if "--out" not in argv and case.argv[0] in ("report", "flow"):
        argv += ["--out", str(tmp_path / "out")]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert case.needle.replace("{file}", afile) in err, err
    assert not (tmp_path / "out").exists()  # rejected before any work


def test_unwritable_out_is_one_line(tmp_path, capsys):
    if os.geteuid() == 0:  # root writes anywhere: use a path under /proc, which nobody can create
        target = "/proc/gated_jax_no_such_dir/out"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = str(locked / "out")
    assert main(["report", "--quick", "--out", target]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`--out`" in err and target in err
