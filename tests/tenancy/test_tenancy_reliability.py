"""Adversarial concurrency: many tenants interleaving reads and writes on a two-connection pool,
as the NOBYPASSRLS app role (the plugin's, on the schema its owner role built). Not one row of
another tenant may be seen or written; the superuser checks what was committed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import URL, Engine, MetaData, create_engine, func, select, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker
from tenancy_models import Base, Project, Task

import sa_patterns
from sa_patterns.testing.logins import RunRoles

ROUNDS = 5


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return Base.metadata


@pytest.fixture(scope="module")
def clean(superuser_engine: Engine) -> Iterator[Engine]:
    yield superuser_engine
    with superuser_engine.begin() as conn:
        conn.execute(text("TRUNCATE tn_tasks, tn_projects"))


@pytest.fixture(scope="module")
def app_url(pg_url: URL, db_roles: RunRoles) -> URL:
    """The app role's login (engines of their own: a two-connection pool)."""
    return db_roles.url(pg_url, db_roles.app)


def check_db(engine: Engine, tenants: range, per_tenant: int) -> None:
    """As the superuser: every tenant holds exactly its own rows."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT p.tenant_id, count(*), count(*) FILTER (WHERE p.id / 1000 <> p.tenant_id) "
            "FROM tn_projects p WHERE p.tenant_id = ANY(:t) GROUP BY p.tenant_id"),
            {"t": list(tenants)}).all()
        bad_tasks = conn.scalar(text(
            "SELECT count(*) FROM tn_tasks t JOIN tn_projects p ON p.id = t.project_id "
            "WHERE t.tenant_id <> p.tenant_id"))
    assert sorted(r[0] for r in rows) == list(tenants)
    assert all(r[1] == per_tenant and r[2] == 0 for r in rows), rows
    assert bad_tasks == 0


def test_thread_pool_keeps_tenants_apart(app_url: URL, db_schema: str, clean: Engine) -> None:
    engine = create_engine(app_url, connect_args={"options": f"-csearch_path={db_schema},public"},
                           pool_size=2, max_overflow=0)
    Session = sa_patterns.install(sessionmaker(engine))
    tenants = range(1, 9)
    seen_foreign: list[object] = []

    def worker(tenant: int) -> None:
        with sa_patterns.tenant_scope(tenant):
            for n in range(ROUNDS):
                with Session.begin() as s:
                    pid = tenant * 1000 + n
                    s.add(Project(id=pid, name=f"p{pid}", tasks=[Task(id=pid, title="t")]))
                with Session() as s:
                    for p in s.scalars(select(Project)):
                        if p.tenant_id != tenant:
                            seen_foreign.append(p)
                    raw = s.scalars(text("SELECT tenant_id FROM tn_projects")).all()
                    seen_foreign.extend(t for t in raw if t != tenant)
                    assert s.scalar(select(func.count()).select_from(Project)) == n + 1

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            for future in [pool.submit(worker, t) for t in tenants]:
                future.result()
    finally:
        engine.dispose()
    assert seen_foreign == []
    check_db(clean, tenants, ROUNDS)


async def test_hundred_asyncio_tasks_keep_tenants_apart(app_url: URL, db_schema: str, clean: Engine) -> None:
    engine = create_async_engine(app_url, connect_args={"options": f"-csearch_path={db_schema},public"},
                                 pool_size=2, max_overflow=0, pool_timeout=120)
    Session = sa_patterns.install(async_sessionmaker(engine, expire_on_commit=False))
    tenants = range(101, 201)
    seen_foreign: list[object] = []

    async def worker(tenant: int) -> None:
        with sa_patterns.tenant_scope(tenant):
            for n in range(2):
                async with Session.begin() as s:
                    pid = tenant * 1000 + n
                    s.add(Project(id=pid, name=f"p{pid}"))
                    await asyncio.sleep(0)  # let other tasks interleave mid-transaction
                    s.add(Task(id=pid, project_id=pid, title="t"))
                async with Session() as s:
                    rows = (await s.scalars(select(Project))).all()
                    await asyncio.sleep(0)
                    raw = (await s.scalars(text("SELECT tenant_id FROM tn_tasks"))).all()
                    seen_foreign.extend(p for p in rows if p.tenant_id != tenant)
                    seen_foreign.extend(t for t in raw if t != tenant)
                    assert len(rows) == n + 1

    try:
        await asyncio.gather(*(worker(t) for t in tenants))
    finally:
        await engine.dispose()
    assert seen_foreign == []
    check_db(clean, tenants, 2)
