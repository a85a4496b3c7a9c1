"""The package skeleton: registries, harness, command line plumbing."""

import subprocess
import sys

import numpy as np
import pytest

import gated_jax
from gated_jax import bench, report, verification
from gated_jax.bench import harness
from gated_jax.cli import build_parser, main


def test_version_and_typed_marker():
    from importlib import resources

    assert gated_jax.__version__.count(".") == 2
    assert resources.files("gated_jax").joinpath("py.typed").is_file()


def test_max_rel_error_is_scale_free_and_detects_shape_mismatch():
    e = np.array([1e6, -2e6])
    assert verification.max_rel_error(e * (1 + 1e-12), e) == pytest.approx(1e-12, rel=1e-3)
    assert verification.max_rel_error({"a": e}, {"a": e}) == 0.0
    assert verification.max_rel_error(np.zeros(3), np.zeros(2)) == float("inf")


def test_check_ok_uses_tolerance():
    good = verification.Check("c", "f", "r", 1e-12, 3)
    bad = verification.Check("c", "f", "r", 1e-6, 3)
    assert good.ok and not bad.ok
    table = verification.format_table([good, bad])
    assert "**NO**" in table and table.count("\n") == 3


def test_table_markdown_has_header_rows_and_notes():
    t = harness.Table("T", ["a", "b"], [[1, 2.5], ["x", 123456.0]], notes=["n1"])
    md = t.to_markdown()
    assert md.splitlines()[0] == "### T"
    assert "| 1 | 2.5 |" in md and "| x | 123456 |" in md and "- n1" in md


def test_time_interleaved_and_ratios():
    calls = {"a": 0, "b": 0}

    def make(name):
        def f():
            calls[name] += 1
            return np.zeros(1)

        return f

    times = harness.time_interleaved({"a": make("a"), "b": make("b")}, rounds=3, warmup=1)
    assert calls == {"a": 4, "b": 4}
    assert set(harness.ratios(times, "a")) == {"a", "b"}
    assert harness.ratios(times, "a")["a"] == 1.0


def test_compile_stats_reports_memory():
    import jax.numpy as jnp

    stats = harness.compile_stats(lambda x: jnp.sin(x) @ x.T, jnp.ones((64, 64)))
    assert stats.compile_s > 0
    assert stats.argument_bytes == 64 * 64 * 8


def test_registries_are_ordered_and_complete():
    for mods, needed in (
        (bench.suites(), ("run", "TITLE")),
        (report.sections(), ("section", "TITLE")),
        (verification._suites(), ("checks",)),
    ):
        orders = [getattr(m, "ORDER", 100) for m in mods]
        assert orders == sorted(orders)
        for m in mods:
            for attr in needed:
                assert hasattr(m, attr), (m.__name__, attr)


def test_cli_lists_commands_and_bad_input_is_one_line(capsys):
    parser = build_parser()
    assert {"verify", "report", "bench"} <= set(parser._subparsers._group_actions[0].choices)
    assert main(["bench", "--only", "no-such-suite"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-such-suite" in err
    with pytest.raises(SystemExit) as e:  # --only with no names is an error, not "run all"
        main(["bench", "--only"])
    assert e.value.code == 2


def test_cli_runs_as_module_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "gated_jax.cli", "no-such-command"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_max_rel_error_never_matches_nan_or_inf():
    assert verification.max_rel_error(np.array([np.nan]), np.array([1.0])) == float("inf")
    assert verification.max_rel_error(np.array([1.0]), np.array([np.inf])) == float("inf")
    assert not verification.Check("c", "f", "r", float("inf"), 1).ok


def test_core_import_is_light_and_lazy_names_resolve():
    code = (
        "import sys, gated_jax as g; "
        "light = not {'flax', 'optax', 'matplotlib'} & set(sys.modules); "
        "ok = all(hasattr(g, n) for n in g.__all__); print(light, ok)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_imports_flow_one_way_through_the_layers():
    import ast
    from pathlib import Path

    root = Path(gated_jax.__file__).parent
    layer = {"shapes": 0, "conv": 0, "cell": 0, "_cell_reference": 0, "_plugins": 0}
    layer.update({"_validate": 0})
    layer.update({"nn": 1, "nnx": 1, "_rnn_common": 1, "diagrams": 1, "experiments": 2})
    layer.update({"verification": 3, "bench": 3, "report": 4, "cli": 5})
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).with_suffix("")
        own = layer.get(rel.parts[0], None)
        if own is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] != "gated_jax" or len(parts) < 2:
                    continue
                target = layer.get(parts[1])
                assert target is None or target <= own, f"{rel} imports {name}"
