"""The command line's help: every option of every sub-command says what it does, in the user's
words (the coursework's vocabulary only in ``gated-jax report``), and ``--version`` answers."""

from __future__ import annotations

import argparse
import re

import pytest

import gated_jax
from gated_jax.cli import build_parser, main

JARGON = re.compile(r"homework|seed \d\.|question", re.IGNORECASE)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _texts(parser: argparse.ArgumentParser) -> list[str]:
    """The sub-command's description and every action's help."""
    return [parser.description or ""] + [a.help or "" for a in parser._actions]


def test_every_option_of_every_subcommand_has_help():
    parser = build_parser()
    missing = []
    for name, sub in {"": parser, **_subcommands(parser)}.items():
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"gated-jax {name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, "options without help text: " + ", ".join(missing)


def test_no_coursework_words_outside_the_report_command():
    subs = _subcommands(build_parser())
    assert set(subs) >= {"shape", "verify", "flow", "bench", "report"}
    found = [
        (name, text)
        for name, sub in subs.items()
        if name != "report"
        for text in _texts(sub)
        if JARGON.search(text)
    ]
    assert not found, found
    assert JARGON.search(" ".join(_texts(subs["report"])))  # the check can see the words


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"gated-jax {gated_jax.__version__}"


def test_bench_prints_each_table_as_measured_with_a_progress_bar(monkeypatch, capsys):
    from gated_jax import lab
    from gated_jax.lab._harness import Table

    calls = []

    def fake(quick=False, only=None):
        calls.append((quick, tuple(only)))
        return [Table(f"table {only[0]}", ["quick"], [[quick]])]

    monkeypatch.setattr(lab, "bench_names", lambda: ["a", "b", "c"])
    monkeypatch.setattr(lab, "run_benchmarks", fake)
    assert main(["bench", "--quick", "--only", "c", "a"]) == 0
    out, err = capsys.readouterr()
    assert calls == [(True, ("a",)), (True, ("c",))]  # one table at a time, in listed order
    assert out.index("### table a") < out.index("### table c") and "### table b" not in out
    assert "(a: measured in" in out and "| True |" in out
    assert "bench" in err and "2/2" in err  # the bar, on stderr
