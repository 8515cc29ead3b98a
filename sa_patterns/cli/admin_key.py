"""``sa-patterns admin-key add|revoke|list``: the keys with which administrators who are users of
the app act across tenants (:mod:`sa_patterns.tenancy.admin_keys`). Run as the owner role.

``add NAME`` prints a fresh key once (store it where the app reads its secrets); the database
keeps only its SHA-256. ``revoke NAME`` takes effect at the next statement of every session.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from ..database import normalise_url
from ..errors import ConfigurationError
from ..schema.objects import qualified
from ._failure import database_failure

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from ..tenancy.admin_keys import KEYS_TABLE, add_admin_key, new_admin_key, revoke_admin_key

    if args.action != "list" and not args.name:
        raise ConfigurationError(f"admin-key {args.action} needs the key's NAME.")
    raw = args.url or os.environ.get("DATABASE_URL", "")
    if not raw:
        raise ConfigurationError("admin-key needs --url or DATABASE_URL (connect as the owner role).")
    engine = create_engine(normalise_url(raw))
    try:
        with engine.begin() as conn:
            if args.action == "add":
                expires = (
                    dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=args.days) if args.days else None
                )
                key = new_admin_key()
                add_admin_key(conn, args.name, key, expires_at=expires, schema=args.schema)
                print(key)
                print(f"stored as {args.name!r}; the database keeps its SHA-256 only: this is the one "
                      "time it is shown.", file=sys.stderr)
            elif args.action == "revoke":
                if not revoke_admin_key(conn, args.name, schema=args.schema):
                    raise ConfigurationError(f"no admin key named {args.name!r}.")
                print(f"revoked {args.name!r}")
            else:
                rows = conn.execute(text(
                    f"SELECT name, created_at, expires_at FROM {qualified(args.schema, KEYS_TABLE)} "  # noqa: S608
                    "ORDER BY name"
                ))
                for name, created, expires in rows:
                    print(f"{name}\tcreated {created:%Y-%m-%d}\texpires {expires or 'never'}")
    except SQLAlchemyError as exc:
        return database_failure("admin-key", exc, "connect as the owner role, after the migration that enable_admin_keys() adds", debug=args.debug)
    finally:
        engine.dispose()
    return 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "admin-key", help="add, revoke or list the keys that open every tenant to in-app admins"
    )
    parser.add_argument("action", choices=("add", "revoke", "list"))
    parser.add_argument("name", nargs="?", default="", help="the key's name (add, revoke)")
    parser.add_argument("--days", type=int, help="add: the key expires after this many days")
    parser.add_argument("--url", help="the owner's database URL (default: DATABASE_URL)")
    parser.add_argument("--schema", help="the schema of the keys table (default: the search path)")
    parser.add_argument("--debug", action="store_true", help="show the traceback on failure")
    parser.set_defaults(func=_run)
