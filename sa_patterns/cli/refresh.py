"""``sa-patterns refresh [--concurrently]``: refresh every materialized view in dependency order
(for cron jobs, deploy hooks and CI fixtures)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from ..database import normalise_url
from ..errors import ConfigurationError

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from ..views import refresh_all

    raw = args.url or os.environ.get("DATABASE_URL", "")
    if not raw:
        raise ConfigurationError("No database: pass --url or set DATABASE_URL.")
    engine = create_engine(normalise_url(raw))
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


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "refresh",
        help="refresh materialized views in dependency order (pg_depend)",
        description="Refresh every materialized view in the search path (or --schema), each "
        "after the materialized views it reads, in one transaction.",
    )
    parser.add_argument(
        "--concurrently",
        action="store_true",
        help="REFRESH ... CONCURRENTLY (readers are not blocked; every view needs a unique index)",
    )
    parser.add_argument("--schema", action="append", help="only this schema (repeatable)")
    parser.add_argument("--url", help="database URL (default: DATABASE_URL)")
    parser.set_defaults(func=_run)
