"""pytest plugin (entry point ``pytest11``): a real PostgreSQL for every test run.

Fixtures, widest scope first:

``pg_server``      session  the server (``DATABASE_URL`` or an embedded cluster started for the run)
``pg_url``         session  a fresh database created for this run (per xdist worker), dropped after
``db_schema``      module   a fresh schema for the test module, dropped after
``engine``         module   an engine whose connections use ``db_schema`` first on the search path
``connection``     function a connection inside an outer transaction, rolled back after the test
``session``        function an installed ``Session`` joined to ``connection`` through savepoints
``async_engine`` / ``async_connection`` / ``async_session``: the same for asyncio
``sql``            function run raw SQL on ``connection`` and get rows back (catalog checks)
``query_counter``  function a started :class:`~sa_patterns.nplusone.QueryCounter` on ``connection``
``nplusone``       function ``with nplusone(max_statements=3): ...`` fails on N+1 lazy loads
``factories``      function :class:`~sa_patterns.testing.factories.Factories` on ``session``
                            (seed 0, or ``@pytest.mark.sa_patterns_seed(42)``)
``async_factories`` function the same on ``async_session`` (``await f.create(...)``)

The database is never mocked and a missing server is never a skip: without ``DATABASE_URL`` the
embedded server starts, and without that the run fails with a ConfigurationError.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

import pytest
from sqlalchemy import URL, Connection, Engine, Row, create_engine, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from ..database import Server, scratch_database, server
from ..install import install
from ..nplusone import QueryCounter, nplusone_guard
from .factories import AsyncFactories, Factories

__all__ = ["SQL", "NPlusOneGuard"]


class SQL(Protocol):
    """The ``sql`` fixture: ``sql("SELECT ... WHERE x = :x", x=1)`` → list of rows."""

    def __call__(self, statement: str, /, **params: Any) -> list[Row[Any]]: ...


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sa_patterns: test uses the sa_patterns database fixtures")
    config.addinivalue_line(
        "markers", "sa_patterns_seed(n): the seed of the factories fixture for this test"
    )


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    srv = server()
    try:
        yield srv
    finally:
        if srv.stop is not None:
            srv.stop()


@pytest.fixture(scope="session")
def pg_url(pg_server: Server, request: pytest.FixtureRequest) -> Iterator[URL]:
    # One database per run and per xdist worker ("main" without xdist).
    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    with scratch_database(pg_server.url, prefix=f"sap_test_{worker}") as url:
        yield url


def _schema_name(request: pytest.FixtureRequest) -> str:
    base = request.module.__name__.rsplit(".", 1)[-1] if request.module else "tests"
    return re.sub(r"[^a-z0-9_]", "_", f"t_{base}".lower())[:60]


@pytest.fixture(scope="module")
def db_schema(pg_url: URL, request: pytest.FixtureRequest) -> Iterator[str]:
    name = _schema_name(request)
    admin = create_engine(pg_url)
    quoted = admin.dialect.identifier_preparer.quote(name)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {quoted} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {quoted}"))
    try:
        yield name
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {quoted} CASCADE"))
        admin.dispose()


def _search_path(schema: str) -> dict[str, Any]:
    return {"options": f"-csearch_path={schema},public"}


@pytest.fixture(scope="module")
def engine(pg_url: URL, db_schema: str) -> Iterator[Engine]:
    eng = create_engine(pg_url, connect_args=_search_path(db_schema))
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            yield conn
        finally:
            if outer.is_active:
                outer.rollback()


@pytest.fixture
def session_factory(connection: Connection) -> sessionmaker[Session]:
    factory = sessionmaker(bind=connection, join_transaction_mode="create_savepoint")
    install(factory)
    return factory


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as s:
        yield s


@pytest.fixture
def sql(connection: Connection) -> SQL:
    def run(statement: str, /, **params: Any) -> list[Row[Any]]:
        result = connection.execute(text(statement), params)
        return list(result) if result.returns_rows else []

    return run


@pytest.fixture(scope="module")
async def async_engine(pg_url: URL, db_schema: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(pg_url, connect_args=_search_path(db_schema))
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
async def async_connection(async_engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with async_engine.connect() as conn:
        outer = await conn.begin()
        try:
            yield conn
        finally:
            if outer.is_active:
                await outer.rollback()


@pytest.fixture
async def async_session(async_connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    from sqlalchemy.ext.asyncio import async_sessionmaker

    factory = async_sessionmaker(
        bind=async_connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    install(factory)
    async with factory() as s:
        yield s


@pytest.fixture
def query_counter(connection: Connection) -> Iterator[QueryCounter]:
    """Counts statements the test sends on ``connection`` (sessions on it included)."""
    with QueryCounter(connection) as counter:
        yield counter


class NPlusOneGuard(Protocol):
    """The ``nplusone`` fixture: ``with nplusone(max_statements=None, max_lazy_loads=1): ...``
    guards the test's ``session`` (or the session/async session passed first)."""

    def __call__(
        self,
        target: Session | AsyncSession | None = None,
        /,
        *,
        max_statements: int | None = None,
        max_lazy_loads: int = 1,
    ) -> AbstractContextManager[QueryCounter]: ...


@pytest.fixture
def nplusone(request: pytest.FixtureRequest) -> NPlusOneGuard:
    def guard(
        target: Session | AsyncSession | None = None,
        /,
        *,
        max_statements: int | None = None,
        max_lazy_loads: int = 1,
    ) -> AbstractContextManager[QueryCounter]:
        watched = target if target is not None else request.getfixturevalue("session")
        return nplusone_guard(watched, max_statements=max_statements, max_lazy_loads=max_lazy_loads)

    return guard


@pytest.fixture
def factories(session: Session, request: pytest.FixtureRequest) -> Factories:
    """Factories bound to the test's ``session``; deterministic per seed."""
    marker = request.node.get_closest_marker("sa_patterns_seed")
    return Factories(session, seed=int(marker.args[0]) if marker else 0)


@pytest.fixture
def async_factories(async_session: AsyncSession, request: pytest.FixtureRequest) -> AsyncFactories:
    """:class:`~sa_patterns.testing.factories.AsyncFactories` on ``async_session``."""
    marker = request.node.get_closest_marker("sa_patterns_seed")
    return AsyncFactories(async_session, seed=int(marker.args[0]) if marker else 0)


def pytest_report_header(config: pytest.Config) -> str:
    import os

    where = "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded PostgreSQL"
    return f"sa_patterns: tests run on {where}"
