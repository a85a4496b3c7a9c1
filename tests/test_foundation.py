"""The package skeleton: the capability list, harness, report, command line plumbing."""

import subprocess
import sys

import numpy as np
import pytest

import gated_jax
from gated_jax import lab
from gated_jax.cli import build_parser, main
from gated_jax.lab import _harness as harness
from gated_jax.testing import max_rel_error


def test_version_and_typed_marker():
    from importlib import resources

    assert gated_jax.__version__.count(".") == 2
    assert resources.files("gated_jax").joinpath("py.typed").is_file()


def test_max_rel_error_is_scale_free_and_detects_shape_mismatch():
    e = np.array([1e6, -2e6])
    assert max_rel_error(e * (1 + 1e-12), e) == pytest.approx(1e-12, rel=1e-3)
    assert max_rel_error({"a": e}, {"a": e}) == 0.0
    assert max_rel_error(np.zeros(3), np.zeros(2)) == float("inf")


def test_check_ok_uses_tolerance():
    good = lab.Check("c", "f", "r", 1e-12, 3)
    bad = lab.Check("c", "f", "r", 1e-6, 3)
    assert good.ok and not bad.ok
    table = lab.format_table([good, bad])
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


def test_every_capability_has_the_three_entry_points():
    names = [lab.name(c) for c in lab.CAPABILITIES]
    assert len(set(names)) == len(names)
    for cap in lab.CAPABILITIES:
        assert isinstance(cap.TITLE, str) and cap.TITLE, cap.__name__
        assert callable(cap.section), cap.__name__
        for entry in (cap.checks, cap.bench):
            assert entry is None or callable(entry), cap.__name__
    assert lab.bench_names() == [lab.name(c) for c in lab.CAPABILITIES if c.bench is not None]
    assert {"conv", "cell", "modules", "flow"} <= set(lab.bench_names())


def _fake_capability(label: str, *, checks: bool, bench: bool):
    import types

    mod = types.ModuleType(f"fake.{label}")
    mod.TITLE = f"Title {label}"
    mod.section = lambda ctx: f"body of {label}, seed {ctx.seed}"
    mod.checks = (lambda seed: [lab.Check(label, "f", "r", 0.0, seed + 1)]) if checks else None
    mod.bench = (lambda quick: harness.Table(f"bench {label}", ["q"], [[quick]])) if bench else None
    return mod


def test_report_runs_sections_in_listed_order_then_verification_and_benchmarks(tmp_path):
    caps = [
        _fake_capability("b", checks=True, bench=False),
        _fake_capability("a", checks=False, bench=True),
        _fake_capability("c", checks=True, bench=True),
    ]
    path = lab.write_report(tmp_path / "r", seed=4, progress=False, capabilities=caps)
    text = path.read_text()
    heads = [line for line in text.splitlines() if line.startswith("## ")]
    assert heads == [
        "## Title b",
        "## Title a",
        "## Title c",
        "## Verification: every closed form against JAX autodiff (float64)",
        "## Benchmarks",
    ]
    assert "body of a, seed 4" in text
    # rows of b and c only (a has no checks), each built with the report's seed
    assert text.count("| 5 |") == 2 and "All 2 formulas agree" in text
    assert "### bench a" in text and "### bench c" in text and "### bench b" not in text
    assert "| True |" in text  # the report runs benchmarks at quick size


def test_run_checks_and_benchmarks_follow_the_list_and_only():
    caps = [
        _fake_capability("x", checks=True, bench=True),
        _fake_capability("y", checks=True, bench=True),
    ]
    seen = []
    rows = lab.run_checks(seed=2, progress=seen.append, capabilities=caps)
    assert [r.capability for r in rows] == ["x", "y"] and seen == ["x", "y"]
    tables = lab.run_benchmarks(only=["y"], capabilities=caps)
    assert [t.title for t in tables] == ["bench y"]


def test_cli_lists_commands_and_bad_input_is_one_line(capsys):
    from gated_jax.cli import COMMANDS

    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert list(choices) == [name for name, _ in COMMANDS]
    assert {"shape", "verify", "flow", "report", "bench"} <= set(choices)
    assert main(["bench", "--only", "no-such-suite"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`--only` (='no-such-suite') must be one of conv" in err
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
    assert max_rel_error(np.array([np.nan]), np.array([1.0])) == float("inf")
    assert max_rel_error(np.array([1.0]), np.array([np.inf])) == float("inf")
    assert not lab.Check("c", "f", "r", float("inf"), 1).ok


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
    # Every module of the package has a layer; a new module must be placed here.
    core = ("shapes", "ports", "conv", "cell", "linalg", "testing", "_validate")
    layer = dict.fromkeys(core, 0)
    layer.update(
        {"nn": 1, "nnx": 1, "_rnn_common": 1, "diagrams": 1, "model_summary": 1, "experiments": 2}
    )
    layer.update({"lab": 3, "cli": 4, "__init__": 5})
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).with_suffix("")
        assert rel.parts[0] in layer, f"{rel}: place this module in a layer"
        own = layer[rel.parts[0]]
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
                assert parts[1] in layer, f"{rel} imports unknown {name}"
                assert layer[parts[1]] <= own, f"{rel} imports {name}"


def test_report_in_worker_processes_is_the_report_of_one_process(tmp_path):
    import os

    import _report_fakes as fake

    def report(jobs: int) -> tuple[list[str], int]:
        out = tmp_path / f"jobs{jobs}"
        text = lab.write_report(out, seed=3, progress=False, jobs=jobs, capabilities=[fake])
        lines = [ln for ln in text.read_text().splitlines() if "computed in" not in ln]
        return lines, int((out / "section.pid").read_text())

    one, pid_one = report(1)
    two, pid_two = report(2)
    assert pid_one == os.getpid() and pid_two != os.getpid()  # the section ran in a worker
    assert two == one
    text = "\n".join(two)
    assert "fake body, seed 3" in text and "| 4 |" in text and "| 5 |" in text
    assert "**1 of 2 formulas exceed the tolerance.**" in text
    bench = [ln for ln in two if ln.startswith("| True |")]  # quick sizes, run in this process
    assert bench == [f"| True | {os.getpid()} |"]


def test_report_full_runs_the_benchmarks_at_full_size(tmp_path):
    import _report_fakes as fake

    path = lab.write_report(tmp_path / "r", full=True, progress=False, capabilities=[fake])
    assert "| False |" in path.read_text()
    with pytest.raises(ValueError, match="`jobs` \\(=0\\)"):
        lab.write_report(tmp_path / "s", jobs=0, progress=False, capabilities=[fake])
