"""Models of the live-drift tests (imported, never collected): a tenant table with row-level
security and the audit triggers, a security_invoker view over it and a materialized view with
its unique index. ``sa-patterns doctor --metadata live_drift_models:Base`` loads them."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import Index, Numeric, String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sa_patterns import Audited, TenantMixin
from sa_patterns.views import MaterializedView, View

# Cluster-wide: unique per run so parallel runs never share it.
APP_ROLE = f"sap_ld_app_{uuid.uuid4().hex[:8]}"


class Base(DeclarativeBase):
    pass


class Note(TenantMixin, Audited, Base):
    __tablename__ = "ld_notes"
    __rls__ = True
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(String(50))
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))


class NoteView(View, Base):
    """Over a row-level-security table: security_invoker on (by default)."""

    __tablename__ = "ld_note_view"
    __select__ = select(Note.id, Note.tenant_id, Note.body)
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int]
    body: Mapped[str]


class Totals(MaterializedView, Base):
    __tablename__ = "ld_totals"
    __table_args__ = (Index("ld_totals_body", "body", unique=True),)
    __select__ = select(Note.body, func.sum(Note.amount).label("total")).group_by(Note.body)
    body: Mapped[str] = mapped_column(primary_key=True)
    total: Mapped[Decimal]
