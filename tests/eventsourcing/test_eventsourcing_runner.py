"""The catch-up runner: checkpointed batches, no skipped late commits, crash safety (a child
process SIGKILLed mid-batch), rebuild, LISTEN/NOTIFY wake-ups; sync and async."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from eventsourcing_models import (
    Account,
    Balance,
    BalanceReplica,
    BankEvent,
    Base,
    Checkpoint,
    Deposited,
    Opened,
    TenantBankEvent,
    TenantBase,
    TenantCheckpoint,
    TenantSeen,
    balance_projection,
    balances,
    events,
    tenant_projection,
)
from sqlalchemy import URL, Engine, create_engine, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session, sessionmaker

import sa_patterns
from sa_patterns import ConfigurationError
from sa_patterns.eventsourcing import (
    AsyncProjectionRunner,
    EventStore,
    Projection,
    ProjectionRunner,
)
from sa_patterns.schema import create_all

HERE = Path(__file__).parent


@pytest.fixture(scope="module", autouse=True)
def tables(engine: Engine) -> None:
    with engine.begin() as conn:
        create_all(conn, Base.metadata)
        create_all(conn, TenantBase.metadata)


@pytest.fixture(autouse=True)
def clean(engine: Engine) -> Iterator[None]:
    yield
    with engine.begin() as conn:
        conn.execute(text(
            "TRUNCATE es_bank_events, es_bank_snapshots, es_checkpoints, es_balances, "
            "es_balances_replica, es_tenant_events, es_tenant_checkpoints, es_tenant_seen "
            "RESTART IDENTITY"
        ))


def write_history(engine: Engine, *, accounts: int = 6, transactions: int = 40) -> dict[str, Decimal]:
    """Commits ``transactions`` transactions, some touching two accounts; returns balances."""
    rng = random.Random(7)
    factory = sessionmaker(engine)
    with factory.begin() as session:
        store = EventStore(session, BankEvent, registry=events)
        for a in range(accounts):
            account = store.load(Account, f"acc-{a}")
            account.open(f"owner-{a}")
            account.deposit(Decimal(100))
            store.save(account)
    for _ in range(transactions):
        with factory.begin() as session:
            store = EventStore(session, BankEvent, registry=events)
            for a in rng.sample(range(accounts), rng.choice([1, 2])):
                account = store.load(Account, f"acc-{a}")
                for _ in range(rng.randint(1, 3)):
                    if rng.random() < 0.6:
                        account.deposit(Decimal(rng.randint(1, 50)))
                    elif account.balance >= 10:
                        account.withdraw(Decimal(10))
                store.save(account)
    with factory() as session:
        store = EventStore(session, BankEvent, registry=events)
        return {f"acc-{a}": store.load(Account, f"acc-{a}").balance for a in range(accounts)}


def event_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM es_bank_events")).scalar_one())


def read_model(engine: Engine, model: type = Balance) -> dict[str, tuple[Decimal, int, int]]:
    with Session(engine) as session:
        return balances(session, model)


def runner_for(engine: Engine, *projections: Projection, batch_size: int = 7) -> ProjectionRunner:
    return ProjectionRunner(
        engine, BankEvent, checkpoints=Checkpoint, registry=events,
        projections=list(projections) or [balance_projection()], batch_size=batch_size,
    )


def test_catch_up_applies_each_event_once_and_is_idempotent(engine: Engine) -> None:
    expected = write_history(engine)
    runner = runner_for(engine)
    total = event_count(engine)
    assert runner.catch_up() == total
    model = read_model(engine)
    assert {k: v[0] for k, v in model.items()} == expected
    assert sum(v[1] for v in model.values()) == total
    assert runner.run_once() == 0 and runner.catch_up() == 0  # nothing applied twice
    assert read_model(engine) == model
    with engine.connect() as conn:
        cp = conn.execute(text("SELECT * FROM es_checkpoints")).one()
        last = conn.execute(text(
            "SELECT transaction_id, id FROM es_bank_events ORDER BY transaction_id DESC, id DESC LIMIT 1"
        )).one()
    assert (cp.name, cp.events_applied) == ("balances", total)
    assert (cp.transaction_id, cp.event_id) == tuple(last)
    assert runner.position("balances") == tuple(last)


def test_two_runners_on_one_projection_never_double_apply(engine: Engine) -> None:
    expected = write_history(engine, accounts=4, transactions=20)
    runners = [runner_for(engine, batch_size=3) for _ in range(2)]
    failures: list[BaseException] = []

    def go(runner: ProjectionRunner) -> None:
        try:
            runner.catch_up()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=go, args=(r,)) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    model = read_model(engine)
    assert {k: v[0] for k, v in model.items()} == expected
    assert sum(v[1] for v in model.values()) == event_count(engine)
    assert sum(r.stats["applied"] for r in runners) == event_count(engine)


def test_late_committing_transaction_is_not_skipped(engine: Engine) -> None:
    runner = runner_for(engine)
    factory = sessionmaker(engine)
    early = factory()
    try:
        # the early transaction takes its transaction id first, but commits last
        EventStore(early, BankEvent, registry=events).append(
            "late", balance_opened("late"), expected_version=0
        )
        with factory.begin() as session:
            EventStore(session, BankEvent, registry=events).append(
                "quick", balance_opened("quick"), expected_version=0
            )
        runner.run_once()
        # "quick" committed, but an older transaction is still open: not settled yet, and the
        # checkpoint must not move past it (that would skip "late" forever)
        assert "quick" not in read_model(engine)
        early.commit()
    finally:
        early.close()
    runner.catch_up()
    assert set(read_model(engine)) == {"late", "quick"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT events_applied FROM es_checkpoints")).scalar_one() == 2


def test_open_transaction_in_another_database_does_not_hold_back(engine: Engine, pg_url: URL) -> None:
    other = create_engine(pg_url.set(database="postgres"))
    try:
        with other.connect() as conn, conn.begin():
            conn.execute(text("SELECT pg_current_xact_id()"))  # an xid, held open meanwhile
            with sessionmaker(engine).begin() as session:
                EventStore(session, BankEvent, registry=events).append(
                    "now", balance_opened("n"), expected_version=0
                )
            # run_once, not catch_up: no waiting, the other database's transaction is ignored
            # (a transaction left open in *this* database would hold it back, see above)
            runner = runner_for(engine)
            applied = 0
            deadline = time.monotonic() + 60
            while not applied and time.monotonic() < deadline:
                applied = runner.run_once()  # (only our own database's other tests can delay it)
            assert applied == 1 and "now" in read_model(engine)
    finally:
        other.dispose()


def balance_opened(owner: str) -> object:
    return Opened(owner)


def test_runner_applies_each_event_under_its_tenant(engine: Engine) -> None:
    """Read models under row-level security see app.tenant_id = the event's tenant."""
    factory = sa_patterns.install(sessionmaker(engine))
    for round_ in range(3):
        for tenant in (7, 8):
            with sa_patterns.tenant_scope(tenant), factory.begin() as session:
                EventStore(session, TenantBankEvent, registry=events).append(
                    "shared-id", [Opened(f"{tenant}-{round_}")], expected_version=round_
                )
    runner = ProjectionRunner(engine, TenantBankEvent, checkpoints=TenantCheckpoint,
                              registry=events, projections=[tenant_projection()], batch_size=4)
    assert runner.catch_up() == 6
    with Session(engine) as session:
        seen = session.execute(select(TenantSeen.tenant_id, TenantSeen.setting)).all()
    assert sorted(seen) == [(7, "7")] * 3 + [(8, "8")] * 3


def test_killed_mid_batch_resumes_to_the_same_read_model(engine: Engine, pg_url: URL, db_schema: str) -> None:
    write_history(engine, accounts=5, transactions=30)
    total = event_count(engine)
    batch_size, crash_after = 10, 25  # two batches committed, the third dies half way
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, str(HERE / "eventsourcing_crash_child.py"),
         pg_url.render_as_string(hide_password=False), db_schema, str(batch_size), str(crash_after)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        assert line == "CRASH-POINT", child.stderr.read() if child.stderr else line
        # mid-batch: two batches are committed, the third one's writes are invisible
        with engine.connect() as conn:
            assert conn.execute(text("SELECT events_applied FROM es_checkpoints")).scalar_one() == 20
        assert sum(v[1] for v in read_model(engine).values()) == 20
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
        if child.stdout:
            child.stdout.close()
        if child.stderr:
            child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    restarted = runner_for(engine, balance_projection(), batch_size=batch_size)
    restarted.catch_up()
    uninterrupted = runner_for(engine, balance_projection("replica", BalanceReplica), batch_size=batch_size)
    uninterrupted.catch_up()
    resumed = read_model(engine)
    assert resumed == read_model(engine, BalanceReplica)
    assert sum(v[1] for v in resumed.values()) == total  # nothing skipped, nothing applied twice
    with engine.connect() as conn:
        applied = dict(conn.execute(text("SELECT name, events_applied FROM es_checkpoints")).all())
    assert applied == {"balances": total, "replica": total}


def test_rebuild_replays_from_scratch(engine: Engine) -> None:
    write_history(engine, accounts=3, transactions=10)
    runner = runner_for(engine)
    runner.catch_up()
    good = read_model(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE es_balances SET balance = -1, events = 999"))
        conn.execute(text("INSERT INTO es_balances VALUES ('ghost', 1, 1, 1)"))
    assert runner.rebuild("balances") == event_count(engine)
    assert read_model(engine) == good
    with engine.connect() as conn:
        assert conn.execute(text("SELECT events_applied FROM es_checkpoints")).scalar_one() == event_count(engine)


def test_rebuild_waits_for_an_older_transaction_instead_of_skipping(engine: Engine) -> None:
    """Events committed after an older transaction that is still open are held back from a
    pass (that one may still commit events before them); rebuild waits, like catch_up."""
    write_history(engine, accounts=2, transactions=3)
    runner = runner_for(engine)
    runner.catch_up()
    with engine.connect() as blocker:
        older = blocker.begin()
        blocker.execute(text("SELECT pg_current_xact_id()"))  # an xid older than what follows
        with sessionmaker(engine).begin() as session:
            EventStore(session, BankEvent, registry=events).append("late-1", Opened("late"), expected_version=0)
        finish = threading.Timer(0.5, older.rollback)
        finish.start()
        try:
            replayed = runner.rebuild("balances")
        finally:
            finish.join()
    assert replayed == event_count(engine)
    assert "late-1" in read_model(engine)


def test_notify_is_sent_at_commit_only(engine: Engine) -> None:
    raw = engine.raw_connection()
    listener = raw.driver_connection
    raw.detach()
    try:
        listener.autocommit = True
        listener.execute("LISTEN es_bank_events")
        factory = sessionmaker(engine)
        with factory() as session:
            EventStore(session, BankEvent, registry=events).append(
                "n-1", [Opened("a"), Opened("b")], expected_version=0
            )
            session.rollback()
        with factory.begin() as session:
            store = EventStore(session, BankEvent, registry=events)
            store.append("n-2", Opened("c"), expected_version=0)
            store.append("n-3", Opened("d"), expected_version=0)
        got = list(listener.notifies(timeout=30, stop_after=1))
        assert [n.channel for n in got] == ["es_bank_events"]  # one per transaction, none for the rollback
        assert list(listener.notifies(timeout=0.2)) == []
    finally:
        raw.close()


def test_failing_handler_rolls_its_batch_back_and_is_retried(engine: Engine) -> None:
    expected = write_history(engine, accounts=2, transactions=4)
    projection = balance_projection()
    failures_left = [1]

    @projection.on(Deposited)
    def _flaky(session: Session, recorded: object) -> None:
        if failures_left[0]:
            failures_left[0] -= 1
            raise RuntimeError("read model unavailable")

    runner = runner_for(engine, projection, batch_size=100)
    with pytest.raises(RuntimeError, match="unavailable"):
        runner.catch_up()
    assert read_model(engine) == {}  # the balance writes of the failed batch rolled back too
    assert runner.position("balances") == (0, 0)
    runner.catch_up()
    model = read_model(engine)
    assert {k: v[0] for k, v in model.items()} == expected
    assert sum(v[1] for v in model.values()) == event_count(engine)


def test_runner_bad_input(engine: Engine) -> None:
    with pytest.raises(ConfigurationError, match="at least one"):
        ProjectionRunner(engine, BankEvent, checkpoints=Checkpoint, registry=events, projections=[])
    with pytest.raises(ConfigurationError, match="unique"):
        runner_for(engine, balance_projection(), balance_projection())
    runner = runner_for(engine, Projection("no-reset"))
    with pytest.raises(ConfigurationError, match="resetter"):
        runner.rebuild("no-reset")
    with pytest.raises(ConfigurationError, match="not one of"):
        runner.run_once(["elsewhere"])


def test_listen_notify_wakes_the_runner_without_polling(engine: Engine) -> None:
    runner = runner_for(engine, batch_size=100)
    stop = threading.Event()
    failures: list[BaseException] = []

    def loop() -> None:
        try:
            # an idle timeout of an hour: only a NOTIFY can make it look again in this test
            runner.run_forever(stop=stop, idle_timeout=3600)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        while runner.stats["batches"] == 0 and thread.is_alive():
            time.sleep(0.01)  # the first catch-up pass has run: now it waits on LISTEN
        expected = write_history(engine, accounts=2, transactions=3)
        deadline = time.monotonic() + 60
        while {k: v[0] for k, v in read_model(engine).items()} != expected:
            assert thread.is_alive() and time.monotonic() < deadline, failures
            time.sleep(0.02)
        while runner.stats["wakeups"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)  # notifications are consumed on the next wait
        assert runner.stats["wakeups"] >= 1
        # woken per commit, not spinning: a handful of batches for 5 transactions
        assert runner.stats["batches"] < 60
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive() and failures == []
    # the detached LISTEN connection is closed (its backend exits a moment after the client)
    deadline = time.monotonic() + 30
    while True:
        with engine.connect() as conn:
            listeners = conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN es_bank_events%' "
                "AND datname = current_database()"
            )).scalar_one()
        if listeners == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert listeners == 0


async def test_async_runner_catch_up_rebuild_and_notify(engine: Engine, async_engine: AsyncEngine) -> None:
    expected = write_history(engine, accounts=3, transactions=8)
    runner = AsyncProjectionRunner(
        async_engine, BankEvent, checkpoints=Checkpoint, registry=events,
        projections=[balance_projection()], batch_size=5,
    )
    assert await runner.catch_up() == event_count(engine)
    assert {k: v[0] for k, v in read_model(engine).items()} == expected
    assert await runner.run_once() == 0
    assert await runner.rebuild("balances") == event_count(engine)
    assert {k: v[0] for k, v in read_model(engine).items()} == expected

    stop = asyncio.Event()
    passes = runner.stats["batches"]
    task = asyncio.create_task(runner.run_forever(stop=stop, idle_timeout=3600))
    try:
        while runner.stats["batches"] == passes:  # LISTEN is on and the first pass is done
            await asyncio.sleep(0.01)
        more = await asyncio.to_thread(write_history, engine, accounts=4, transactions=2)
        deadline = time.monotonic() + 60
        while {k: v[0] for k, v in read_model(engine).items()} != more:
            assert not task.done() and time.monotonic() < deadline
            await asyncio.sleep(0.02)
        while runner.stats["wakeups"] == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # notifications are consumed on the next wait
        assert runner.stats["wakeups"] >= 1
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
