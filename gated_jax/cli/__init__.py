"""The ``gated-jax`` command line.

Each sub-command lives in its own module of this package with ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Bad input exits with status 2 and one line
on stderr, never a traceback (a ``ValueError`` from the library names the bad argument; any
other exception is a bug and keeps its traceback).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

COMMANDS = ("shape", "verify", "flow", "report", "bench")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gated-jax",
        description="Exact, fast and inspectable mechanics of CNNs and RNNs in JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        modname = f"{__name__}.{name}_cmd"
        if importlib.util.find_spec(modname) is None:
            continue
        mod = importlib.import_module(modname)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except ValueError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"gated-jax {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
