"""``sa-patterns partitions maintain --metadata app.models:Base``: create upcoming partitions
and drop those past retention, for every partitioned model (idempotent; run it from cron).

Periods are UTC (see :mod:`sa_patterns.partitioning`): the result is the same whatever the
client's ``PGTZ`` or the server's ``TimeZone``. It prints the partitions it created and dropped,
read from the catalog before and after."""

from __future__ import annotations

import argparse
import os
from typing import Any

from sqlalchemy import Connection, MetaData, create_engine, text

from .._spec import load_metadata
from ..database import normalise_url
from ..errors import ConfigurationError
from ..schema.objects import qualified

__all__ = ["add_parser"]

_PARTITIONS = text(
    "SELECT c.relnamespace::regnamespace::text, c.relname FROM pg_catalog.pg_inherits i "
    "JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:t)"
)


def _partitions(conn: Connection, metadata: MetaData) -> set[str]:
    from ..partitioning import partition_specs

    found: set[str] = set()
    for key in partition_specs(metadata):
        table = metadata.tables[key]
        rows = conn.execute(_PARTITIONS, {"t": qualified(table.schema, table.name)})
        found.update(name if table.schema is None else f"{schema}.{name}" for schema, name in rows)
    return found


def _run(args: argparse.Namespace) -> int:
    from ..partitioning import maintain

    url = args.url or os.environ.get("DATABASE_URL", "")
    if not url:
        raise ConfigurationError("no database: pass --url or set DATABASE_URL.")
    metadata = load_metadata(args.metadata)
    engine = create_engine(normalise_url(url))
    try:
        with engine.begin() as conn:
            before = _partitions(conn, metadata)
            ran = maintain(conn, metadata)
            after = _partitions(conn, metadata)
    finally:
        engine.dispose()
    print(f"maintained {len(ran)} partitioned table(s): {', '.join(ran) or '-'}")
    print(f"created: {', '.join(sorted(after - before)) or '-'}")
    print(f"dropped: {', '.join(sorted(before - after)) or '-'}")
    return 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("partitions", help="partition maintenance")
    actions = parser.add_subparsers(dest="action", required=True)
    maintain = actions.add_parser("maintain", help="create upcoming partitions, drop expired ones")
    maintain.add_argument("--metadata", required=True, help="models as package.module:attr")
    maintain.add_argument("--url", help="database URL (default: DATABASE_URL)")
    maintain.set_defaults(func=_run)
