"""Event sourcing a bank account: typed events, optimistic concurrency, snapshots, a balance
read model kept in the same transaction, and a statement read model kept by the catch-up runner."""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import URL, Integer, Numeric, String, create_engine, delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import sa_patterns
from sa_patterns import (
    Aggregate,
    CheckpointMixin,
    ConcurrencyConflict,
    EventMixin,
    EventRegistry,
    EventStore,
    Projection,
    ProjectionRunner,
    RecordedEvent,
    SnapshotMixin,
)


class Base(DeclarativeBase):
    pass


# 1. Tables: the append-only log, snapshots, projection checkpoints, two read models
class BankEvent(EventMixin, Base):
    __tablename__ = "bank_events"


class BankSnapshot(SnapshotMixin, Base):
    __tablename__ = "bank_snapshots"


class ProjectionCheckpoint(CheckpointMixin, Base):
    __tablename__ = "projection_checkpoints"


class AccountBalance(Base):  # read model, kept synchronously
    __tablename__ = "account_balances"
    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    balance: Mapped[Decimal] = mapped_column(Numeric(14, 2))


class StatementLine(Base):  # read model, kept asynchronously by the runner
    __tablename__ = "statement_lines"
    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))


# 2. Typed events, registered under stable names (renaming a class never breaks old rows)
events = EventRegistry()


@events.register("account.deposited")
@dataclass(frozen=True)
class Deposited:
    amount: Decimal


@events.register("account.withdrawn")
@dataclass(frozen=True)
class Withdrawn:
    amount: Decimal


# 3. The aggregate: commands check invariants and record events; apply() folds them
class Account(Aggregate):
    balance: Decimal

    def __init__(self, aggregate_id: Any) -> None:
        super().__init__(aggregate_id)
        self.balance = Decimal(0)

    def deposit(self, amount: Decimal) -> None:
        self.record(Deposited(amount))

    def withdraw(self, amount: Decimal) -> None:
        if amount > self.balance:
            raise ValueError(f"insufficient funds: {amount} > {self.balance}")
        self.record(Withdrawn(amount))

    def apply(self, event: Any) -> None:
        if isinstance(event, Deposited):
            self.balance += event.amount
        elif isinstance(event, Withdrawn):
            self.balance -= event.amount


# 4. Projections: plain functions of (session, recorded event)
balances = Projection("balances")


@balances.on(Deposited, Withdrawn)
def _balance(session: Session, recorded: RecordedEvent[Any]) -> None:
    delta = recorded.data.amount if isinstance(recorded.data, Deposited) else -recorded.data.amount
    stmt = insert(AccountBalance).values(account_id=recorded.aggregate_id, balance=delta)
    session.execute(stmt.on_conflict_do_update(
        index_elements=["account_id"], set_={"balance": AccountBalance.balance + delta}
    ))


statement = Projection("statement")


@statement.on(Deposited, Withdrawn)
def _line(session: Session, recorded: RecordedEvent[Any]) -> None:
    sign = 1 if isinstance(recorded.data, Deposited) else -1
    session.add(StatementLine(account_id=recorded.aggregate_id, version=recorded.version,
                              amount=sign * recorded.data.amount))


@statement.resetter
def _reset(session: Session) -> None:
    session.execute(delete(StatementLine))


def main(url: URL) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)  # in an app: alembic revision --autogenerate
    Session = sa_patterns.install(sessionmaker(engine))

    def store(session: Session) -> EventStore:
        return EventStore(session, BankEvent, registry=events, snapshots=BankSnapshot,
                          snapshot_every=50, projections=[balances])

    # deposit and withdraw: events and the balance read model commit together
    with Session.begin() as session:
        account = store(session).load(Account, "acc-1")
        account.deposit(Decimal("100.00"))
        account.withdraw(Decimal("30.00"))
        store(session).save(account)
    with Session() as session:
        assert session.get(AccountBalance, "acc-1").balance == Decimal("70.00")  # type: ignore[union-attr]

    # two clerks load version 2; the second save loses with ConcurrencyConflict
    with Session() as first, Session() as second:
        a, b = store(first).load(Account, "acc-1"), store(second).load(Account, "acc-1")
        a.withdraw(Decimal("50.00"))
        store(first).save(a)
        first.commit()
        b.withdraw(Decimal("50.00"))  # would overdraw: the database refuses the stale write
        try:
            store(second).save(b)
            raise AssertionError("a stale append must not succeed")
        except ConcurrencyConflict:
            second.rollback()

    # many events: load() = latest snapshot + later events, equal to a replay from zero
    with Session.begin() as session:
        account = store(session).load(Account, "acc-1")
        for _ in range(120):
            account.deposit(Decimal("1.00"))
        store(session).save(account)
    with Session() as session:
        fast = store(session).load(Account, "acc-1")
        slow = store(session).load(Account, "acc-1", snapshots=False)
        assert fast.balance == slow.balance == Decimal("140.00") and fast.version == 123
        snapshot_version = session.scalar(select(BankSnapshot.version))
        assert snapshot_version == 123  # taken by the save() that crossed 100 events

    # the catch-up runner keeps the statement read model after commit, from its checkpoint
    runner = ProjectionRunner(engine, BankEvent, checkpoints=ProjectionCheckpoint,
                              registry=events, projections=[statement])
    assert runner.catch_up() == 123
    assert runner.catch_up() == 0  # idempotent: nothing is applied twice
    with Session() as session:
        total = sum(session.scalars(select(StatementLine.amount)))
        assert total == Decimal("140.00")
    assert runner.rebuild(statement) == 123  # empty the read model and replay the log
    engine.dispose()
