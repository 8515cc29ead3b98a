"""References that cannot cross tenants, by default.

A plain ``ForeignKey("projects.id")`` from one tenant model to another lets a task of tenant 1
point at a project of tenant 2: ids are global. For every such single-column foreign key the
toolkit adds, beside it, ``FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id,
id)`` (a :class:`TenantReference`, written by autogenerate), the ``UNIQUE (tenant_id, id)`` it
points at, and one index ``(project_id, tenant_id)`` that supports both keys.

The composite key is a schema object, not a ``ForeignKeyConstraint`` of the SQLAlchemy table,
on purpose: relationships keep joining over the plain key, so two many-to-one relationships of
one class never fight over copying ``tenant_id`` (SQLAlchemy's ``overlaps=`` warnings).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKeyConstraint, Index, MetaData, Table, UniqueConstraint, text
from sqlalchemy.engine import Connection

from ..errors import ConfigurationError
from ..schema.constraints import TenantReference
from ..schema.objects import ident, qualified
from ..schema.registry import register
from .tables import _TENANT_INFO_KEY

__all__ = [
    "TenantReference",
    "check_plain_tenant_references",
    "check_tenant_references",
    "reference_tenants",
]

#: ``{referenced table key: [(child table, its foreign key)]}`` waiting for the parent's class
_PENDING_KEY = "sa_patterns.tenant_references_pending"


def _referred_key(fk: ForeignKeyConstraint) -> str:
    """The ``metadata.tables`` key of the table ``fk`` points at (``schema.table`` or ``table``)."""
    target = fk.elements[0].target_fullname
    return target.rpartition(".")[0]


def reference_tenants(table: Table) -> None:
    """``table`` just became a tenant table: make its single-column foreign keys to tenant tables
    tenant-safe, and those of tenant tables declared earlier that point at it."""
    metadata = table.metadata
    tenants: dict[str, str] = metadata.info.get(_TENANT_INFO_KEY, {})
    for fk in list(table.foreign_key_constraints):
        if len(fk.elements) != 1 or fk.elements[0].parent.name == "tenant_id":
            continue
        parent = metadata.tables.get(_referred_key(fk))
        if parent is not None and parent.key in tenants:
            _reference(table, fk, parent)
        elif parent is None or parent.key not in tenants:
            pending = metadata.info.setdefault(_PENDING_KEY, {})
            pending.setdefault(_referred_key(fk), []).append((table, fk))
    for child, fk in metadata.info.get(_PENDING_KEY, {}).pop(table.key, []):
        _reference(child, fk, table)


def _reference(child: Table, fk: ForeignKeyConstraint, parent: Table) -> None:
    tenants: dict[str, str] = child.metadata.info[_TENANT_INFO_KEY]
    column = fk.elements[0].parent.name
    ref_column = fk.elements[0].target_fullname.rpartition(".")[2]
    if tenants[child.key] != tenants[parent.key]:
        raise ConfigurationError(
            f"{child.name}.{column} references {parent.name}, a tenant table whose tenant_id has "
            f"another type: give both models the same __tenant_type__."
        )
    if _has_composite(child, column, parent, ref_column):
        return  # declared by hand with tenant_foreign_key()
    if not _unique_over(parent, {"tenant_id", ref_column}):
        parent.append_constraint(UniqueConstraint(
            "tenant_id", ref_column, name=ident(parent.name, f"tenant_id_{ref_column}_key")
        ))
    if not any([c.name for c in ix.columns][:2] == [column, "tenant_id"] for ix in child.indexes):
        Index(ident(child.name, f"{column}_tenant_id"), child.c[column], child.c.tenant_id)
    register(child.metadata, TenantReference(
        schema=child.schema,
        table=child.name,
        name=ident(child.name, f"{column}_tenant_fkey"),
        column=column,
        ref_schema=parent.schema,
        ref_table=parent.name,
        ref_column=ref_column,
        on_delete=(fk.ondelete or "").upper(),
        on_update=(fk.onupdate or "").upper(),
    ))


def _has_composite(child: Table, column: str, parent: Table, ref_column: str) -> bool:
    for fk in child.foreign_key_constraints:
        pairs = {(e.parent.name, e.target_fullname.rpartition(".")[2]) for e in fk.elements}
        if _referred_key(fk) == parent.key and pairs == {("tenant_id", "tenant_id"), (column, ref_column)}:
            return True
    return False


def _unique_over(table: Table, columns: set[str]) -> bool:
    if {c.name for c in table.primary_key.columns} == columns:
        return True
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint) and {c.name for c in constraint.columns} == columns:
            return True
    return any(ix.unique and {c.name for c in ix.columns} == columns for ix in table.indexes)


_PLAIN = text(
    """
    SELECT con.conname, a.attname AS col, p.relname AS parent, pa.attname AS refcol
    FROM pg_catalog.pg_constraint con
    JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
    JOIN pg_catalog.pg_class p ON p.oid = con.confrelid
    JOIN pg_catalog.pg_attribute pa ON pa.attrelid = con.confrelid AND pa.attnum = con.confkey[1]
    WHERE con.contype = 'f' AND con.conrelid = to_regclass(:t) AND cardinality(con.conkey) = 1
      AND EXISTS (SELECT FROM pg_catalog.pg_attribute t
                  WHERE t.attrelid = con.confrelid AND t.attname = 'tenant_id' AND NOT t.attisdropped)
      AND NOT EXISTS (
        SELECT FROM pg_catalog.pg_constraint c2
        WHERE c2.contype = 'f' AND c2.conrelid = con.conrelid AND c2.confrelid = con.confrelid
          AND cardinality(c2.conkey) = 2 AND c2.conkey @> ARRAY[con.conkey[1]]
          AND c2.conkey @> ARRAY[(SELECT attnum FROM pg_catalog.pg_attribute
                                  WHERE attrelid = con.conrelid AND attname = 'tenant_id')])
    ORDER BY con.conname
    """
)


def check_plain_tenant_references(connection: Connection, metadata: MetaData) -> list[str]:
    """Foreign keys from a tenant table to another that do not include ``tenant_id``: nothing in
    the database stops a row from pointing at another tenant's row."""
    problems = []
    tenants: dict[str, str] = metadata.info.get(_TENANT_INFO_KEY, {})
    for key in tenants:
        table = metadata.tables.get(key)
        if table is None:
            continue
        where = qualified(table.schema, table.name)
        if connection.execute(text("SELECT to_regclass(:t)"), {"t": where}).scalar() is None:
            continue
        for name, col, parent, refcol in connection.execute(_PLAIN, {"t": where}):
            problems.append(
                f"{where}: foreign key {name} ({col}) -> {parent} ({refcol}) does not include "
                f"tenant_id, so a row can reference another tenant's row. Migrate: autogenerate "
                f"adds FOREIGN KEY (tenant_id, {col}) REFERENCES {parent} (tenant_id, {refcol})."
            )
    return problems


def check_tenant_references(ctx: Any) -> list[str]:
    """``sa-patterns doctor``: :func:`check_plain_tenant_references` on its connection."""
    return check_plain_tenant_references(ctx.connection, ctx.metadata)
