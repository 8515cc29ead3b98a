"""Tenant scoping and soft delete on one model: both filters, one hook, no interference. As the
app role on the schema the toolkit built (RLS too); superuser_sql reads every tenant's rows."""

from __future__ import annotations

import pytest
from sqlalchemy import MetaData, delete, select, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sa_patterns
from sa_patterns import SoftDeleteMixin, TenantMixin, TenantRequired
from sa_patterns.testing.plugin import SQL


class Base(DeclarativeBase):
    pass


class Note(SoftDeleteMixin, TenantMixin, Base):
    __tablename__ = "tn_sd_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return Base.metadata


@pytest.fixture
def notes(session: Session) -> Session:
    for t in (1, 2):
        with sa_patterns.tenant_scope(t):
            session.add_all(Note(id=t * 10 + n, tenant_id=t, body="x") for n in (1, 2))
            session.flush()
    session.expunge_all()
    return session


def test_both_filters_apply(notes: Session, sql: SQL, superuser_sql: SQL) -> None:
    with sa_patterns.tenant_scope(1):
        notes.delete(notes.get(Note, 11))
        notes.flush()
        assert [n.id for n in notes.scalars(select(Note))] == [12]
        assert [n.id for n in notes.scalars(
            select(Note).execution_options(include_deleted=True).order_by(Note.id))] == [11, 12]
        assert sql("SELECT id FROM tn_sd_notes WHERE deleted_at IS NOT NULL") == [(11,)]
    assert superuser_sql("SELECT id FROM tn_sd_notes WHERE deleted_at IS NOT NULL") == [(11,)]


def test_bulk_soft_delete_stays_inside_the_tenant(notes: Session, superuser_sql: SQL) -> None:
    with sa_patterns.tenant_scope(2):
        notes.execute(delete(Note))
        notes.execute(update(Note).values(body="y").execution_options(include_deleted=True))
    assert superuser_sql("SELECT id FROM tn_sd_notes WHERE deleted_at IS NOT NULL ORDER BY id") == [(21,), (22,)]
    assert superuser_sql("SELECT id FROM tn_sd_notes WHERE body = 'y' ORDER BY id") == [(21,), (22,)]
    with pytest.raises(TenantRequired):
        notes.execute(delete(Note))
    assert superuser_sql("SELECT count(*) FROM tn_sd_notes WHERE deleted_at IS NULL") == [(2,)]


def test_raw_check(notes: Session) -> None:
    with sa_patterns.tenant_scope(1):
        assert notes.scalar(text("SELECT current_setting('app.tenant_id', true)")) == "1"
