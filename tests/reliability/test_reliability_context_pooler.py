"""The request context through PgBouncer in transaction mode: many clients, two server
connections, and never a tenant or actor seen by a transaction it was not set for."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import URL, Engine, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker

import sa_patterns

PROBE = text(
    "SELECT coalesce(current_setting('app.tenant_id', true), ''), "
    "coalesce(current_setting('app.actor_id', true), ''), pg_backend_pid()"
)


def test_threads_never_see_each_others_context(bouncer_engine: Engine) -> None:
    factory = sa_patterns.install(sessionmaker(bouncer_engine))
    wrong: list[tuple[object, ...]] = []
    backends: set[int] = set()
    lock = threading.Lock()

    def client(n: int) -> None:
        for i in range(25):
            if i % 5 == 4:  # a transaction with no scope must see nothing
                with factory() as s:
                    tenant, actor, pid = s.execute(PROBE).one()
                    if tenant or actor:
                        wrong.append((n, "unscoped", tenant, actor))
                continue
            with sa_patterns.tenant_scope(n), sa_patterns.actor_scope(f"u{n}"), factory() as s:
                tenant, actor, pid = s.execute(PROBE).one()
                s.execute(text("SELECT pg_sleep(0.001)"))
                again = s.execute(PROBE).one()
                s.commit()
            with lock:
                backends.add(pid)
            if (tenant, actor) != (str(n), f"u{n}") or again[:2] != (tenant, actor):
                wrong.append((n, tenant, actor, again))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(client, range(16)))
    assert wrong == []
    assert len(backends) <= 2, "PgBouncer multiplexed 16 clients over its 2 server connections"


async def test_asyncio_tasks_through_the_pooler(pgbouncer_url: URL) -> None:
    eng = create_async_engine(pgbouncer_url, pool_size=10, max_overflow=0, connect_args={"prepare_threshold": None})
    factory = sa_patterns.install(async_sessionmaker(eng))
    wrong: list[object] = []

    async def client(n: int) -> None:
        for _ in range(10):
            with sa_patterns.tenant_scope(f"t{n}"), sa_patterns.actor_scope(n):
                async with factory() as s:
                    tenant, actor, _pid = (await s.execute(PROBE)).one()
                    await asyncio.sleep(0)
                    if (tenant, actor) != (f"t{n}", str(n)):
                        wrong.append((n, tenant, actor))
            async with factory() as s:
                tenant, actor, _pid = (await s.execute(PROBE)).one()
                if tenant or actor:
                    wrong.append((n, "unscoped", tenant, actor))

    try:
        await asyncio.gather(*(client(n) for n in range(30)))
    finally:
        await eng.dispose()
    assert wrong == []
