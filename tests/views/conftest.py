"""The owner role's connection and sessions for the views tests: DDL, migrations, hand-made
materialized views (PostgreSQL refreshes one only for its owner) and catalog checks. The
application's work goes through the plugin's ``connection``/``session``, the app role's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import URL, Connection, Engine, MetaData
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

import sa_patterns
from sa_patterns.schema import MaterializedView, View, qualified, quote, registered
from sa_patterns.testing.logins import RunRoles
from sa_patterns.views import MatviewRefresh


@pytest.fixture(scope="module")
def plugin_view_grants(sa_patterns_metadata: MetaData | list[MetaData], owner_engine: Engine, db_roles: RunRoles) -> None:
    """WORKAROUND for a plugin gap (reported, not fixed here): for models that manage no roles
    the plugin builds the schema with create_all and only then runs access_entities(), so the
    app role gets no SELECT on the models' views and materialized views (default privileges
    come after them, and its grants cover real tables only) and no EXECUTE on the refresh
    functions (made with no grantee: their roles are decided at create time), all of which
    manage_access() gives when the models call it. The owner grants exactly that, once per
    module; a no-op once the plugin grants it itself."""
    grantees = f"{quote(db_roles.app)}, {quote(db_roles.admin)}"
    models = [sa_patterns_metadata] if isinstance(sa_patterns_metadata, MetaData) else sa_patterns_metadata
    with owner_engine.begin() as conn:
        for entity in (e for md in models for e in registered(md)):
            if isinstance(entity, MatviewRefresh):
                conn.exec_driver_sql(f"GRANT EXECUTE ON FUNCTION {entity.signature()} TO {grantees}")
            elif isinstance(entity, (View, MaterializedView)):
                conn.exec_driver_sql(f"GRANT SELECT ON {qualified(entity.schema, entity.name)} TO {grantees}")


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
