"""A mixed load on a model using every pattern at once, and the invariants it must leave.

Workers (threads and asyncio tasks, each with its own tenant and actor) insert, update,
soft-delete, search and read ``LoadDoc`` rows. Afterwards :func:`invariants` checks by SQL that
the audit log holds exactly one entry per change made, no row crossed tenants, every
ciphertext decrypts, and every search vector equals its recomputation.

Used by ``bench/bench_load.py`` (60 s, throughput and latency) and by the reliability tests
(a few seconds, invariants only).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import URL, Engine, create_engine, select, text, update
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import sa_patterns
from sa_patterns import Audited, EncryptedString, Keyring, Searchable, SoftDeleteMixin, TenantMixin

_KEY = hashlib.sha256(b"sa_patterns load test key - not a secret").digest()
RING = Keyring({"load": _KEY}, active="load")
WORDS = ["postgres", "trigger", "tenant", "audit", "vector", "cipher", "index", "search", "policy", "pool", "batch"]


class Base(DeclarativeBase):
    pass


class LoadDoc(SoftDeleteMixin, TenantMixin, Audited, Searchable, Base):
    __tablename__ = "load_docs"
    __searchable__ = {"title": "A", "body": "B"}
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    body: Mapped[str]
    secret: Mapped[str] = mapped_column(EncryptedString(RING))


@dataclass
class LoadResult:
    seconds: float
    changes: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def record(self, op: str, elapsed: float) -> None:
        self.latencies.setdefault(op, []).append(elapsed)

    def summary(self) -> dict[str, tuple[int, float, float]]:
        """op -> (count, p50 ms, p99 ms)."""
        out = {}
        for op, values in sorted(self.latencies.items()):
            q = statistics.quantiles(values, n=100) if len(values) > 1 else [values[0]] * 99
            out[op] = (len(values), statistics.median(values) * 1000, q[98] * 1000)
        return out


def create_schema(engine: Engine) -> None:
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(6))


class _Worker:
    """State of one worker: its tenant, the ids it created and which are live."""

    def __init__(self, tenant: int, seed: int, result: LoadResult, lock: threading.Lock) -> None:
        self.tenant = tenant
        self.rng = random.Random(seed)
        self.live: list[int] = []
        self.deleted: list[int] = []
        self.next = tenant * 1_000_000
        self.result = result
        self.lock = lock
        self.version = 0

    def pick(self) -> str:
        roll = self.rng.random()
        if not self.live or roll < 0.30:
            return "insert"
        if roll < 0.50:
            return "update"
        if roll < 0.60:
            return "soft_delete"
        if roll < 0.80:
            return "search"
        return "read"

    def done(self, op: str, elapsed: float, changed: bool) -> None:
        with self.lock:
            self.result.record(op, elapsed)
            if changed:
                self.result.changes[op] += 1

    def statement(self, op: str) -> tuple[Any, bool]:
        """The statement for ``op`` and whether it changes exactly one row."""
        if op == "insert":
            self.next += 1
            self.live.append(self.next)
            return LoadDoc(id=self.next, title=_text(self.rng), body=_text(self.rng), secret=f"s-{self.next}"), True
        if op == "update":
            self.version += 1
            target = self.rng.choice(self.live)
            return update(LoadDoc).where(LoadDoc.id == target).values(title=f"{_text(self.rng)} v{self.version}"), True
        if op == "soft_delete":
            target = self.live.pop(self.rng.randrange(len(self.live)))
            self.deleted.append(target)
            return target, True
        if op == "search":
            return LoadDoc.search(self.rng.choice(WORDS)).limit(10), False
        return select(LoadDoc).where(LoadDoc.id.in_(self.rng.sample(self.live, min(5, len(self.live))))), False


def _sync_worker(factory: sessionmaker[Any], worker: _Worker, deadline: float) -> None:
    while time.monotonic() < deadline:
        op = worker.pick()
        stmt, changes = worker.statement(op)
        started = time.perf_counter()
        try:
            scope = (sa_patterns.tenant_scope(worker.tenant), sa_patterns.actor_scope(f"w{worker.tenant}"))
            with scope[0], scope[1], factory.begin() as s:
                if op == "insert":
                    s.add(stmt)
                elif op == "soft_delete":
                    s.get(LoadDoc, stmt).soft_delete()
                elif op in ("search", "read"):
                    for doc in s.scalars(stmt):
                        _ = doc.secret  # decrypt on the read path
                else:
                    s.execute(stmt)
        except Exception as exc:  # counted: a test asserts there are none
            worker.result.errors.append(f"{op}: {type(exc).__name__}: {exc}"[:300])
            continue
        worker.done(op, time.perf_counter() - started, changes)


async def _async_worker(factory: async_sessionmaker[Any], worker: _Worker, deadline: float) -> None:
    while time.monotonic() < deadline:
        op = worker.pick()
        stmt, changes = worker.statement(op)
        started = time.perf_counter()
        try:
            with sa_patterns.tenant_scope(worker.tenant), sa_patterns.actor_scope(f"w{worker.tenant}"):
                async with factory.begin() as s:
                    if op == "insert":
                        s.add(stmt)
                    elif op == "soft_delete":
                        (await s.get(LoadDoc, stmt)).soft_delete()
                    elif op in ("search", "read"):
                        for doc in (await s.scalars(stmt)).all():
                            _ = doc.secret
                    else:
                        await s.execute(stmt)
        except Exception as exc:
            worker.result.errors.append(f"{op}: {type(exc).__name__}: {exc}"[:300])
            continue
        worker.done(op, time.perf_counter() - started, changes)


def run_load(url: URL, *, seconds: float, threads: int = 4, tasks: int = 4, seed: int = 7) -> LoadResult:
    """Run the mixed load for ``seconds`` with ``threads`` sync workers and ``tasks`` asyncio
    workers, each its own tenant (1..threads+tasks)."""
    result = LoadResult(seconds)
    lock = threading.Lock()
    engine = create_engine(url, pool_size=threads, max_overflow=0)
    factory = sa_patterns.install(sessionmaker(engine))
    deadline = time.monotonic() + seconds

    async def async_side() -> None:
        aengine = create_async_engine(url, pool_size=tasks, max_overflow=0)
        afactory = sa_patterns.install(async_sessionmaker(aengine, expire_on_commit=False))
        workers = [_Worker(threads + i + 1, seed + threads + i, result, lock) for i in range(tasks)]
        await asyncio.gather(*(_async_worker(afactory, w, deadline) for w in workers))
        await aengine.dispose()

    pool = [
        threading.Thread(target=_sync_worker, args=(factory, _Worker(i + 1, seed + i, result, lock), deadline))
        for i in range(threads)
    ]
    pool.append(threading.Thread(target=lambda: asyncio.run(async_side())))
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    engine.dispose()
    return result


_VECTOR = (
    "setweight(to_tsvector('english'::regconfig, coalesce(title, '')), 'A') || "
    "setweight(to_tsvector('english'::regconfig, coalesce(body, '')), 'B')"
)


def invariants(url: URL, result: LoadResult) -> list[str]:
    """What must hold after the load, checked by SQL; returns the violations."""
    problems: list[str] = []
    engine = create_engine(url)
    with engine.connect() as conn:
        logged = dict(
            conn.execute(
                text("SELECT operation, count(*) FROM audit_log WHERE table_name LIKE '%load_docs' GROUP BY 1")
            ).all()
        )
        made = {"INSERT": result.changes["insert"], "UPDATE": result.changes["update"],
                "SOFT_DELETE": result.changes["soft_delete"]}
        if {k: v for k, v in logged.items() if v} != {k: v for k, v in made.items() if v}:
            problems.append(f"audit log {logged} != changes made {made}")
        crossed = conn.execute(text("SELECT count(*) FROM load_docs WHERE id / 1000000 <> tenant_id")).scalar()
        if crossed:
            problems.append(f"{crossed} rows in another tenant than their writer's")
        wrong_actor = conn.execute(
            text("SELECT count(*) FROM audit_log WHERE table_name LIKE '%load_docs' AND actor_id IS DISTINCT FROM 'w' || tenant_id")
        ).scalar()
        if wrong_actor:
            problems.append(f"{wrong_actor} audit rows with another worker's actor")
        stale = conn.execute(text(f"SELECT count(*) FROM load_docs WHERE search_vector IS DISTINCT FROM ({_VECTOR})")).scalar()
        if stale:
            problems.append(f"{stale} search vectors differ from their recomputation")
        deleted = conn.execute(text("SELECT count(*) FROM load_docs WHERE deleted_at IS NOT NULL")).scalar()
        if deleted != result.changes["soft_delete"]:
            problems.append(f"{deleted} soft-deleted rows, {result.changes['soft_delete']} soft deletes made")
    with sa_patterns.all_tenants(), sa_patterns.install(sessionmaker(engine))() as s:
        docs = s.scalars(select(LoadDoc).execution_options(include_deleted=True)).all()
        bad = [d.id for d in docs if d.secret != f"s-{d.id}"]
        if bad:
            problems.append(f"{len(bad)} ciphertexts did not decrypt to their value")
        if len(docs) != result.changes["insert"]:
            problems.append(f"{len(docs)} rows, {result.changes['insert']} inserts made")
    engine.dispose()
    return problems

