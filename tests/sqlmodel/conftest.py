"""The SQLModel tests run as the plugin's app role on the schema the toolkit builds from
``SQLModel.metadata`` (the app's tables; other tests declare SQLModel models on registries of
their own) as the owner role; sessions are SQLModel's own (``session.exec``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import Connection, MetaData
from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel_app import metadata

import sa_patterns


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return metadata


@pytest.fixture
def sessions(connection: Connection) -> sessionmaker[Session]:
    """An installed factory of SQLModel sessions joined to the test's connection."""
    return sa_patterns.install(
        sessionmaker(bind=connection, class_=Session, join_transaction_mode="create_savepoint")
    )


@pytest.fixture
def db(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as s:
        yield s


@pytest.fixture
async def async_db(async_connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    """An installed SQLModel ``AsyncSession`` joined to the test's async connection."""
    factory = sa_patterns.install(async_sessionmaker(
        bind=async_connection, class_=AsyncSession, join_transaction_mode="create_savepoint",
        expire_on_commit=False,
    ))
    async with factory() as s:
        yield s
