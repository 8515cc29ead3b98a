"""The database wall: ``ENABLE``/``FORCE ROW LEVEL SECURITY`` and the tenant policy of a tenant
table, comparing ``tenant_id`` with the transaction-local ``app.tenant_id``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Table,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.type_api import TypeEngine

from ..context import (
    ALL_TENANTS_SETTING,
    TENANT_SETTING,
)
from ..errors import (
    ConfigurationError,
)
from ..schema.objects import Policy, RowLevelSecurity, ident, quote, quote_literal
from .tables import _KIND_STR, _tenant_kind


def _sql_type(type_: TypeEngine[Any], kind: str) -> str:
    # Strings compare as text: a cast to varchar(n) would *truncate* a long setting and could
    # match another tenant's id.
    if kind == _KIND_STR:
        return "text"
    compiled: str = type_.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    return compiled.lower()


def rls_entities(table: Table, admin_role: str | None = None) -> list[Policy | RowLevelSecurity]:
    """The row-level security objects of a tenant table: FORCE'd RLS, the isolation policy and,
    with ``admin_role``, a policy letting that role see all tenants inside ``all_tenants()``."""
    kind = _tenant_kind(table)
    if kind is None:
        raise ConfigurationError(f"{table.name} has no tenant_id column from TenantMixin.")
    column = table.c.tenant_id
    setting = f"NULLIF(current_setting({quote_literal(TENANT_SETTING)}, true), '')"
    check = f"{quote(column.name)} = {setting}::{_sql_type(column.type, kind)}"
    entities: list[Policy | RowLevelSecurity] = [
        RowLevelSecurity(schema=table.schema, table=table.name, force=True),
        Policy(
            schema=table.schema,
            table=table.name,
            name=ident(table.name, "tenant_isolation"),
            using=check,
            with_check=check,
        ),
    ]
    if admin_role:
        bypass = f"current_setting({quote_literal(ALL_TENANTS_SETTING)}, true) = 'on'"
        entities.append(
            Policy(
                schema=table.schema,
                table=table.name,
                name=ident(table.name, "tenant_admin"),
                using=bypass,
                with_check=bypass,
                roles=(admin_role,),
            )
        )
    return entities
