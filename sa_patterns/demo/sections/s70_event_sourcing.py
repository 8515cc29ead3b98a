"""Event sourcing: constraint-enforced optimistic concurrency, snapshots, read models kept in
the same transaction and by a crash-safe, NOTIFY-driven catch-up runner."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ...errors import ConcurrencyConflict
from ...eventsourcing import EventStore, ProjectionRunner
from ..models.eventsourcing import (
    Account,
    LedgerBalance,
    LedgerCheckpoint,
    LedgerEvent,
    LedgerSnapshot,
    LedgerStatement,
    balances,
    ledger_events,
    statement,
)
from ..runner import DemoContext

TITLE = "Event sourcing: append-only log, optimistic concurrency, snapshots, read models"


def _store(session: Session) -> EventStore:
    return EventStore(
        session, LedgerEvent, registry=ledger_events, snapshots=LedgerSnapshot,
        snapshot_every=100, projections=[balances],
    )


def run(ctx: DemoContext) -> None:
    with ctx.Session.begin() as s:
        account = _store(s).load(Account, "acc-1")
        account.deposit(Decimal("100.00"))
        account.withdraw(Decimal("30.00"))
        _store(s).save(account)
    with ctx.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT version, event_type, data::text FROM ledger_events ORDER BY version"
        )).all()
        balance = conn.execute(text("SELECT balance FROM ledger_balances")).scalar_one()
    for row in rows:
        ctx.show(f"event v{row.version}", f"{row.event_type} {row.data}")
    ctx.check(balance == Decimal("70.00"), "balance read model committed with the events (70.00)")

    with ctx.Session() as first, ctx.Session() as second:
        a = _store(first).load(Account, "acc-1")
        b = _store(second).load(Account, "acc-1")
        a.withdraw(Decimal("50.00"))
        _store(first).save(a)
        first.commit()
        b.withdraw(Decimal("50.00"))
        try:
            _store(second).save(b)
            lost = False
        except ConcurrencyConflict as exc:
            second.rollback()
            lost = True
            ctx.show("second clerk", str(exc).split(":")[0] + ": ... (SQLSTATE 23505 on ledger_events_stream_key)")
    ctx.check(lost, "two writers at version 2: one wins, the other gets ConcurrencyConflict")

    with ctx.engine.connect() as conn:
        try:
            conn.execute(text("UPDATE ledger_events SET data = '{}'"))
            edited = True
        except DBAPIError as exc:
            edited = False
            ctx.show("UPDATE ledger_events", str(exc.orig).splitlines()[0])
    ctx.check(not edited, "the log is append-only in the database (trigger refuses UPDATE/DELETE)")

    with ctx.Session.begin() as s:
        account = _store(s).load(Account, "acc-1")
        for _ in range(150):
            account.deposit(Decimal("1.00"))
        _store(s).save(account)
    with ctx.Session() as s:
        fast, slow = _store(s).load(Account, "acc-1"), _store(s).load(Account, "acc-1", snapshots=False)
        snap = s.scalar(select(LedgerSnapshot.version))
    ctx.show("snapshot at version", snap)
    ctx.show("load(): snapshot + later events / replay from zero", f"{fast.balance} / {slow.balance}")
    ctx.check(fast.balance == slow.balance == Decimal("170.00"), "snapshot path equals replay from zero")

    runner = ProjectionRunner(
        ctx.engine, LedgerEvent, checkpoints=LedgerCheckpoint, registry=ledger_events,
        projections=[statement], batch_size=50,
    )
    applied = runner.catch_up()
    ctx.show("catch-up runner applied", f"{applied} events in {runner.stats['batches']} batches")
    ctx.check(applied == 153 and runner.catch_up() == 0, "catch-up applies each event once (idempotent)")

    stop = threading.Event()
    worker = threading.Thread(target=runner.run_forever, kwargs={"stop": stop, "idle_timeout": 3600})
    passes = runner.stats["batches"]
    worker.start()

    def acc2_lines() -> int:
        with ctx.Session() as s:
            return int(s.scalar(select(func.count()).select_from(LedgerStatement).where(
                LedgerStatement.account_id == "acc-2"
            )) or 0)

    try:
        while runner.stats["batches"] == passes:  # LISTEN is on and the first pass is done
            time.sleep(0.01)
        with ctx.Session.begin() as s:
            account = _store(s).load(Account, "acc-2")
            account.deposit(Decimal("5.00"))
            _store(s).save(account)
        deadline = time.monotonic() + 30
        seen = acc2_lines()
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
            seen = acc2_lines()
    finally:
        stop.set()
        worker.join()
    ctx.show("run_forever wake-ups by NOTIFY", runner.stats["wakeups"])
    ctx.check(seen == 1 and runner.stats["wakeups"] >= 1, "LISTEN/NOTIFY woke the runner (idle timeout was 1 h)")
    with ctx.Session() as s:
        total = s.scalar(select(func.sum(LedgerStatement.amount)).where(LedgerStatement.account_id == "acc-1"))
        sync_total = s.scalar(select(LedgerBalance.balance).where(LedgerBalance.account_id == "acc-1"))
    ctx.check(total == sync_total, "async statement read model agrees with the sync balance read model")
