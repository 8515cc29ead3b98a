"""Reliability: concurrent writers with real commits. Versions stay gap-free and unique, exactly
one writer wins at a given expected version, every loser gets a VersionConflict, and no
successful append is lost."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal

import pytest
from eventsourcing_models import BankEvent, Base, Deposited, Opened, events
from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker

from sa_patterns.eventsourcing import AsyncEventStore, EventStore, VersionConflict
from sa_patterns.schema import create_all

WRITERS = 16
AGGREGATES = 4
APPENDS_PER_WRITER = 12


@pytest.fixture(scope="module")
def writers_engine(pg_url: URL, db_schema: str, engine: Engine) -> Iterator[Engine]:
    with engine.begin() as conn:
        create_all(conn, Base.metadata)
    eng = create_engine(
        pg_url, pool_size=WRITERS + 2, connect_args={"options": f"-csearch_path={db_schema}"}
    )
    yield eng
    eng.dispose()


@pytest.fixture(autouse=True)
def clean(engine: Engine) -> Iterator[None]:
    yield
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE es_bank_events RESTART IDENTITY"))


def test_16_writers_on_4_aggregates_keep_versions_gap_free(writers_engine: Engine) -> None:
    factory = sessionmaker(writers_engine)
    start = threading.Barrier(WRITERS)
    succeeded: list[tuple[str, int, str]] = []
    conflicts: Counter[int] = Counter()
    attempts: Counter[int] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        try:
            start.wait()
            done = 0
            while done < APPENDS_PER_WRITER:
                aggregate = f"agg-{(w + done) % AGGREGATES}"
                tag = f"{w}:{done}"
                with factory() as session:
                    store = EventStore(session, BankEvent, registry=events)
                    expected = store.version(aggregate)
                    with lock:
                        attempts[w] += 1
                    try:
                        recorded = store.append(
                            aggregate, Deposited(Decimal(1), note=tag), expected_version=expected
                        )
                        session.commit()
                    except VersionConflict:
                        session.rollback()
                        with lock:
                            conflicts[w] += 1
                        continue
                with lock:
                    succeeded.append((aggregate, recorded[0].version, tag))
                done += 1
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

    with writers_engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT aggregate_id, version, data->>'note' AS tag FROM es_bank_events "
            "ORDER BY aggregate_id, version"
        )).all()
    # no event lost, none invented: the database holds exactly the successful appends
    assert sorted((r.aggregate_id, r.version, r.tag) for r in rows) == sorted(succeeded)
    assert len(rows) == WRITERS * APPENDS_PER_WRITER
    # per aggregate: versions 1..n, unique, no gaps
    per_aggregate: dict[str, list[int]] = {}
    for r in rows:
        per_aggregate.setdefault(r.aggregate_id, []).append(r.version)
    assert len(per_aggregate) == AGGREGATES
    for versions in per_aggregate.values():
        assert versions == list(range(1, len(versions) + 1))
    # every failed attempt was reported as a conflict, every other attempt landed
    assert sum(attempts.values()) == len(succeeded) + sum(conflicts.values())


def test_same_expected_version_exactly_one_wins(writers_engine: Engine) -> None:
    factory = sessionmaker(writers_engine)
    with factory.begin() as session:
        EventStore(session, BankEvent, registry=events).append(
            "race", Opened("r"), expected_version=0
        )
    read_done = threading.Barrier(WRITERS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        with factory() as session:
            store = EventStore(session, BankEvent, registry=events)
            expected = store.version("race")
            read_done.wait()  # everyone has read version 1 before anyone writes
            try:
                store.append("race", Deposited(Decimal(w)), expected_version=expected)
                session.commit()
                result = "won"
            except VersionConflict:
                session.rollback()
                result = "conflict"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(outcomes) == {"won": 1, "conflict": WRITERS - 1}
    with writers_engine.connect() as conn:
        assert conn.execute(text(
            "SELECT array_agg(version ORDER BY version) FROM es_bank_events "
            "WHERE aggregate_id = 'race'"
        )).scalar_one() == [1, 2]


async def test_async_writers_exactly_one_wins(pg_url: URL, db_schema: str, writers_engine: Engine) -> None:
    eng = create_async_engine(
        pg_url, pool_size=WRITERS + 2, connect_args={"options": f"-csearch_path={db_schema}"}
    )
    factory = async_sessionmaker(eng, expire_on_commit=False)
    try:
        async with factory.begin() as session:
            await AsyncEventStore(session, BankEvent, registry=events).append(
                "arace", Opened("a"), expected_version=0
            )
        have_read = 0
        everyone_read = asyncio.Event()  # asyncio.Barrier is 3.11+; the package supports 3.10

        async def writer(w: int) -> str:
            async with factory() as session:
                store = AsyncEventStore(session, BankEvent, registry=events)
                expected = await store.version("arace")
                nonlocal have_read
                have_read += 1
                if have_read == WRITERS:
                    everyone_read.set()
                await everyone_read.wait()
                try:
                    await store.append("arace", Deposited(Decimal(w)), expected_version=expected)
                    await session.commit()
                    return "won"
                except VersionConflict:
                    await session.rollback()
                    return "conflict"

        outcomes = await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        assert Counter(outcomes) == {"won": 1, "conflict": WRITERS - 1}
        async with eng.connect() as conn:
            versions = (await conn.execute(text(
                "SELECT array_agg(version ORDER BY version) FROM es_bank_events "
                "WHERE aggregate_id = 'arace'"
            ))).scalar_one()
        assert versions == [1, 2]
    finally:
        await eng.dispose()
