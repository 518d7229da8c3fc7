"""The ``vislearn`` command line: one entry point, one subcommand per file in :mod:`vislearn.commands`.

Each module there defines ``register(subparsers)`` adding its parser with ``set_defaults(func=...)``.
Every error a user can cause prints one line (``vislearn: error: ...``) and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from vislearn.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    import vislearn
    import vislearn.commands as commands

    parser = argparse.ArgumentParser(prog="vislearn", description="Nine vision papers: train, evaluate, "
                                     "reproduce. Images are float RGB in [0, 1].")
    parser.add_argument("--version", action="version", version=f"vislearn {vislearn.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"vislearn.commands.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        print(f"vislearn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vislearn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
