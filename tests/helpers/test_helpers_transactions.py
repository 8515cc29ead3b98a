"""transaction(): isolation level, whole-unit re-runs on real serialization failures and a real
deadlock, never a retry for anything else. Uses committed data on the module's engine."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sa_patterns import ConcurrencyConflict, transaction
from sa_patterns.transactions import is_retryable


class Base(DeclarativeBase):
    pass


class Counter(Base):
    __tablename__ = "tx_counters"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int]


@pytest.fixture(scope="module", autouse=True)
def tables(engine: Engine) -> Iterator[None]:
    Base.metadata.create_all(engine)
    yield
    Base.metadata.drop_all(engine)


@pytest.fixture
def factory(engine: Engine) -> Iterator[sessionmaker[Session]]:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM tx_counters"))
        conn.execute(text("INSERT INTO tx_counters (id, value) VALUES (1, 0), (2, 0)"))
    yield sessionmaker(engine)


def values(engine: Engine) -> dict[int, int]:
    with engine.connect() as conn:
        return {r.id: r.value for r in conn.execute(text("SELECT id, value FROM tx_counters"))}


def test_isolation_level_is_set(factory: sessionmaker[Session]) -> None:
    @transaction(factory)
    def level(session: Session) -> str:
        return str(session.execute(text("SHOW transaction_isolation")).scalar())

    assert level() == "serializable"
    with transaction(factory, isolation_level="REPEATABLE READ") as session:
        assert session.execute(text("SHOW transaction_isolation")).scalar() == "repeatable read"


def test_serialization_failure_reruns_whole_unit(factory: sessionmaker[Session], engine: Engine) -> None:
    attempts: list[int] = []

    @transaction(factory, retries=3, base_delay=0.001)
    def increment(session: Session, by: int) -> int:
        attempts.append(1)
        current = session.scalar(select(Counter.value).where(Counter.id == 1))
        assert current is not None
        if len(attempts) == 1:  # a concurrent writer commits after our snapshot
            with engine.begin() as other:
                other.execute(text("UPDATE tx_counters SET value = value + 100 WHERE id = 1"))
        session.execute(update(Counter).where(Counter.id == 1).values(value=current + by))
        return current + by

    assert increment(1) == 101
    assert len(attempts) == 2
    assert values(engine)[1] == 101  # no lost update: the re-run saw the other write


def test_loop_form_reruns_block(factory: sessionmaker[Session], engine: Engine) -> None:
    runs = 0
    for attempt in transaction(factory, retries=2, base_delay=0.001):
        with attempt as session:
            runs += 1
            current = session.scalar(select(Counter.value).where(Counter.id == 2))
            if runs == 1:
                with engine.begin() as other:
                    other.execute(text("UPDATE tx_counters SET value = 7 WHERE id = 2"))
            session.execute(update(Counter).where(Counter.id == 2).values(value=(current or 0) + 1))
    assert runs == 2
    assert values(engine)[2] == 8


def test_real_deadlock_is_retried(
    factory: sessionmaker[Session], engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sa_patterns.transactions")
    barrier = threading.Barrier(2, timeout=10)
    attempts = {"a": 0, "b": 0}
    errors: list[BaseException] = []

    def worker(name: str, first: int, second: int) -> None:
        @transaction(factory, isolation_level="READ COMMITTED", retries=3, base_delay=0.001)
        def unit(session: Session) -> None:
            attempts[name] += 1
            session.execute(text("UPDATE tx_counters SET value = value + 1 WHERE id = :i"), {"i": first})
            if attempts[name] == 1:
                barrier.wait()  # both hold their first lock: the second UPDATE deadlocks
            session.execute(text("UPDATE tx_counters SET value = value + 10 WHERE id = :i"), {"i": second})

        try:
            unit()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=("a", 1, 2)),
               threading.Thread(target=worker, args=("b", 2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    # The victim's retry can race the winner for the row the victim just released and
    # deadlock again, so the count of re-runs is not fixed; what is fixed is that at least
    # one deadlock happened, each was retried, and every unit landed exactly once.
    retries = [r.getMessage() for r in caplog.records if r.name == "sa_patterns.transactions"]
    assert retries and all(m.endswith("SQLSTATE 40P01") for m in retries), retries
    assert sum(attempts.values()) == 2 + len(retries)
    assert values(engine) == {1: 11, 2: 11}  # both units fully applied, exactly once


def test_non_retryable_errors_run_once(factory: sessionmaker[Session], engine: Engine) -> None:
    runs = 0

    @transaction(factory, retries=5)
    def duplicate(session: Session) -> None:
        nonlocal runs
        runs += 1
        session.execute(text("INSERT INTO tx_counters (id, value) VALUES (1, 0)"))

    with pytest.raises(IntegrityError) as info:
        duplicate()
    assert runs == 1 and not is_retryable(info.value)

    @transaction(factory)
    def broken(session: Session) -> None:
        nonlocal runs
        runs += 1
        session.execute(text("UPDATE tx_counters SET value = 99 WHERE id = 1"))
        raise ValueError("application error")

    with pytest.raises(ValueError):
        broken()
    assert runs == 2
    assert values(engine)[1] == 0  # rolled back


def test_retries_exhausted(factory: sessionmaker[Session], engine: Engine) -> None:
    runs = 0

    @transaction(factory, retries=2, base_delay=0.001)
    def always_conflicts(session: Session) -> None:
        nonlocal runs
        runs += 1
        session.scalar(select(Counter.value).where(Counter.id == 1))
        with engine.begin() as other:
            other.execute(text("UPDATE tx_counters SET value = value + 1 WHERE id = 1"))
        session.execute(text("UPDATE tx_counters SET value = -1 WHERE id = 1"))

    with pytest.raises(ConcurrencyConflict, match=r"serialization failure \(SQLSTATE 40001\) after 3") as info:
        always_conflicts()
    assert runs == 3 and is_retryable(info.value.__cause__)  # type: ignore[arg-type]
    assert values(engine)[1] == 3


def test_single_attempt_block_reports_conflict(factory: sessionmaker[Session], engine: Engine) -> None:
    with pytest.raises(ConcurrencyConflict), transaction(factory) as session:
        session.scalar(select(Counter.value).where(Counter.id == 1))
        with engine.begin() as other:
            other.execute(text("UPDATE tx_counters SET value = 5 WHERE id = 1"))
        session.execute(text("UPDATE tx_counters SET value = 6 WHERE id = 1"))
    assert values(engine)[1] == 5
    with transaction(factory) as session:
        session.execute(text("UPDATE tx_counters SET value = 9 WHERE id = 2"))
    assert values(engine)[2] == 9  # committed on success


async def test_async_decorator_and_loop(factory: sessionmaker[Session], async_engine: AsyncEngine,
                                        engine: Engine) -> None:
    afactory = async_sessionmaker(async_engine)
    attempts = 0

    @transaction(afactory, retries=3, base_delay=0.001)
    async def increment(session: AsyncSession) -> int:
        nonlocal attempts
        attempts += 1
        current = await session.scalar(select(Counter.value).where(Counter.id == 1))
        assert current is not None
        level = (await session.execute(text("SHOW transaction_isolation"))).scalar()
        assert level == "serializable"
        if attempts == 1:
            with engine.begin() as other:
                other.execute(text("UPDATE tx_counters SET value = value + 100 WHERE id = 1"))
        await session.execute(update(Counter).where(Counter.id == 1).values(value=current + 1))
        return current + 1

    assert await increment() == 101 and attempts == 2
    runs = 0
    async for attempt in transaction(afactory, retries=1, base_delay=0.001):
        async with attempt as session:
            runs += 1
            await session.execute(text("UPDATE tx_counters SET value = value + 1 WHERE id = 2"))
    assert runs == 1
    async with transaction(afactory) as session:
        await session.execute(text("UPDATE tx_counters SET value = value + 1 WHERE id = 2"))
    assert values(engine) == {1: 101, 2: 2}


def test_mixing_sync_and_async_is_a_configuration_error(factory: sessionmaker[Session],
                                                         async_engine: AsyncEngine) -> None:
    from sa_patterns import ConfigurationError

    async def unit(session: AsyncSession) -> None: ...

    with pytest.raises(ConfigurationError, match="async_sessionmaker"):
        transaction(factory)(unit)
    with pytest.raises(ConfigurationError, match="were mixed"):
        transaction(async_sessionmaker(async_engine))(lambda session: None)
