"""The ``sa-patterns`` command. Each module of this package adds one subcommand through
``add_parser(subparsers)`` and sets ``func``; modules are found by name, nothing is hard-wired."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from .. import __version__
from ..errors import SAPatternsError
from ._failure import DEBUG, explain, first_line

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sa-patterns", description="Production data patterns for SQLAlchemy on PostgreSQL."
    )
    parser.add_argument("--version", action="version", version=f"sa-patterns {__version__}")
    parser.add_argument(
        "--debug", dest="global_debug", action="store_true", help="on failure, show the traceback"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = bool(args.global_debug or getattr(args, "debug", False))
    if hasattr(args, "debug"):
        args.debug = debug  # commands that explain their own failures see the global flag too
    try:
        return int(args.func(args) or 0)
    except SAPatternsError as exc:
        if debug:
            raise
        print(f"sa-patterns: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        if debug:
            raise
        url = getattr(args, "url", None) or os.environ.get("DATABASE_URL", "") or "the database"
        where = _hide_password(url)
        what, todo = explain(exc, where) or (first_line(exc), f"fix the cause and run it again {DEBUG}")
        print(f"sa-patterns {args.command}: {what}", file=sys.stderr)
        print(f"  {todo}", file=sys.stderr)
        return 1


def _hide_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "the database"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
