"""The model every web integration test writes through: a tenant model (row-level security on)
that is audited, so each request's tenant, actor and request id can be read back from what the
database holds."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Identity, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sa_patterns import Audited, TenantMixin


class Base(DeclarativeBase):
    pass


class Note(TenantMixin, Audited, Base):
    __tablename__ = "web_notes"
    __rls__ = True

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    body: Mapped[str]


async def read_notes(async_sessions: async_sessionmaker[AsyncSession]) -> list[list[Any]]:
    """What the tenant in scope sees: [tenant_id, body] of each note."""
    async with async_sessions() as s:
        return [[n.tenant_id, n.body] for n in await s.scalars(select(Note).order_by(Note.id))]


def read_notes_sync(sessions: sessionmaker[Session]) -> list[list[Any]]:
    """The same through a sync session."""
    with sessions() as s:
        return [[n.tenant_id, n.body] for n in s.scalars(select(Note).order_by(Note.id))]
