"""Fixtures of the isolation matrix: its tables, data and universes, once per test module, and
one connection (sync and async) per module with an installed session factory; each cell runs
inside a savepoint that is rolled back (harness.rolled_back)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

import sa_patterns

from .harness import drop_universes, setup_database


@pytest.fixture(scope="module")
def iso_db(engine: Engine, db_schema: str) -> Iterator[str]:
    """The matrix's tables in this module's schema, seeded and committed; returns the schema."""
    with engine.begin() as conn:
        setup_database(conn, db_schema)
    yield db_schema
    with engine.begin() as conn:
        drop_universes(conn, db_schema)


@pytest.fixture(scope="module")
def iso_connection(engine: Engine, iso_db: str) -> Iterator[Connection]:
    """A superuser connection (RLS does not bind it) in a transaction rolled back at the end."""
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            yield conn
        finally:
            if outer.is_active:
                outer.rollback()


@pytest.fixture(scope="module")
def iso_factory(iso_connection: Connection) -> sessionmaker[Session]:
    factory = sessionmaker(bind=iso_connection, join_transaction_mode="create_savepoint")
    return sa_patterns.install(factory)


@pytest.fixture(scope="module")
async def iso_async_connection(
    async_engine: AsyncEngine, iso_db: str
) -> AsyncIterator[AsyncConnection]:
    async with async_engine.connect() as conn:
        outer = await conn.begin()
        try:
            yield conn
        finally:
            if outer.is_active:
                await outer.rollback()


@pytest.fixture(scope="module")
def iso_async_factory(iso_async_connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    factory = async_sessionmaker(
        bind=iso_async_connection, join_transaction_mode="create_savepoint",
        expire_on_commit=False,
    )
    return sa_patterns.install(factory)
