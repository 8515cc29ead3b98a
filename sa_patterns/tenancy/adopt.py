"""Where each existing row's tenant comes from, when ``TenantMixin`` is added to a table that
already has rows: a constant (:func:`tenant_constant`), another column of the row
(:func:`tenant_column`) or the row's parent (:func:`tenant_from`).

A source says it twice, in the two places the adoption needs it: as a SQL expression over the
table for the batched fill of the existing rows (:meth:`TenantSource.fill_value`), and as a
PL/pgSQL expression over ``NEW`` for the temporary trigger that fills the rows the application
inserts while the adoption runs (:meth:`TenantSource.trigger_value`). One source, so both agree.
Values reach SQL quoted (DDL takes no bound parameter) or, in the fill, bound.

``op.add_tenant_column`` (:mod:`sa_patterns.alembic.adopt_ops`) runs the adoption. Decorating
the model with :func:`adopt_tenants` makes autogenerate write it, instead of the ``ADD COLUMN
... NOT NULL`` that fails on a table with rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Table, column, literal, select, table
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.type_api import TypeEngine

from ..errors import ConfigurationError
from ..schema.objects import qualified, quote, quote_literal

__all__ = [
    "TenantSource", "adopt_tenants", "adoption_of", "tenant_column", "tenant_constant", "tenant_from",
    "tenant_source",
]

#: ``{table.key: (source, options)}`` in ``MetaData.info`` (``Table.info`` is rendered by Alembic)
_ADOPT_INFO_KEY = "sa_patterns.tenant_adoptions"
_T = TypeVar("_T")


@dataclass(frozen=True)
class TenantSource:
    """Where the tenant of an existing row comes from; build one with :func:`tenant_constant`,
    :func:`tenant_column` or :func:`tenant_from`. Its ``repr`` is the call that builds it, so a
    migration renders it as written."""

    kind: str  # "constant" | "column" | "join" | "none"
    value: Any = None
    column: str | None = None
    parent: str | None = None
    parent_schema: str | None = None
    parent_key: str = "id"

    def describe(self) -> str:
        if self.kind == "none":
            return "no source (the table was expected to have no rows)"
        if self.kind == "constant":
            return f"the constant tenant {self.value!r}"
        if self.kind == "column":
            return f"the column {self.column}"
        return f"the tenant_id of the {self.parent} row whose {self.parent_key} is {self.column}"

    def fill_value(self, child: Table, type_: TypeEngine[Any]) -> ColumnElement[Any]:
        """The tenant of each row of ``child`` (the live table, reflected), as SQL."""
        if self.kind == "constant":
            return literal(self.value, type_)
        assert self.column is not None
        if self.column not in child.c:
            raise ConfigurationError(
                f"tenant source for {child.name}: the table has no column {self.column!r}."
            )
        if self.kind == "column":
            return child.c[self.column]
        assert self.parent is not None
        parent = table(self.parent, column("tenant_id"), column(self.parent_key), schema=self.parent_schema)
        return (
            select(parent.c.tenant_id)
            .where(parent.c[self.parent_key] == child.c[self.column])
            .scalar_subquery()
        )

    def trigger_value(self, sql_type: str) -> str:
        """The tenant of the row being written, as a PL/pgSQL expression over ``NEW``."""
        if self.kind == "constant":
            return f"{quote_literal(str(self.value))}::{sql_type}"
        assert self.column is not None
        if self.kind == "column":
            return f"NEW.{quote(self.column)}"
        assert self.parent is not None
        return (
            f"(SELECT p.tenant_id FROM {qualified(self.parent_schema, self.parent)} p "  # noqa: S608  (quoted)
            f"WHERE p.{quote(self.parent_key)} = NEW.{quote(self.column)})"
        )

    def __repr__(self) -> str:
        if self.kind == "none":
            return "no_existing_rows()"
        if self.kind == "constant":
            return f"tenant_constant({self.value!r})"
        if self.kind == "column":
            return f"tenant_column({self.column!r})"
        extra = "" if self.parent_key == "id" else f", key={self.parent_key!r}"
        extra += f", schema={self.parent_schema!r}" if self.parent_schema else ""
        return f"tenant_from({self.parent!r}, on={self.column!r}{extra})"


def tenant_constant(tenant_id: int | str | uuid.UUID) -> TenantSource:
    """Every existing row belongs to one tenant (a single-customer database going multi-tenant)."""
    if isinstance(tenant_id, bool) or not isinstance(tenant_id, (int, str, uuid.UUID)):
        raise ConfigurationError(f"tenant_constant(): {tenant_id!r} is not a tenant id.")
    return TenantSource("constant", value=tenant_id)


def tenant_column(name: str) -> TenantSource:
    """Each row's tenant is the value of another of its columns (``org_id``), copied."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError("tenant_column() needs the name of a column of the table.")
    return TenantSource("column", column=name)


def tenant_from(parent: str, *, on: str, key: str = "id", schema: str | None = None) -> TenantSource:
    """Each row's tenant is its parent's: the ``tenant_id`` of the ``parent`` row whose ``key``
    equals the row's ``on`` column. A parent being adopted in the same migration must be adopted
    first; a row whose parent is missing stops the migration (see ``op.add_tenant_column``)."""
    if not parent or not on or not key:
        raise ConfigurationError("tenant_from() needs the parent table and on= (the row's column).")
    return TenantSource("join", column=on, parent=parent, parent_schema=schema, parent_key=key)


def no_existing_rows() -> TenantSource:
    """No source: the table is expected to have no rows. What autogenerate writes for a
    ``TenantMixin`` table that exists and whose model does not say where its rows' tenants come
    from (:func:`adopt_tenants`): the column is added online all the same, and a row that has
    no tenant (one that was there, or one the old code inserts during the migration) stops it
    before ``tenant_id`` is made ``NOT NULL``, with what to write instead."""
    return TenantSource("none")


def tenant_source(source: TenantSource | int | str | uuid.UUID) -> TenantSource:
    """``source`` as given to ``op.add_tenant_column``: a :class:`TenantSource`, an int or UUID
    (a constant) or a str (a column of the table; a string constant is
    ``tenant_constant("acme")``)."""
    if isinstance(source, TenantSource):
        return source
    if isinstance(source, str):
        return tenant_column(source)
    if isinstance(source, (int, uuid.UUID)) and not isinstance(source, bool):
        return tenant_constant(source)
    raise ConfigurationError(
        f"add_tenant_column(source={source!r}): give a tenant id (a constant), a column name, "
        "tenant_constant(...), tenant_column(...) or tenant_from(parent, on=column)."
    )


def adopt_tenants(source: TenantSource | int | str | uuid.UUID, **options: Any) -> Callable[[_T], _T]:
    """Class decorator for a ``TenantMixin`` model whose table already has rows: when
    autogenerate finds the table without ``tenant_id``, it writes
    ``op.add_tenant_column(table, source=..., keep_trigger=True)`` first in the revision and
    ``op.drop_tenant_fill(table)`` last, instead of ``ADD COLUMN tenant_id ... NOT NULL`` and
    its index. ``options`` go to ``add_tenant_column`` (``batch_size``, ``lock_timeout``...).
    Once the table has ``tenant_id``, the decorator changes nothing: it can stay."""
    given = tenant_source(source)

    def decorate(cls: _T) -> _T:
        table = getattr(cls, "__table__", None)
        if not isinstance(table, Table):
            raise ConfigurationError(f"@adopt_tenants: {cls!r} is not a mapped class with a table.")
        table.metadata.info.setdefault(_ADOPT_INFO_KEY, {})[table.key] = (given, dict(options))
        return cls

    return decorate


def adoption_of(table: Table) -> tuple[TenantSource, dict[str, Any]] | None:
    """What :func:`adopt_tenants` declared for ``table``: its source and options."""
    found = table.metadata.info.get(_ADOPT_INFO_KEY, {}).get(table.key)
    return None if found is None else (found[0], dict(found[1]))
