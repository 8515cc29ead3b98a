"""Administrators who are users of the app itself, on its pool, acting across tenants through a
key a request cannot forge.

The admin role's policy needs a login of its own. An app whose support staff are ordinary users
of the app, served by the same pool as everyone else, opts in with :func:`enable_admin_keys`:

* a table ``sa_patterns_admin_keys`` (the owner's alone: the app role has no grant on it) holds
  the SHA-256 of each key, with a name and an optional expiry;
* a ``SECURITY DEFINER`` function compares the hash of the transaction's ``app.admin_key``
  setting with them;
* every tenant table with RLS gets a policy ``TO`` the app role that lets it through while that
  function says yes, evaluated once per statement (a scalar subquery: an InitPlan).

The application presents the key with ``with sa_patterns.all_tenants(key=...):``, sent
transaction-local like the tenant. SQL that sets ``app.admin_key`` itself (an injection, a
careless report) knows no key, and a key is never stored in clear. Keys are added and revoked by
the owner (:func:`add_admin_key`, ``sa-patterns admin-key``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import ClassVar

from sqlalchemy import Column, DateTime, LargeBinary, MetaData, Table, Text, func, text
from sqlalchemy.engine import Connection

from ..context import ADMIN_KEY_SETTING, MIN_ADMIN_KEY
from ..errors import ConfigurationError
from ..roles import APP
from ..schema.access import set_privileges
from ..schema.objects import Entity, Policy, ident, qualified, quote, quote_literal
from ..schema.registry import provide
from .tables import _RLS_INFO_KEY

__all__ = [
    "KEYS_TABLE",
    "AdminKeyCheck",
    "add_admin_key",
    "enable_admin_keys",
    "new_admin_key",
    "revoke_admin_key",
]

KEYS_TABLE = "sa_patterns_admin_keys"
_CHECK = "sa_patterns_admin_key_valid"
_INFO_KEY = "sa_patterns.admin_keys"


def enable_admin_keys(metadata: MetaData, *, schema: str | None = None) -> Table:
    """Let ``all_tenants(key=...)`` open every RLS tenant table of ``metadata`` to the app role.
    Call once, beside the models; autogenerate writes the table, function and policies."""
    existing: Table | None = metadata.info.get(_INFO_KEY)
    if existing is not None:
        return existing
    table = Table(
        KEYS_TABLE,
        metadata,
        Column("name", Text, primary_key=True),
        Column("key_hash", LargeBinary, nullable=False, unique=True),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("expires_at", DateTime(timezone=True)),
        schema=schema,
        comment="SHA-256 of the keys that open every tenant to the app role (sa_patterns).",
    )
    set_privileges(table, ())  # the app and admin roles may not read or add keys
    metadata.info[_INFO_KEY] = table
    provide(metadata, "admin_keys", _entities)
    return table


@dataclass(frozen=True)
class AdminKeyCheck(Entity):
    """``sa_patterns_admin_key_valid()``: is the transaction's ``app.admin_key`` a stored, live
    key? ``SECURITY DEFINER`` (the app role cannot read the keys) with ``search_path`` pinned,
    so a temporary table of the caller's can never stand in for the keys table: the table is
    named with its schema, the current one when the SQL runs if the model names none."""

    schema: str | None

    kind: ClassVar[str] = "admin_key_check"
    order: ClassVar[int] = 10

    def key(self) -> tuple[str, ...]:
        return (self.kind, self.schema or "")

    def comment_target(self) -> str:
        return f"FUNCTION {qualified(self.schema, _CHECK)}()"

    def _definition(self, keys: str) -> str:
        setting = quote_literal(ADMIN_KEY_SETTING)
        return (
            f"CREATE OR REPLACE FUNCTION {qualified(self.schema, _CHECK)}()\n"
            "RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER\n"
            "SET search_path = pg_catalog, pg_temp\n"
            "AS $sa_patterns$\n"
            "SELECT EXISTS (\n"
            f"  SELECT FROM {keys} AS k\n"
            "  WHERE k.key_hash = pg_catalog.sha256(pg_catalog.convert_to(\n"
            f"          pg_catalog.current_setting({setting}, true), 'UTF8'))\n"
            "    AND (k.expires_at IS NULL OR k.expires_at > pg_catalog.now()))\n"
            "$sa_patterns$"
        )

    def create_sql(self) -> list[str]:
        if self.schema:
            return [self._definition(qualified(self.schema, KEYS_TABLE))]
        marker = "@keys@"
        literal = quote_literal(self._definition(marker)).replace(
            marker, f"' || pg_catalog.quote_ident(pg_catalog.current_schema()) || '.{quote(KEYS_TABLE)}"
        )
        return [f"DO $sa_outer$ BEGIN EXECUTE {literal}; END $sa_outer$"]

    def drop_sql(self) -> list[str]:
        return [f"DROP FUNCTION IF EXISTS {qualified(self.schema, _CHECK)}()"]


def _entities(metadata: MetaData) -> list[Entity]:
    table: Table = metadata.info[_INFO_KEY]
    call = f"(SELECT {qualified(table.schema, _CHECK)}())"
    entities: list[Entity] = [AdminKeyCheck(table.schema)]
    for key in metadata.info.get(_RLS_INFO_KEY, {}):
        tenant = metadata.tables.get(key)
        if tenant is None:
            continue
        entities.append(Policy(
            schema=tenant.schema,
            table=tenant.name,
            name=ident(tenant.name, "tenant_admin_key"),
            using=call,
            with_check=call,
            roles=(APP,),
        ))
    return entities


def new_admin_key() -> str:
    """A fresh key (URL-safe, 43 characters): give it to the app through the environment."""
    return secrets.token_urlsafe(32)


def _hash(key: str) -> bytes:
    if not isinstance(key, str) or len(key) < MIN_ADMIN_KEY:
        raise ConfigurationError(
            f"an admin key is a secret of at least {MIN_ADMIN_KEY} characters: use new_admin_key()."
        )
    return hashlib.sha256(key.encode()).digest()


def add_admin_key(
    connection: Connection, name: str, key: str, *, expires_at: dt.datetime | None = None,
    schema: str | None = None,
) -> None:
    """Store the hash of ``key`` under ``name`` (run as the owner; replaces a key of that name)."""
    where = qualified(schema, KEYS_TABLE)
    connection.execute(
        text(
            f"INSERT INTO {where} (name, key_hash, expires_at) VALUES (:name, :hash, :expires) "  # noqa: S608
            "ON CONFLICT (name) DO UPDATE SET key_hash = EXCLUDED.key_hash, "
            "expires_at = EXCLUDED.expires_at, created_at = now()"
        ),
        {"name": name, "hash": _hash(key), "expires": expires_at},
    )


def revoke_admin_key(connection: Connection, name: str, *, schema: str | None = None) -> bool:
    """Remove the key ``name``; True when there was one. Takes effect at the next statement."""
    where = qualified(schema, KEYS_TABLE)
    result = connection.execute(text(f"DELETE FROM {where} WHERE name = :name"), {"name": name})  # noqa: S608
    return bool(result.rowcount)
