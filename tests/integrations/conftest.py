"""The web integration tests run real requests (httpx's ASGI transport, Litestar's and Flask's
test clients) against apps whose endpoints use installed sessions of the plugin's app role
(NOSUPERUSER NOBYPASSRLS), on the schema the owner role built from :mod:`web_models`. Requests
commit, as an application's do; each test takes tenant ids of its own, so what it reads back as
the superuser (past row-level security) is its own rows."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker
from web_models import Base, Note

import sa_patterns

_next_tenant = itertools.count(1000)


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return Base.metadata


@pytest.fixture(scope="module")
def sessions(engine: Engine) -> sessionmaker[Session]:
    """The app's sync sessions: installed, on the app role's engine."""
    return sa_patterns.install(sessionmaker(engine))


@pytest.fixture(scope="module")
def async_sessions(async_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """The app's async sessions: installed, on the app role's engine."""
    return sa_patterns.install(async_sessionmaker(async_engine, expire_on_commit=False))


@pytest.fixture
def tenants(sessions: sessionmaker[Session]) -> tuple[int, int, int]:
    """Three tenant ids no other test uses, each seeded with two committed notes."""
    ids = (next(_next_tenant), next(_next_tenant), next(_next_tenant))
    for tenant in ids:
        with sa_patterns.tenant_scope(tenant), sessions.begin() as s:
            s.add_all([Note(body=f"seed {tenant} a"), Note(body=f"seed {tenant} b")])
    return ids


@dataclass(frozen=True)
class Written:
    """A note as the database holds it, with the audit entry of its INSERT."""

    tenant_id: int
    body: str
    actor_id: str | None
    request: dict[str, str] | None
    audit_tenant: str | None


@pytest.fixture
def written(superuser_engine: Engine, tenants: tuple[int, int, int]) -> Any:
    """``written(prefix)`` → every note of this test's tenants whose body starts with
    ``prefix``, read past row-level security, joined to its INSERT's audit entry."""

    def read(prefix: str) -> list[Written]:
        with superuser_engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT n.tenant_id, n.body, a.actor_id, a.request, a.tenant_id AS audit_tenant "
                    "FROM web_notes n LEFT JOIN audit_log a ON a.table_name LIKE '%.web_notes' "
                    "AND a.operation = 'INSERT' AND (a.primary_key->>'id')::bigint = n.id "
                    "WHERE n.tenant_id = ANY(:t) AND n.body LIKE :p ORDER BY n.id"
                ),
                {"t": list(tenants), "p": prefix + "%"},
            )
            return [Written(*row) for row in rows]

    return read


@pytest.fixture
def statements(engine: Engine, async_engine: AsyncEngine) -> Iterator[list[str]]:
    """Every statement the app role's engines send during the test."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    targets = (engine, async_engine.sync_engine)
    for target in targets:
        event.listen(target, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        for target in targets:
            event.remove(target, "before_cursor_execute", record)
