"""The ``gated-jax`` command line.

Each sub-command lives in its own module of this package with ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``, listed once in :data:`COMMANDS`.

Bad input exits with status 2 and one line on stderr, never a traceback: a ``ValueError`` or
``TypeError`` from the library names the bad argument; an ``OSError`` (a path that cannot be
written), ``OverflowError`` or ``MemoryError`` (a number too large) is reported the same way.
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from gated_jax import __version__
from gated_jax.cli import bench_cmd, flow_cmd, report_cmd, shape_cmd, summary_cmd, verify_cmd

# (name, module): the sub-commands in the order `gated-jax --help` lists them. The modules
# import the library only inside `run`, so `gated-jax shape` stays light.
COMMANDS = (
    ("shape", shape_cmd),
    ("summary", summary_cmd),
    ("verify", verify_cmd),
    ("flow", flow_cmd),
    ("report", report_cmd),
    ("bench", bench_cmd),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gated-jax",
        description="Exact, fast and inspectable mechanics of CNNs and RNNs in JAX.",
    )
    parser.add_argument(
        "--version", action="version", version=f"gated-jax {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, mod in COMMANDS:
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, OSError, OverflowError, MemoryError) as e:
        text = str(e).strip()
        if isinstance(e, OSError) and e.filename is not None:
            text = f"{e.strerror or type(e).__name__}: {e.filename!r}"
        elif isinstance(e, (OverflowError, MemoryError)):
            text = f"a number is too large ({type(e).__name__}: {text or 'out of memory'})"
        msg = text.splitlines()[0] if text else type(e).__name__
        print(f"gated-jax {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
