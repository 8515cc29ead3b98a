"""Fixtures of the tenancy tests: cluster-wide roles (unique per run) and the tables."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import URL, Engine, create_engine, text
from tenancy_models import ADMIN_ROLE, APP_ROLE, Base

import sa_patterns
from sa_patterns.schema import quote


@pytest.fixture(scope="session")
def tenancy_roles(pg_url: URL) -> Iterator[tuple[str, str]]:
    """A NOBYPASSRLS, non-owner app role and an admin role, created idempotently."""
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        for role in (APP_ROLE, ADMIN_ROLE):
            exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
            if not exists:
                conn.execute(text(f"CREATE ROLE {quote(role)} LOGIN NOSUPERUSER NOBYPASSRLS"))
    try:
        yield APP_ROLE, ADMIN_ROLE
    finally:
        with admin.begin() as conn:
            for role in (APP_ROLE, ADMIN_ROLE):
                conn.execute(text(f"DROP OWNED BY {quote(role)}"))
                conn.execute(text(f"DROP ROLE IF EXISTS {quote(role)}"))
        admin.dispose()


def grant(conn: object, schema: str) -> None:
    for role in (APP_ROLE, ADMIN_ROLE):
        conn.execute(text(f"GRANT USAGE ON SCHEMA {quote(schema)} TO {quote(role)}"))  # type: ignore[attr-defined]
        conn.execute(  # type: ignore[attr-defined]
            text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {quote(schema)} TO {quote(role)}")
        )


@pytest.fixture(scope="module")
def tenancy_tables(engine: Engine, db_schema: str, tenancy_roles: tuple[str, str]) -> Engine:
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)
        grant(conn, db_schema)
    return engine
