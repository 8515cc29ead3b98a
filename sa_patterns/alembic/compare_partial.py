"""Partial-index predicates, compared through PostgreSQL's canonical form.

Alembic compares an index's name, columns and uniqueness but not its ``WHERE`` predicate, so
turning ``Index("uq_email", "email", unique=True)`` into ``soft_unique("email",
name="uq_email")`` (or changing any ``postgresql_where``) would go unnoticed. Here PostgreSQL
decides: the model's predicate is attached to an index on a temporary copy of the table inside a
SAVEPOINT (rolled back) and read back with ``pg_get_expr``, next to ``pg_get_expr`` of the live
index. Equal text means no change whatever the spelling; a difference becomes drop index + create
index, reversible for the downgrade.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.runtime.plugins import Plugin
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import Index, Table, text
from sqlalchemy.engine import Connection

from ..schema import qualified, quote

__all__ = ["canonical_predicate", "compare_partial_indexes", "setup"]

_PROBE = "sa_patterns_partial_probe"
_LIVE = text(
    """
    SELECT i.relname, pg_catalog.pg_get_expr(x.indpred, x.indrelid)
    FROM pg_catalog.pg_index x
    JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
    JOIN pg_catalog.pg_class t ON t.oid = x.indrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
    WHERE t.relname = :table AND n.nspname = coalesce(:schema, current_schema())
    """
)
_PROBE_PREDICATE = text(
    "SELECT pg_catalog.pg_get_expr(x.indpred, x.indrelid) FROM pg_catalog.pg_index x "
    "WHERE x.indrelid = CAST(:probe AS regclass)"
)


def _where(index: Index) -> Any:
    return index.dialect_options["postgresql"].get("where")


def canonical_predicate(connection: Connection, table: Table, index: Index) -> str | None:
    """The model index's predicate as PostgreSQL prints it back (nothing persists)."""
    where = _where(index)
    if where is None:
        return None
    predicate = str(
        where.compile(
            dialect=connection.dialect,
            compile_kwargs={"include_table": False, "literal_binds": True},
        )
    )
    first = quote(next(iter(table.c)).name)
    savepoint = connection.begin_nested()
    try:
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {_PROBE} (LIKE {qualified(table.schema, table.name)})"
        )
        connection.exec_driver_sql(f"CREATE INDEX ON {_PROBE} ({first}) WHERE {predicate}")
        found = connection.execute(_PROBE_PREDICATE, {"probe": _PROBE}).scalar_one()
    finally:
        savepoint.rollback()
    return str(found)


def compare_partial_indexes(
    autogen_context: AutogenContext,
    modify_table_ops: ops.ModifyTableOps,
    schema: str | None,
    tname: str,
    conn_table: Table | None,
    metadata_table: Table | None,
) -> PriorityDispatchResult:
    connection = autogen_context.connection
    if connection is None or conn_table is None or metadata_table is None:
        return PriorityDispatchResult.CONTINUE
    rows = connection.execute(_LIVE, {"table": tname, "schema": schema})
    live: dict[str, str | None] = {str(r[0]): r[1] for r in rows}
    handled = {
        op.index_name
        for op in modify_table_ops.ops
        if isinstance(op, (ops.CreateIndexOp, ops.DropIndexOp))
    }
    reflected = {i.name: i for i in conn_table.indexes}
    for index in sorted(metadata_table.indexes, key=lambda i: str(i.name)):
        name = index.name
        if name is None or name in handled or name not in live or name not in reflected:
            continue
        if _where(index) is None and live[name] is None:
            continue
        if canonical_predicate(connection, metadata_table, index) == live[name]:
            continue
        modify_table_ops.ops.append(ops.DropIndexOp.from_index(reflected[name]))
        modify_table_ops.ops.append(ops.CreateIndexOp.from_index(index))
    return PriorityDispatchResult.CONTINUE


def setup(plugin: Plugin) -> None:
    # LAST: Alembic's index comparison has run; indexes it already changes are left to it.
    plugin.add_autogenerate_comparator(
        compare_partial_indexes, "table", "partial_indexes", priority=DispatchPriority.LAST
    )
