"""`sanawm` command line: one sub-command per module in this package.

Each sub-command module exposes `register(subparsers)`, which adds its parser and sets
`func` to a callable taking the parsed arguments. User mistakes (`UserInputError`, a file
that cannot be read) end the program with exit code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sanawm.errors import UserInputError

# Sub-command modules, in the order `sanawm --help` lists them.
COMMAND_MODULES = [
    "sanawm.cli.generate",
    "sanawm.cli.traj",
    "sanawm.cli.render",
    "sanawm.cli.eval",
    "sanawm.cli.train",
    "sanawm.cli.bench",
    "sanawm.cli.serve",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage; we want one line
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from sanawm import __version__

    parser = _Parser(prog="sanawm", description="SANA-WM world model.")
    parser.add_argument("--version", action="version", version=f"sanawm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except UserInputError as err:
        print(f"sanawm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # missing / unreadable files named by the user
        print(f"sanawm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sanawm {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
