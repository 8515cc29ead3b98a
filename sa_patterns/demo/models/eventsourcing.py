"""Event sourcing: a ledger of bank-account events, snapshots, checkpoints and two read models."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, Numeric, String, delete
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from ...eventsourcing import (
    Aggregate,
    CheckpointMixin,
    EventMixin,
    EventRegistry,
    Projection,
    RecordedEvent,
    SnapshotMixin,
)
from .base import Base

ledger_events = EventRegistry()


@ledger_events.register("account.deposited")
@dataclass(frozen=True)
class Deposited:
    amount: Decimal


@ledger_events.register("account.withdrawn")
@dataclass(frozen=True)
class Withdrawn:
    amount: Decimal


class LedgerEvent(EventMixin, Base):
    __tablename__ = "ledger_events"


class LedgerSnapshot(SnapshotMixin, Base):
    __tablename__ = "ledger_snapshots"


class LedgerCheckpoint(CheckpointMixin, Base):
    __tablename__ = "ledger_checkpoints"


class LedgerBalance(Base):
    """Read model kept in the appending transaction."""

    __tablename__ = "ledger_balances"
    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    balance: Mapped[Decimal] = mapped_column(Numeric(14, 2))


class LedgerStatement(Base):
    """Read model kept after commit by the catch-up runner."""

    __tablename__ = "ledger_statement"
    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))


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


def _signed(recorded: RecordedEvent[Any]) -> Decimal:
    amount: Decimal = recorded.data.amount
    return amount if isinstance(recorded.data, Deposited) else -amount


balances = Projection("ledger_balances")


@balances.on(Deposited, Withdrawn)
def _balance(session: Session, recorded: RecordedEvent[Any]) -> None:
    delta = _signed(recorded)
    stmt = insert(LedgerBalance).values(account_id=recorded.aggregate_id, balance=delta)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["account_id"], set_={"balance": LedgerBalance.balance + delta}
        )
    )


statement = Projection("ledger_statement")


@statement.on(Deposited, Withdrawn)
def _line(session: Session, recorded: RecordedEvent[Any]) -> None:
    session.add(
        LedgerStatement(
            account_id=recorded.aggregate_id, version=recorded.version, amount=_signed(recorded)
        )
    )


@statement.resetter
def _reset(session: Session) -> None:
    session.execute(delete(LedgerStatement))
