"""``sa-patterns partitions maintain --metadata app.models:Base``: create upcoming partitions
and drop those past retention, for every partitioned model (idempotent; run it from cron)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from sqlalchemy import create_engine

from .._spec import load_metadata
from ..database import normalise_url
from ..errors import ConfigurationError

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from ..partitioning import maintain

    url = args.url or os.environ.get("DATABASE_URL", "")
    if not url:
        raise ConfigurationError("no database: pass --url or set DATABASE_URL.")
    engine = create_engine(normalise_url(url))
    try:
        with engine.begin() as conn:
            ran = maintain(conn, load_metadata(args.metadata))
    finally:
        engine.dispose()
    print(f"maintained {len(ran)} partitioned table(s): {', '.join(ran) or '-'}")
    return 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("partitions", help="partition maintenance")
    actions = parser.add_subparsers(dest="action", required=True)
    maintain = actions.add_parser("maintain", help="create upcoming partitions, drop expired ones")
    maintain.add_argument("--metadata", required=True, help="models as package.module:attr")
    maintain.add_argument("--url", help="database URL (default: DATABASE_URL)")
    maintain.set_defaults(func=_run)
