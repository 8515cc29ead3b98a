"""Is the database wall up for this connection? Row-level security stops nothing for a
superuser, a ``BYPASSRLS`` role, or the owner of a table whose RLS is not ``FORCE``d, and such a
connection looks like any other. :func:`wall_pattern` checks the role once per engine, at the
first transaction a session opens on it, and warns (or, strict, refuses).

The other side of a wall that holds is a role that lacks a grant: on the same engines, a
``permission denied`` (SQLSTATE 42501) becomes :class:`~sa_patterns.errors.MissingGrant` naming
the ``GRANT`` to add.
"""

from __future__ import annotations

import re
import warnings
import weakref
from typing import Any, Literal

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.orm import Session, SessionTransaction

from ..errors import (
    ConfigurationError,
    DatabaseWallDown,
    DatabaseWallWarning,
    MissingGrant,
    TenantViolation,
)
from ..pattern import Pattern

__all__ = ["WallMode", "missing_grant", "wall_findings", "wall_pattern"]

WallMode = Literal["warn", "strict", "off"]

# Checked only where a wall exists: some table has row-level security enabled.
_CHECK = text(
    """
    SELECT r.rolname, r.rolsuper, r.rolbypassrls,
      ARRAY(SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
            WHERE c.relrowsecurity AND NOT c.relforcerowsecurity AND c.relkind IN ('r', 'p')
              AND pg_catalog.pg_has_role(r.oid, c.relowner, 'MEMBER')
            ORDER BY 1 LIMIT 5) AS owned
    FROM pg_catalog.pg_roles r
    WHERE r.rolname IN (current_user, session_user)
      AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.relrowsecurity)
    """
)


def wall_findings(connection: Connection) -> list[str]:
    """Why row-level security would not apply to this connection (empty when it does, or when
    no table has RLS): each reason with its fix."""
    found: list[str] = []
    for role, superuser, bypass, owned in connection.execute(_CHECK):
        if superuser:
            found.append(f"role {role} is a superuser, which skips every policy: connect as the "
                         "app role (NOSUPERUSER NOBYPASSRLS, see docs/production-roles.md)")
        elif bypass:
            found.append(f"role {role} has BYPASSRLS: ALTER ROLE {role} NOBYPASSRLS, or connect "
                         "as the app role")
        if owned and not superuser:
            found.append(f"role {role} owns {', '.join(owned)} whose row level security is not "
                         "forced: the owner skips its policies (connect as the app role, which "
                         "owns nothing)")
    return found


#: per engine: the findings of its one check, and whether they were already warned about
_checked: weakref.WeakKeyDictionary[Engine, tuple[list[str], list[bool]]] = weakref.WeakKeyDictionary()


def wall_pattern(mode: WallMode) -> Pattern:
    """A pattern checking, once per engine, that the sessions' role is subject to RLS."""
    if mode not in ("warn", "strict"):
        raise ConfigurationError(f"wall={mode!r}: use 'warn' (default), 'strict' or 'off'.")

    def after_begin(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
        engine = connection.engine
        seen = _checked.get(engine)
        if seen is None:
            seen = _checked[engine] = (wall_findings(connection), [False])
            if not event.contains(engine, "handle_error", _name_the_grant):
                event.listen(engine, "handle_error", _name_the_grant)
        findings, warned = seen
        if not findings or (warned[0] and mode == "warn"):
            return  # up, or warned about already: nothing to build on every transaction
        message = (
            "the database wall is down for this connection: " + "; ".join(findings) + ". The ORM "
            "filter still applies; raw SQL and statements past it see every tenant."
        )
        if mode == "strict":
            raise DatabaseWallDown(message)  # every time, not once
        if not warned[0]:
            warned[0] = True
            warnings.warn(message, DatabaseWallWarning, stacklevel=2)

    listeners: tuple[tuple[str, Any], ...] = (("after_begin", after_begin),)
    return Pattern(name=f"wall:{mode}", listeners=listeners)


_DENIED = re.compile(
    r"permission denied for (table|sequence|function|procedure|schema|view|materialized view) (.+)"
)
_VERBS = {
    "INSERT": "INSERT", "UPDATE": "UPDATE", "DELETE": "DELETE", "MERGE": "INSERT, UPDATE",
    "TRUNCATE": "TRUNCATE",
}
#: PostgreSQL's refusal of a row by a policy's WITH CHECK (or an upsert's USING): same SQLSTATE
_POLICY = re.compile(r'violates row-level security policy.* for table "?([^"]+)"?')


def missing_grant(message: str, statement: str | None, role: str | None) -> MissingGrant | None:
    """The :class:`MissingGrant` for PostgreSQL's ``permission denied for <kind> <name>``
    (the server's English message; anything else gives None and the original error stands)."""
    match = _DENIED.search(message)
    if match is None:
        return None
    kind, name = match.group(1), match.group(2).strip()
    verb = (statement or "").lstrip().split(None, 1)[0].upper() if statement else "SELECT"
    who = role or "<the app role>"
    if kind == "schema" and verb in ("CREATE", "ALTER", "DROP", "COMMENT"):
        return MissingGrant(
            f"permission denied for schema {name}: the role {who} may not change the schema, by "
            "design: only the owner role creates and alters objects. Run DDL in a migration, as "
            "the owner (docs/production-roles.md)."
        )
    if kind in ("sequence", "schema"):
        privilege = "USAGE"
    elif kind in ("function", "procedure"):
        privilege = "EXECUTE"
    else:
        privilege = _VERBS.get(verb, "SELECT")
    on = {"view": "TABLE", "materialized view": "TABLE"}.get(kind, kind.upper())
    withheld = ""
    if privilege in ("UPDATE", "DELETE", "TRUNCATE"):
        withheld = (
            " If the models' grants leave it out on purpose (the audit log is append-only, a "
            "history is written by its triggers), the statement is what must change."
        )
    return MissingGrant(
        f"permission denied for {kind} {name}: the role {who} lacks {privilege} on it. Apply "
        "the migrations autogenerate writes, which grant the app role what the models need, or "
        f"add GRANT {privilege} ON {on} {name} TO {who} (docs/production-roles.md).{withheld}"
    )


def _name_the_grant(context: ExceptionContext) -> None:
    original = context.original_exception
    if getattr(original, "sqlstate", None) != "42501":
        return
    primary = getattr(getattr(original, "diag", None), "message_primary", None) or str(original)
    refused = _POLICY.search(primary)
    if refused is not None:
        # the database wall stopped a row of another tenant: the same error as the ORM wall's
        raise TenantViolation(
            f"row-level security refused the statement on {refused.group(1)}: it would read or "
            "write a row outside the tenant in scope (an upsert onto another tenant's key, an "
            "INSERT ... SELECT of another tenant's rows). Nothing was written."
        ) from context.sqlalchemy_exception or original
    found = missing_grant(primary, context.statement, context.engine.url.username if context.engine else None)
    if found is not None:
        raise found from context.sqlalchemy_exception or original
