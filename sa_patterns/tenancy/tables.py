"""Which tables are tenant tables, the kind of their tenant column, and a tenant id coerced to
it. Bookkeeping lives in ``MetaData.info`` keyed by table (``Table.info`` would be rendered into
every ``create_table`` of a migration)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import (
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
)
from sqlalchemy.sql.type_api import TypeEngine

from ..context import (
    TenantId,
)
from ..errors import (
    ConfigurationError,
)

# Bookkeeping lives in ``MetaData.info`` keyed by table, never in ``Table.info``: Alembic
# renders ``Table.info`` into every ``create_table`` of a migration.
#: ``{table.key: kind of its tenant column}``
_TENANT_INFO_KEY = "sa_patterns.tenant_tables"
#: per tenant table key: its RLS admin role ("" for none), for tables registered with __rls__
_RLS_INFO_KEY = "sa_patterns.rls_tables"
#: ``{table.key: kind}`` of the tables of joined-inheritance subclasses of tenant models
_JOINED_INFO_KEY = "sa_patterns.tenant_joined_tables"
#: per source table key: the tables holding copies of its rows, with their ORM entities
_COPIES_INFO_KEY = "sa_patterns.tenant_copies"
#: ``{table.key: "distributed" | "reference"}``, read by :mod:`sa_patterns.citus`
_CITUS_INFO_KEY = "sa_patterns.citus_tables"
#: Identity token of objects loaded under :func:`sa_patterns.all_tenants`.
_ALL_TOKEN = "sa_patterns:all_tenants"

_KIND_INT, _KIND_UUID, _KIND_STR = "int", "uuid", "str"
_INT_TEXT = re.compile(r"-?[0-9]{1,19}")


#: the range of an integer tenant id: PostgreSQL's bigint (an Integer column's smaller range is
#: the database's to refuse on write; a read beyond it matches nothing)
_BIGINT = (-(2**63), 2**63 - 1)


def _kind(type_: TypeEngine[Any]) -> str:
    if isinstance(type_, Integer):
        return _KIND_INT
    if isinstance(type_, Uuid):
        return _KIND_UUID
    if isinstance(type_, String):
        return _KIND_STR
    raise ConfigurationError(
        f"__tenant_type__ = {type_!r} is not supported: use BigInteger (the default), Integer, "
        "Uuid or String(n)."
    )


def _coerce(value: object, kind: str, where: str) -> TenantId:
    """``value`` as the Python type of the tenant column, or a teaching ConfigurationError.

    Hostile text (``"1; drop table x"``) never reaches SQL as anything but a bound value, and for
    integer and UUID tenants it is refused here already.
    """
    if isinstance(value, bool) or value is None:
        raise ConfigurationError(f"{where}: {value!r} is not a tenant id.")
    if kind == _KIND_INT:
        if isinstance(value, int):
            number = value
        elif isinstance(value, str) and _INT_TEXT.fullmatch(value):
            number = int(value)
        else:
            number = None
        if number is not None:
            low, high = _BIGINT
            if low <= number <= high:
                return number
            raise ConfigurationError(
                f"{where}: tenant id {value!r} is out of range for an integer tenant column "
                f"(bigint: {low} to {high}). Pass the tenant's key in the column's type."
            )
    elif kind == _KIND_UUID:
        if isinstance(value, uuid.UUID):
            return value
        if isinstance(value, str):
            try:
                return uuid.UUID(value)
            except ValueError:
                pass
    elif isinstance(value, (str, int, uuid.UUID)):
        return str(value)
    raise ConfigurationError(
        f"{where}: tenant id {value!r} ({type(value).__name__}) does not fit a {kind} tenant "
        "column. Pass the tenant's key in the column's type."
    )


def _tenant_kind(table: Table) -> str | None:
    kind = table.metadata.info.get(_TENANT_INFO_KEY, {}).get(table.key)
    return kind if isinstance(kind, str) else None


def citus_mode(table: Table) -> str | None:
    """``"distributed"``, ``"reference"`` or ``None`` (see :mod:`sa_patterns.citus`)."""
    mode = table.metadata.info.get(_CITUS_INFO_KEY, {}).get(table.key)
    return mode if isinstance(mode, str) else None


def set_citus_mode(table: Table, mode: str) -> None:
    table.metadata.info.setdefault(_CITUS_INFO_KEY, {})[table.key] = mode



def is_tenant_table(table: Table) -> bool:
    """Whether ``table`` is scoped by tenant: a ``TenantMixin`` model's, or a copy of one's rows."""
    return _tenant_kind(table) is not None


def tenant_tables(metadata: MetaData) -> list[Table]:
    """Tables of ``metadata`` that carry ``TenantMixin``'s ``tenant_id``."""
    return [t for t in metadata.sorted_tables if _tenant_kind(t) is not None]
