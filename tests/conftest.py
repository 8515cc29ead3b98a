"""The project's tests use the same pytest plugin users get (sa_patterns.testing.plugin, loaded
through its pytest11 entry point). Fixtures shared by several test packages live here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

import sa_patterns


@pytest.fixture
def admin_connection(admin_engine: Engine) -> Iterator[Connection]:
    """The admin role's connection inside an outer transaction rolled back after the test (the
    role that sees every tenant inside all_tenants())."""
    with admin_engine.connect() as conn:
        outer = conn.begin()
        try:
            yield conn
        finally:
            if outer.is_active:
                outer.rollback()


@pytest.fixture
def admin_session(admin_connection: Connection) -> Iterator[Session]:
    """An installed session of the admin role, joined to ``admin_connection`` by savepoints."""
    factory = sa_patterns.install(sessionmaker(bind=admin_connection, join_transaction_mode="create_savepoint"))
    with factory() as s:
        yield s
