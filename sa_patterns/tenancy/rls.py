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
from ..roles import OWNER
from ..schema.objects import Policy, RowLevelSecurity, ident, qualified, quote, quote_literal
from .tables import _KIND_STR, _tenant_kind


def _sql_type(type_: TypeEngine[Any], kind: str) -> str:
    # Strings compare as text: a cast to varchar(n) would *truncate* a long setting and could
    # match another tenant's id.
    if kind == _KIND_STR:
        return "text"
    compiled: str = type_.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    return compiled.lower()


def owner_rights(relation: str) -> str:
    """SQL: the current role has the privileges of the owner of ``relation`` (a qualified name,
    resolved to an OID when the policy is created): true in the owner's migrations and in its
    ``SECURITY DEFINER`` functions, false for a reader of a view the owner owns."""
    return (
        "pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c "  # noqa: S608  (a literal)
        f"WHERE c.oid = {quote_literal(relation)}::pg_catalog.regclass), 'USAGE')"
    )


def rls_entities(table: Table, admin_role: str | None = None) -> list[Policy | RowLevelSecurity]:
    """The row-level security objects of a tenant table: FORCE'd RLS, the isolation policy, one
    letting the owner role reach every tenant when its transaction sets ``app.all_tenants``
    (migrations that backfill, the refresh and reader functions it owns) and, with
    ``admin_role``, one letting that role see all tenants inside ``all_tenants()``."""
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
    bypass = f"current_setting({quote_literal(ALL_TENANTS_SETTING)}, true) = 'on'"
    # Anyone can set app.all_tenants, and a view the owner owns is read with the owner's
    # policies while current_user stays the reader: the owner's rights are checked as well.
    owner_bypass = f"{bypass} AND {owner_rights(qualified(table.schema, table.name))}"
    entities.append(
        Policy(
            schema=table.schema,
            table=table.name,
            name=ident(table.name, "tenant_owner"),
            using=owner_bypass,
            with_check=owner_bypass,
            roles=(OWNER,),
        )
    )
    if admin_role:
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
