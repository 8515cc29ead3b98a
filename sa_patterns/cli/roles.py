"""``sa-patterns roles``: create the role model once per database, as a superuser (or a role with
CREATEROLE that owns the schema).

What a DBA runs before the first migration: the owner, app and admin roles (names from
:mod:`sa_patterns.roles`) as logins that skip nothing — NOSUPERUSER, NOBYPASSRLS, NOCREATEROLE,
NOCREATEDB — the schema handed to the owner, so the migrations it runs own every object and can
grant the app and admin roles their share. Passwords come from ``SA_PATTERNS_<ROLE>_PASSWORD``
when set, never from arguments (shell history). ``--print`` writes the SQL instead of running it.
Running it again changes nothing that is already right.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from sqlalchemy import URL, create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from ..database import normalise_url
from ..errors import ConfigurationError
from ..roles import RoleNames, configured_roles
from ..schema.objects import quote, quote_literal
from ._failure import database_failure

__all__ = ["add_parser", "role_statements"]

_ATTRIBUTES = "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB NOREPLICATION"


def role_statements(roles: RoleNames, schema: str, database: str | None) -> list[str]:
    """The idempotent SQL setting up ``roles`` on ``schema`` (and CONNECT on ``database``)."""
    statements = []
    for part in ("owner", "app", "admin"):
        name = getattr(roles, part)
        password = os.environ.get(f"SA_PATTERNS_{part.upper()}_PASSWORD")
        secret = f" PASSWORD {quote_literal(password)}" if password else ""
        statements.append(
            "DO $sa_patterns$ BEGIN\n"
            f"  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {quote_literal(name)}) THEN\n"
            f"    CREATE ROLE {quote(name)} {_ATTRIBUTES};\n"
            "  END IF;\n"
            "END $sa_patterns$"
        )
        # also for a role that existed: it must skip nothing
        statements.append(f"ALTER ROLE {quote(name)} {_ATTRIBUTES}{secret}")
        if database:
            statements.append(f"GRANT CONNECT, TEMPORARY ON DATABASE {quote(database)} TO {quote(name)}")
    statements.append(f"ALTER SCHEMA {quote(schema)} OWNER TO {quote(roles.owner)}")
    return statements


def _run(args: argparse.Namespace) -> int:
    roles = configured_roles()
    url: URL | None = None
    raw = args.url or os.environ.get("DATABASE_URL", "")
    if raw:
        url = normalise_url(raw)
    statements = role_statements(roles, args.schema, url.database if url is not None else None)
    if args.print:
        print(";\n".join(statements) + ";")
        return 0
    if url is None:
        raise ConfigurationError("roles needs --url or DATABASE_URL (a superuser), or --print.")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    except SQLAlchemyError as exc:
        return database_failure("roles", exc, "run it as a superuser, or print the SQL for your DBA: sa-patterns roles --print", debug=args.debug)
    finally:
        engine.dispose()
    print(f"roles ready: owner {roles.owner} (run the migrations as it), app {roles.app} "
          f"(the application's login), admin {roles.admin}; schema {args.schema} is owned by "
          f"{roles.owner}.")
    return 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "roles", help="create the owner, app and admin roles and give the schema to the owner"
    )
    parser.add_argument("--url", help="a superuser's database URL (default: DATABASE_URL)")
    parser.add_argument("--schema", default="public", help="the schema the models live in")
    parser.add_argument("--print", action="store_true", help="print the SQL instead of running it")
    parser.add_argument("--debug", action="store_true", help="show the traceback on failure")
    parser.set_defaults(func=_run)
