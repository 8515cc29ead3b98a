"""The owner role's async session for the views tests (its sync connection and session are in
tests/conftest.py): DDL, migrations, hand-made materialized views (PostgreSQL refreshes one only
for its owner) and catalog checks. The application's work goes through the plugin's
``connection``/``session``, the app role's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

import sa_patterns
from sa_patterns.testing.logins import RunRoles


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
