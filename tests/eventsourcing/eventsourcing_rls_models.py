"""Event sourcing under row-level security (imported, never collected): a tenant log and its
snapshots behind the tenant wall, two tenant read models, and the roles (unique per run, since
roles are cluster-wide) that own the tables and run the application."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from eventsourcing_models import Deposited, Opened, Withdrawn
from sqlalchemy import BigInteger, Integer, Numeric, PrimaryKeyConstraint, String, delete, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sa_patterns import TenantMixin
from sa_patterns.eventsourcing import (
    CheckpointMixin,
    EventMixin,
    Projection,
    RecordedEvent,
    SnapshotMixin,
)
from sa_patterns.roles import RoleNames

RUN = uuid.uuid4().hex[:8]
#: owner: builds and owns every table and function (NOSUPERUSER NOBYPASSRLS, and FORCE'd RLS binds
#: it too); app: the application's login, which also runs the projection runner (the default
#: ``__runner_role__``); admin: the operators' role (its policies are generated, it is unused here)
ROLES = RoleNames(owner=f"sap_es_owner_{RUN}", app=f"sap_es_app_{RUN}", admin=f"sap_es_admin_{RUN}")
OWNER_ROLE, APP_ROLE, ADMIN_ROLE = ROLES.owner, ROLES.app, ROLES.admin


class RlsBase(DeclarativeBase):
    pass


class RlsEvent(EventMixin, TenantMixin, RlsBase):
    __tablename__ = "es_rls_events"
    __rls__ = True  # the default, said here because these tests are about it


class RlsSnapshot(SnapshotMixin, TenantMixin, RlsBase):
    __tablename__ = "es_rls_snapshots"
    __rls__ = True


class RlsCheckpoint(CheckpointMixin, RlsBase):
    __tablename__ = "es_rls_checkpoints"


class RlsBalance(TenantMixin, RlsBase):
    """One row per (tenant, account); ``setting`` is the ``app.tenant_id`` its last handler saw."""

    __tablename__ = "es_rls_balances"
    __rls__ = True
    __table_args__ = (PrimaryKeyConstraint("tenant_id", "account_id"),)
    account_id: Mapped[str] = mapped_column(String(255))
    balance: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    events: Mapped[int] = mapped_column(Integer)
    setting: Mapped[str] = mapped_column(String(50))


class RlsLine(TenantMixin, RlsBase):
    """One row per event, written with ``session.add`` (flushed later, by the runner)."""

    __tablename__ = "es_rls_lines"
    __rls__ = True
    event_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    setting: Mapped[str] = mapped_column(String(50))


class RlsTotal(RlsBase):
    """A read model across tenants (no tenant column): events per type, every tenant's."""

    __tablename__ = "es_rls_totals"
    event_type: Mapped[str] = mapped_column(String(255), primary_key=True)
    events: Mapped[int] = mapped_column(Integer)


def _setting(session: Session) -> str:
    return str(session.execute(text("SELECT current_setting('app.tenant_id', true)")).scalar_one())


def balance_projection(
    name: str = "rls_balances", *, probe: Callable[[RecordedEvent[Any]], None] | None = None
) -> Projection:
    """Upserts :class:`RlsBalance`; ``probe`` runs first for every event (to fail or look)."""
    projection = Projection(name)

    @projection.on(Opened, Deposited, Withdrawn)
    def _change(session: Session, recorded: RecordedEvent[Any]) -> None:
        if probe is not None:
            probe(recorded)
        data = recorded.data
        delta = (
            data.amount
            if isinstance(data, Deposited)
            else -data.amount
            if isinstance(data, Withdrawn)
            else Decimal(0)
        )
        table = RlsBalance.__table__
        stmt = insert(table).values(
            tenant_id=recorded.tenant_id,
            account_id=recorded.aggregate_id,
            balance=delta,
            events=1,
            setting=_setting(session),
        )
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=["tenant_id", "account_id"],
                set_={
                    "balance": table.c.balance + delta,
                    "events": table.c.events + 1,
                    "setting": stmt.excluded.setting,
                },
            )
        )

    @projection.resetter
    def _reset(session: Session) -> None:
        session.execute(delete(RlsBalance))

    return projection


def line_projection() -> Projection:
    projection = Projection("rls_lines")

    @projection.on(Opened, Deposited, Withdrawn)
    def _line(session: Session, recorded: RecordedEvent[Any]) -> None:
        session.add(RlsLine(tenant_id=recorded.tenant_id, event_id=recorded.id, setting=_setting(session)))

    @projection.resetter
    def _reset(session: Session) -> None:
        session.execute(delete(RlsLine))

    return projection


def total_projection() -> Projection:
    projection = Projection("rls_totals")

    @projection.on(Opened, Deposited, Withdrawn)
    def _count(session: Session, recorded: RecordedEvent[Any]) -> None:
        stmt = insert(RlsTotal.__table__).values(event_type=recorded.event_type, events=1)
        session.execute(stmt.on_conflict_do_update(
            index_elements=["event_type"], set_={"events": RlsTotal.__table__.c.events + 1}
        ))

    @projection.resetter
    def _reset(session: Session) -> None:
        session.execute(delete(RlsTotal))

    return projection
