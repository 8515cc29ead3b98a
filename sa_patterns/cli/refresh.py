"""``sa-patterns refresh [--concurrently]``: refresh every materialized view in dependency order
(for cron jobs, deploy hooks and CI fixtures).

Views with a refresh function (every materialized view model's, see :mod:`sa_patterns.views`)
are refreshed through it, so the app role may run this. A failure prints what failed and what
to do, in two lines; ``--debug`` prints the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session

from ..database import normalise_url
from ..errors import ConfigurationError, SAPatternsError
from ._failure import DEBUG, explain, first_line

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    try:
        return _refresh(args)
    except (SQLAlchemyError, SAPatternsError) as exc:
        if args.debug:
            raise
        what, todo = _explain(exc, args)
        print(f"sa-patterns refresh: {what}", file=sys.stderr)
        print(f"  {todo}", file=sys.stderr)
        return 2 if isinstance(exc, SAPatternsError) else 1


def _url(args: argparse.Namespace) -> URL:
    raw: str = args.url or os.environ.get("DATABASE_URL", "")
    if not raw:
        raise ConfigurationError("No database: pass --url or set DATABASE_URL.")
    return normalise_url(raw)


def _refresh(args: argparse.Namespace) -> int:
    from ..views import refresh_all

    engine = create_engine(_url(args))
    try:
        with Session(engine) as session, session.begin():
            names = refresh_all(session, concurrently=args.concurrently, schemas=args.schema or None)
    finally:
        engine.dispose()
    mode = "concurrently " if args.concurrently else ""
    for name in names:
        print(f"refreshed {mode}{name}")
    if not names:
        print("no materialized views found")
    return 0


def _where(args: argparse.Namespace) -> str:
    try:
        return _url(args).render_as_string(hide_password=True)
    except (ArgumentError, SAPatternsError, ValueError):
        return "the database"


def _explain(exc: BaseException, args: argparse.Namespace) -> tuple[str, str]:
    """What went wrong and what to do about it, one line each."""
    if isinstance(exc, SAPatternsError):
        return str(exc), f"nothing was refreshed {DEBUG}"
    if isinstance(exc, SQLAlchemyError) and (told := explain(exc, _where(args))) is not None:
        return told
    return (
        f"the refresh failed: {first_line(exc)}",
        f"nothing was refreshed (one transaction); fix the cause and run it again {DEBUG}",
    )


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "refresh",
        help="refresh materialized views in dependency order (pg_depend)",
        description="Refresh every materialized view in the search path (or --schema), each "
        "after the materialized views it reads, in one transaction; through each view's refresh "
        "function where it has one, so the app role may run it.",
    )
    parser.add_argument(
        "--concurrently",
        action="store_true",
        help="REFRESH ... CONCURRENTLY (readers are not blocked; every view needs a unique index)",
    )
    parser.add_argument("--schema", action="append", help="only this schema (repeatable)")
    parser.add_argument("--url", help="database URL (default: DATABASE_URL)")
    parser.add_argument("--debug", action="store_true", help="on failure, show the traceback")
    parser.set_defaults(func=_run)
