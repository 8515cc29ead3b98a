"""The role model of :mod:`sa_patterns.roles` for one test run: owner, app and admin logins.

Roles are cluster-wide, so their names are unique per run and per xdist worker
(``sap_<run>_<worker>_owner`` and so on) and everything they own is dropped at the end
(``DROP OWNED BY`` in every database holding something of theirs, then ``DROP ROLE``). Each gets
``LOGIN`` and a random password, so the fixtures log in *as* the role (the password is in the
URL: a server asking for one gets it).

``owner``  NOSUPERUSER NOBYPASSRLS; ``CREATE`` on the test database and on ``public`` (schemas,
           trusted extensions); owns each test module's schema and builds it.
``app``    NOSUPERUSER NOBYPASSRLS, owns nothing: what the toolkit's grants give it.
``admin``  NOSUPERUSER NOBYPASSRLS: the app's grants plus the admin policies.

The superuser reaches into a test's own transaction through one ``SECURITY DEFINER`` function
(:func:`superuser_rows`), which only the holder of the run's secret may call: tests check what
the database holds past row-level security without leaving the transaction that rolls back.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import URL, Connection, Row, bindparam, create_engine, text

from ..errors import ConfigurationError
from ..roles import RoleNames
from ..schema.objects import quote, quote_literal

__all__ = [
    "HATCH_SCHEMA",
    "RunRoles",
    "create_logins",
    "drop_owned",
    "drop_roles",
    "install_hatch",
    "run_role_names",
    "superuser_rows",
]

#: The schema of the superuser's way in (one per test database).
HATCH_SCHEMA = "sa_patterns_testing"


def run_role_names(worker: str) -> RoleNames:
    """Role names no other run (nor another worker of this one) uses."""
    stem = f"sap_{secrets.token_hex(4)}_{worker}"[:50]
    return RoleNames(owner=f"{stem}_owner", app=f"{stem}_app", admin=f"{stem}_admin")


@dataclass(frozen=True)
class RunRoles:
    """The run's three logins: their names and passwords."""

    names: RoleNames
    passwords: dict[str, str] = field(repr=False)

    @property
    def owner(self) -> str:
        return self.names.owner

    @property
    def app(self) -> str:
        return self.names.app

    @property
    def admin(self) -> str:
        return self.names.admin

    def url(self, base: URL, role: str) -> URL:
        """``base`` (the superuser's URL of the test database) logging in as ``role``."""
        return base.set(username=role, password=self.passwords[role])


_EXISTS = text("SELECT rolname FROM pg_catalog.pg_roles WHERE rolname IN :names").bindparams(
    bindparam("names", expanding=True)
)


def create_logins(admin_url: URL, names: RoleNames) -> RunRoles:
    """Create (or, made ``NOLOGIN`` by an earlier ``create_all``, give a login to) the three
    roles on the server of ``admin_url``, a superuser's URL of the test database."""
    passwords = {role: secrets.token_urlsafe(24) for role in (names.owner, names.app, names.admin)}
    engine = create_engine(admin_url)
    try:
        with engine.begin() as conn:
            database = conn.execute(text("SELECT current_database()")).scalar_one()
            existing = set(conn.execute(_EXISTS, {"names": list(passwords)}).scalars())
            for role, password in passwords.items():
                verb = "ALTER" if role in existing else "CREATE"
                conn.exec_driver_sql(
                    f"{verb} ROLE {quote(role)} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB "
                    f"NOCREATEROLE PASSWORD {quote_literal(password)}"
                )
            # the owner builds schemas (and trusted extensions, which PostgreSQL places in public)
            conn.execute(text(f"GRANT CREATE ON DATABASE {quote(database)} TO {quote(names.owner)}"))
            conn.execute(text(f"GRANT CREATE ON SCHEMA public TO {quote(names.owner)}"))
    except Exception as exc:
        raise ConfigurationError(
            f"sa_patterns: cannot create the test roles {names.owner}, {names.app} and "
            f"{names.admin} as {admin_url.username!r} ({type(exc).__name__}: {exc}). The plugin "
            "needs a superuser in DATABASE_URL (the embedded server's is one), or opt out with "
            "`sa_patterns_app_role = false` in the pytest ini."
        ) from exc
    finally:
        engine.dispose()
    return RunRoles(names, passwords)


_DEPENDENT_DATABASES = text(
    "SELECT DISTINCT d.datname FROM pg_catalog.pg_shdepend s "
    "JOIN pg_catalog.pg_database d ON d.oid = s.dbid "
    "WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass "
    "AND s.refobjid IN (SELECT oid FROM pg_catalog.pg_roles WHERE rolname IN :names) ORDER BY 1"
).bindparams(bindparam("names", expanding=True))


def drop_owned(database: URL, names: RoleNames) -> None:
    """``DROP OWNED BY`` the three roles in one database (a superuser's URL of it): what they
    own there goes, and so do their privileges there."""
    engine = create_engine(database)
    try:
        with engine.begin() as conn:
            present = list(conn.execute(_EXISTS, {"names": list(_three(names))}).scalars())
            # one statement per role: "DROP OWNED BY a, b" fails with "could not find tuple for
            # default ACL" when a's default privileges grant to b (the owner's ones to the app)
            for role in present:
                conn.exec_driver_sql("DROP OWNED BY " + quote(role))
    finally:
        engine.dispose()


def drop_roles(server_url: URL, names: RoleNames) -> None:
    """The three roles dropped, after ``DROP OWNED BY`` in every database still holding
    something of theirs (a superuser's URL of the server)."""
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            databases = list(conn.execute(_DEPENDENT_DATABASES, {"names": list(_three(names))}).scalars())
            for name in databases:
                drop_owned(server_url.set(database=name), names)
            for role in conn.execute(_EXISTS, {"names": list(_three(names))}).scalars():
                conn.exec_driver_sql(f"DROP ROLE {quote(role)}")
    finally:
        engine.dispose()


def _three(names: RoleNames) -> tuple[str, str, str]:
    return (names.owner, names.app, names.admin)


def install_hatch(admin_url: URL, roles: RunRoles, secret: str) -> None:
    """The superuser's function for :func:`superuser_rows`, callable by the app role with
    ``secret`` only (its digest is in the function; the secret stays in the test process)."""
    digest = quote_literal(_digest(secret))
    engine = create_engine(admin_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {HATCH_SCHEMA}"))
            conn.execute(text(f"REVOKE ALL ON SCHEMA {HATCH_SCHEMA} FROM PUBLIC"))
            conn.execute(text(f"GRANT USAGE ON SCHEMA {HATCH_SCHEMA} TO {quote(roles.app)}"))
            # No SET search_path: the statement runs on the caller's (the test module's schema).
            # A statement returning rows is opened as a cursor: planned, its privileges and
            # row-level security checked as the superuser, its rows fetched by the caller.
            conn.execute(text(
                f"CREATE OR REPLACE FUNCTION {HATCH_SCHEMA}.superuser_run(secret text, statement text)\n"
                "RETURNS refcursor LANGUAGE plpgsql SECURITY DEFINER AS $sa_patterns$\n"
                "DECLARE rows refcursor;\n"
                "BEGIN\n"
                f"  IF md5(secret) IS DISTINCT FROM {digest} THEN\n"
                "    RAISE EXCEPTION 'sa_patterns: only the test run that made it may use the superuser_sql fixture'\n"
                "      USING ERRCODE = 'insufficient_privilege';\n"
                "  END IF;\n"
                "  BEGIN\n"
                "    OPEN rows FOR EXECUTE statement;\n"
                "  EXCEPTION WHEN invalid_cursor_definition THEN\n"
                "    EXECUTE statement;  -- no rows to return (DDL, DML without RETURNING)\n"
                "    RETURN NULL;\n"
                "  END;\n"
                "  RETURN rows;\n"
                "END $sa_patterns$"
            ))
            signature = f"{HATCH_SCHEMA}.superuser_run(text, text)"
            conn.execute(text(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC"))
            conn.execute(text(f"GRANT EXECUTE ON FUNCTION {signature} TO {quote(roles.app)}"))
    finally:
        engine.dispose()


def _digest(secret: str) -> str:
    import hashlib

    return hashlib.md5(secret.encode(), usedforsecurity=False).hexdigest()


_RUN = text(f"SELECT {HATCH_SCHEMA}.superuser_run(:secret, :statement)")


def superuser_rows(
    connection: Connection, secret: str, statement: str, params: dict[str, Any]
) -> list[Row[Any]]:
    """Run ``statement`` (``:name`` parameters) as the superuser inside ``connection``'s
    transaction; its rows, or ``[]`` for a statement returning none."""
    import psycopg

    compiled = text(statement).compile(dialect=connection.dialect)
    raw = connection.connection.driver_connection
    if not isinstance(raw, psycopg.Connection):
        raise ConfigurationError("superuser_sql needs a psycopg (3) connection.")
    bound = compiled.construct_params(params)
    rendered = psycopg.ClientCursor(raw).mogrify(compiled.string, bound)
    name = connection.execute(_RUN, {"secret": secret, "statement": rendered}).scalar()
    if name is None:
        return []
    cursor = quote(name)
    rows = list(connection.exec_driver_sql(f"FETCH ALL FROM {cursor}"))
    connection.exec_driver_sql(f"CLOSE {cursor}")
    return rows
