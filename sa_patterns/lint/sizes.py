"""How big the tables a migration touches are in the live database: a rewrite of an empty
table is instant, the same rewrite of a big one stalls every writer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import URL, Engine, create_engine, text

from ..database import normalise_url

__all__ = ["TableSize", "server_version", "table_sizes"]

# A partitioned table is the sum of its leaf partitions (pg_partition_tree), a plain table
# itself. reltuples is -1 until the table was first analyzed.
_SIZE = text(
    """
    SELECT to_regclass(:name) IS NOT NULL,
           coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint,
           coalesce(bool_or(c.reltuples < 0 AND pg_catalog.pg_relation_size(c.oid) > 0), false),
           coalesce(sum(pg_catalog.pg_total_relation_size(c.oid)), 0)::bigint,
           coalesce(sum(pg_catalog.pg_relation_size(c.oid)), 0)::bigint
    FROM pg_catalog.pg_class c
    WHERE (c.oid = to_regclass(:name) AND c.relkind <> 'p')
       OR c.oid IN (SELECT t.relid FROM pg_catalog.pg_partition_tree(to_regclass(:name)) t
                    WHERE t.isleaf)
    """
)
_INDEX_TABLE = text(
    "SELECT i.indrelid::regclass::text FROM pg_catalog.pg_index i "
    "WHERE i.indexrelid = to_regclass(:name)"
)


def _engine(url: str | URL) -> Engine:
    raw = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    return create_engine(normalise_url(raw))


@dataclass(frozen=True)
class TableSize:
    """``rows`` is pg_class.reltuples (an estimate); ``None``: never analyzed, unknown."""

    rows: int | None
    bytes: int
    heap_bytes: int = 0
    exists: bool = True


def table_sizes(
    url: str | URL, tables: Iterable[str], indexes: Iterable[str] = ()
) -> tuple[dict[str, TableSize], dict[str, str]]:
    """Sizes of ``tables`` (names as written in the SQL, resolved on the search path) and the
    table each of ``indexes`` belongs to."""
    engine = _engine(url)
    sizes: dict[str, TableSize] = {}
    owners: dict[str, str] = {}
    try:
        with engine.connect() as conn:
            for index in sorted(set(indexes)):
                owner = conn.execute(_INDEX_TABLE, {"name": index}).scalar()
                if owner:
                    owners[index] = str(owner)
            for name in sorted({*tables, *owners.values()}):
                exists, rows, unknown, total, heap = conn.execute(_SIZE, {"name": name}).one()
                sizes[name] = TableSize(
                    None if unknown else int(rows), int(total), int(heap), exists=bool(exists)
                )
    finally:
        engine.dispose()
    return sizes, owners


def server_version(url: str | URL) -> str:
    """``major.minor`` of the server, for squawk's ``--pg-version``."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            number = int(conn.execute(text("SHOW server_version_num")).scalar_one())
    finally:
        engine.dispose()
    return f"{number // 10000}.{number % 100}"
