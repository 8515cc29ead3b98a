"""Generated columns a pattern owns, compared through PostgreSQL's canonical form.

Alembic cannot alter a ``GENERATED ALWAYS AS (...) STORED`` column and compares its
expression only crudely (then merely warns). For columns flagged with
``Column.info[GENERATED_INFO]`` (the full-text ``search_vector``), this plugin part asks
PostgreSQL itself: the model's expression is created on a temporary probe table inside a
SAVEPOINT (rolled back) and read back with ``pg_get_expr``, next to ``pg_get_expr`` of the live
column. Equal text means no change, whatever the spelling in the model; a difference becomes
drop index(es) + drop column + add column + create index(es), reversible for the downgrade.

A search vector adopted online on a populated table is a plain ``tsvector`` column kept by the
toolkit's trigger (:mod:`sa_patterns.alembic.adopt_search`): that counts as the model's column
while the trigger's function computes the model's expression; otherwise (weights changed, the
trigger dropped, disabled or edited) the difference is ``op.change_search_vector``, online. A
plain vector without the toolkit's function (another tool's) is replaced as above.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.runtime.plugins import Plugin
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import Column, Computed, Index, Table, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ..schema import quote
from ..search import GENERATED_INFO, kept_vector
from .adopt_search import changed_vector, vector_of

__all__ = ["canonical_expression", "live_expression", "setup"]

_PROBE = "sa_patterns_generated_probe"
_LIVE = text(
    """
    SELECT a.attgenerated, pg_catalog.pg_get_expr(d.adbin, d.adrelid)
    FROM pg_catalog.pg_attribute a
    JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relname = :table AND n.nspname = coalesce(:schema, current_schema())
      AND a.attname = :column AND NOT a.attisdropped
    """
)
_PROBE_EXPR = text(
    """
    SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid)
    FROM pg_catalog.pg_attrdef d
    JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
    WHERE d.adrelid = CAST(:probe AS regclass) AND a.attname = :column
    """
)


def _flagged(column: Column[Any]) -> bool:
    return bool(column.info.get(GENERATED_INFO)) and isinstance(column.server_default, Computed)


def live_expression(
    connection: Connection, schema: str | None, table: str, column: str
) -> str | None:
    """``pg_get_expr`` of a stored generated column, ``None`` if the column is not one."""
    row = connection.execute(_LIVE, {"table": table, "schema": schema, "column": column}).first()
    if row is None or row[0] != "s":
        return None
    return str(row[1])


def canonical_expression(connection: Connection, table: Table, column: Column[Any]) -> str:
    """The model's generation expression as PostgreSQL prints it back (nothing persists)."""
    computed = column.server_default
    assert isinstance(computed, Computed)
    dialect = connection.dialect
    expression = str(computed.sqltext.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    reads = [table.c[name] for name in column.info[GENERATED_INFO] if name in table.c]
    definitions = [f"{quote(c.name)} {c.type.compile(dialect=dialect)}" for c in reads]
    definitions.append(
        f"{quote(column.name)} {column.type.compile(dialect=dialect)} "
        f"GENERATED ALWAYS AS ({expression}) STORED"
    )
    savepoint = connection.begin_nested()
    try:
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {_PROBE} ({', '.join(definitions)}) ON COMMIT DROP"
        )
        found = connection.execute(
            _PROBE_EXPR, {"probe": f"pg_temp.{_PROBE}", "column": column.name}
        ).scalar_one()
    finally:
        savepoint.rollback()
    return str(found)


def compare_generated_column(
    autogen_context: AutogenContext,
    alter_column_op: ops.AlterColumnOp,
    schema: str | None,
    tname: str,
    cname: str,
    conn_col: Column[Any],
    metadata_col: Column[Any],
) -> PriorityDispatchResult:
    # Ours: the table comparator below decides; Alembic's own check could only warn.
    return PriorityDispatchResult.STOP if _flagged(metadata_col) else PriorityDispatchResult.CONTINUE


def _index_names(modify_ops: ops.ModifyTableOps) -> set[str]:
    names = set()
    for op in modify_ops.ops:
        if isinstance(op, (ops.CreateIndexOp, ops.DropIndexOp)):
            names.add(str(op.index_name))
    return names


def _on(indexes: set[Index], name: str) -> list[Index]:
    # by name: a reflected table may hold the same index twice (reflection + Alembic's pass)
    found = {str(ix.name): ix for ix in indexes if any(c.name == name for c in ix.columns)}
    return [found[k] for k in sorted(found)]


def compare_generated_table(
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
    for column in metadata_table.c:
        if not _flagged(column) or column.name not in conn_table.c:
            continue
        live = live_expression(connection, schema, tname, column.name)
        found = kept_vector(connection, schema, tname) if live is None and vector_of(column) else None
        if found is not None and found.ours:
            change = changed_vector(connection, schema, tname, column)
            if change is not None:  # moved first in the revision by adopt_search's comparator
                modify_table_ops.ops.append(change)
            continue
        if live is not None:
            try:
                wanted = canonical_expression(connection, metadata_table, column)
            except DBAPIError:  # a type the probe cannot create yet: trust the text
                wanted = str(column.server_default.sqltext)  # type: ignore[union-attr]
            if wanted == live:
                continue
        taken = _index_names(modify_table_ops)
        old_indexes = [ix for ix in _on(conn_table.indexes, column.name) if ix.name not in taken]
        new_indexes = [ix for ix in _on(metadata_table.indexes, column.name) if ix.name not in taken]
        modify_table_ops.ops.extend(
            [
                *(ops.DropIndexOp.from_index(ix) for ix in old_indexes),
                ops.DropColumnOp.from_column_and_tablename(schema, tname, conn_table.c[column.name]),
                ops.AddColumnOp.from_column_and_tablename(schema, tname, column),
                *(ops.CreateIndexOp.from_index(ix) for ix in new_indexes),
            ]
        )
    return PriorityDispatchResult.CONTINUE


def setup(plugin: Plugin) -> None:
    # "postgresql" before Alembic's "default" computed-column check, which would only warn.
    plugin.add_autogenerate_comparator(
        compare_generated_column,
        "column",
        "server_default",
        qualifier="postgresql",
        priority=DispatchPriority.FIRST,
    )
    # LAST: Alembic's index comparison has run; indexes it already handles are left to it.
    plugin.add_autogenerate_comparator(
        compare_generated_table, "table", "generated", priority=DispatchPriority.LAST
    )
