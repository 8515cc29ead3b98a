"""The owner role's connection and sessions for the views tests: DDL, migrations, hand-made
materialized views (PostgreSQL refreshes one only for its owner) and catalog checks. The
application's work goes through the plugin's ``connection``/``session``, the app role's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import URL, Connection, Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

import sa_patterns
from sa_patterns.testing.logins import RunRoles


@pytest.fixture
def owner_connection(owner_engine: Engine) -> Iterator[Connection]:
    """The owner role's connection inside an outer transaction rolled back after the test."""
    with owner_engine.connect() as conn:
        outer = conn.begin()
        try:
            yield conn
        finally:
            if outer.is_active:
                outer.rollback()


@pytest.fixture
def owner_session(owner_connection: Connection) -> Iterator[Session]:
    """An installed session of the owner role, joined to ``owner_connection`` by savepoints."""
    factory = sa_patterns.install(sessionmaker(bind=owner_connection, join_transaction_mode="create_savepoint"))
    with factory() as s:
        yield s


@pytest.fixture
async def owner_async_session(pg_url: URL, db_roles: RunRoles, db_schema: str) -> AsyncIterator[AsyncSession]:
    """The owner role's installed async session, inside an outer transaction rolled back after
    the test."""
    url = db_roles.url(pg_url, db_roles.owner)
    engine = create_async_engine(url, connect_args={"options": f"-csearch_path={db_schema},public"})
    try:
        async with engine.connect() as conn:
            outer = await conn.begin()
            factory = sa_patterns.install(
                async_sessionmaker(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
            )
            try:
                async with factory() as s:
                    yield s
            finally:
                if outer.is_active:
                    await outer.rollback()
    finally:
        await engine.dispose()
