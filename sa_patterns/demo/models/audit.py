"""Audit log and history: invoices are Audited (every write lands in audit_log) and Versioned
(every version in au_invoices_history), with the real soft-delete mixin."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from ...audit import Audited
from ...soft_delete import SoftDeleteMixin
from ...versioning import Versioned
from .base import Base


class AuInvoice(SoftDeleteMixin, Versioned, Audited, Base):
    __tablename__ = "au_invoices"
    __audit_exclude__ = frozenset({"internal_note"})

    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str] = mapped_column(String(100))
    amount: Mapped[int]
    internal_note: Mapped[str | None] = mapped_column(String(200))
