"""Models shared by the event-sourcing tests and the crash-test child process.

A bank account: events, an aggregate, a snapshot table, a balance read model and projections.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, Numeric, String, delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sa_patterns import TenantMixin
from sa_patterns.eventsourcing import (
    Aggregate,
    CheckpointMixin,
    EventMixin,
    EventRegistry,
    Projection,
    RecordedEvent,
    SnapshotMixin,
)


class Base(DeclarativeBase):
    pass


events = EventRegistry()


@events.register("account.opened")
@dataclass(frozen=True)
class Opened:
    owner: str


@events.register("account.deposited", version=2)
@dataclass(frozen=True)
class Deposited:
    amount: Decimal
    note: str = ""


@events.upcaster("account.deposited", from_version=1)
def _deposited_v1(data: dict[str, Any]) -> dict[str, Any]:
    # v1 stored integer cents under "cents"
    return {"amount": str(Decimal(data["cents"]) / 100)}


@events.register("account.withdrawn")
@dataclass(frozen=True)
class Withdrawn:
    amount: Decimal


class BankEvent(EventMixin, Base):
    __tablename__ = "es_bank_events"


class BankSnapshot(SnapshotMixin, Base):
    __tablename__ = "es_bank_snapshots"


class Checkpoint(CheckpointMixin, Base):
    __tablename__ = "es_checkpoints"


class BalanceColumns(Base):
    """A read model: one row per account."""

    __abstract__ = True
    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    balance: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    events: Mapped[int] = mapped_column(Integer)
    last_version: Mapped[int] = mapped_column(Integer)


class Balance(BalanceColumns):
    __tablename__ = "es_balances"


class BalanceReplica(BalanceColumns):
    """The same read model kept by a second projection (reference for the crash test)."""

    __tablename__ = "es_balances_replica"


class InsufficientFunds(Exception):
    pass


class Account(Aggregate):
    owner: str
    balance: Decimal
    deposits: int

    def __init__(self, aggregate_id: Any) -> None:
        super().__init__(aggregate_id)
        self.owner = ""
        self.balance = Decimal("0")
        self.deposits = 0

    # commands
    def open(self, owner: str) -> None:
        self.record(Opened(owner))

    def deposit(self, amount: Decimal) -> None:
        self.record(Deposited(amount))

    def withdraw(self, amount: Decimal) -> None:
        if amount > self.balance:
            raise InsufficientFunds(f"{self.id}: {amount} > {self.balance}")
        self.record(Withdrawn(amount))

    # state
    def apply(self, event: Any) -> None:
        if isinstance(event, Opened):
            self.owner = event.owner
        elif isinstance(event, Deposited):
            self.balance += event.amount
            self.deposits += 1
        elif isinstance(event, Withdrawn):
            self.balance -= event.amount


def balance_projection(
    name: str = "balances", model: type[BalanceColumns] = Balance
) -> Projection:
    """Upserts ``model`` rows; ``events`` counts applications, so a double apply shows."""
    projection = Projection(name)

    def change(session: Session, recorded: RecordedEvent[Any], delta: Decimal) -> None:
        table = model.__table__
        stmt = insert(table).values(
            account_id=recorded.aggregate_id,
            balance=delta,
            events=1,
            last_version=recorded.version,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["account_id"],
            set_={
                "balance": table.c.balance + delta,
                "events": table.c.events + 1,
                "last_version": recorded.version,
            },
        )
        session.execute(stmt)

    @projection.on(Opened)
    def _opened(session: Session, recorded: RecordedEvent[Any]) -> None:
        change(session, recorded, Decimal("0"))

    @projection.on(Deposited)
    def _deposited(session: Session, recorded: RecordedEvent[Any]) -> None:
        change(session, recorded, recorded.data.amount)

    @projection.on(Withdrawn)
    def _withdrawn(session: Session, recorded: RecordedEvent[Any]) -> None:
        change(session, recorded, -recorded.data.amount)

    @projection.resetter
    def _reset(session: Session) -> None:
        session.execute(delete(model))

    return projection


def balances(
    session: Session, model: type[BalanceColumns] = Balance
) -> dict[str, tuple[Decimal, int, int]]:
    rows = session.execute(select(model.account_id, model.balance, model.events, model.last_version))
    return {r.account_id: (r.balance, r.events, r.last_version) for r in rows}


# -- tenant-scoped variant: the same log with TenantMixin -------------------------------------
class TenantBase(DeclarativeBase):
    pass


class TenantBankEvent(EventMixin, TenantMixin, TenantBase):
    __tablename__ = "es_tenant_events"


class TenantBankSnapshot(SnapshotMixin, TenantMixin, TenantBase):
    __tablename__ = "es_tenant_snapshots"


class TenantCheckpoint(CheckpointMixin, TenantBase):
    __tablename__ = "es_tenant_checkpoints"


class TenantSeen(TenantMixin, TenantBase):
    """Read model under row-level security: records the tenant setting the handler ran with."""

    __tablename__ = "es_tenant_seen"
    __rls__ = True
    event_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    setting: Mapped[str] = mapped_column(String(50))


def tenant_projection() -> Projection:
    projection = Projection("tenant_seen")

    @projection.on(Opened, Deposited, Withdrawn)
    def _seen(session: Session, recorded: RecordedEvent[Any]) -> None:
        setting = session.execute(text("SELECT current_setting('app.tenant_id', true)")).scalar_one()
        session.add(TenantSeen(event_id=recorded.id, tenant_id=recorded.tenant_id, setting=setting))

    return projection
