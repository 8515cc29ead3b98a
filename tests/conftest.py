"""The project's tests use the same pytest plugin users get (sa_patterns.testing.plugin, loaded
through its pytest11 entry point). Fixtures shared by several test packages live here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

import sa_patterns


@contextmanager
def rolled_back(engine: Engine) -> Iterator[Connection]:
    """A connection of ``engine`` inside an outer transaction rolled back at the end (what the
    plugin's ``connection`` fixture is for the app role)."""
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            yield conn
        finally:
            if outer.is_active:
                outer.rollback()


@contextmanager
def joined_session(connection: Connection) -> Iterator[Session]:
    """An installed session joined to ``connection`` by savepoints."""
    factory = sa_patterns.install(sessionmaker(bind=connection, join_transaction_mode="create_savepoint"))
    with factory() as s:
        yield s


@pytest.fixture
def admin_connection(admin_engine: Engine) -> Iterator[Connection]:
    """The admin role's connection inside an outer transaction rolled back after the test (the
    role that sees every tenant inside all_tenants())."""
    with rolled_back(admin_engine) as conn:
        yield conn


@pytest.fixture
def admin_session(admin_connection: Connection) -> Iterator[Session]:
    """An installed session of the admin role, joined to ``admin_connection`` by savepoints."""
    with joined_session(admin_connection) as s:
        yield s


@pytest.fixture
def owner_connection(owner_engine: Engine) -> Iterator[Connection]:
    """The owner role's connection inside an outer transaction rolled back after the test: DDL,
    migrations and what PostgreSQL lets only an owner do."""
    with rolled_back(owner_engine) as conn:
        yield conn


@pytest.fixture
def owner_session(owner_connection: Connection) -> Iterator[Session]:
    """An installed session of the owner role, joined to ``owner_connection`` by savepoints."""
    with joined_session(owner_connection) as s:
        yield s
