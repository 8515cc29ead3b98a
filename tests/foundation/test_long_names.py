"""Tables whose names use up PostgreSQL's 63-byte identifier limit: every name the patterns
derive from them (indexes, triggers, functions, policies, partitions) stays within it and
distinct. PostgreSQL would cut a longer one silently (two names could collide: every month's
partition became one) and SQLAlchemy refuses to render an index whose name is too long."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from sqlalchemy import DateTime, Engine, MetaData, String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import sa_patterns
from sa_patterns import (
    Audited,
    Partitioned,
    Searchable,
    SoftDeleteMixin,
    TenantMixin,
    Versioned,
    range_partition,
    soft_unique,
    tenant_scope,
)
from sa_patterns.health import check_partitions
from sa_patterns.schema import ident, ident_prefix

SCHEMA = "long_names"
LONG = "l" * 59  # + "_art" and the like: 63-byte table names, the most PostgreSQL allows


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


class Article(Versioned, Audited, SoftDeleteMixin, Searchable, Base):
    __tablename__ = f"{LONG}_art"
    __searchable__ = {"title": "A"}
    __search_trigram__ = ("title",)
    __soft_delete_guard__ = True
    __table_args__ = (soft_unique("slug"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(String(200))


class Ticket(TenantMixin, Base):
    __tablename__ = f"{LONG}_tkt"
    id: Mapped[int] = mapped_column(primary_key=True)


class Reading(Partitioned, Base):
    __tablename__ = f"{LONG}_rdg"
    __partition_by__ = range_partition("taken_at", interval="month", premake=3)
    id: Mapped[int] = mapped_column(primary_key=True)
    taken_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), primary_key=True)


@pytest.fixture
def created(engine: Engine) -> Iterator[None]:
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        sa_patterns.create_all(conn, Base.metadata)
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))


def test_derived_names_fit_and_stay_distinct() -> None:
    names = [ident(LONG, s) for s in ("audit", "audit_ins", "history", "history_ins")]
    assert all(len(n.encode()) <= 63 for n in names) and len(set(names)) == len(names)
    assert ident(LONG, "audit") == ident(LONG, "audit")  # stable: the same input, the same name
    assert ident("short", "audit") == "short_audit"  # short names are left as they are
    wide = "é" * 40  # 80 bytes: cut on a character boundary, within the byte limit
    assert len(ident(wide, "tenant_isolation").encode()) <= 63
    assert len(ident(LONG, "s" * 70).encode()) <= 63
    assert ident_prefix("short", 10) == "short"
    assert len(ident_prefix(LONG, 10).encode()) <= 53


@pytest.mark.usefixtures("created")
def test_every_pattern_works_on_a_table_with_a_63_byte_name(engine: Engine) -> None:
    factory = sa_patterns.install(sessionmaker(engine))
    with factory() as s:
        s.add(Article(id=1, slug="a", title="hello world"))
        s.commit()
        s.get_one(Article, 1).title = "goodbye world"
        s.commit()
        with tenant_scope(7):
            s.add(Ticket(id=1))
            s.commit()
        s.add(Reading(id=1, taken_at=dt.datetime.now(dt.timezone.utc)))
        s.commit()
    with engine.begin() as conn:
        conn.execute(text(f'DELETE FROM {SCHEMA}."{Article.__tablename__}"'))  # the guard soft-deletes
    with engine.connect() as conn:
        catalog = conn.execute(text(
            "SELECT relname FROM pg_class WHERE relnamespace = CAST(:s AS regnamespace) "
            "UNION ALL SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "  WHERE c.relnamespace = CAST(:s AS regnamespace) AND NOT t.tgisinternal "
            "UNION ALL SELECT proname FROM pg_proc WHERE pronamespace = CAST(:s AS regnamespace) "
            "UNION ALL SELECT polname FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid "
            "  WHERE c.relnamespace = CAST(:s AS regnamespace)"), {"s": SCHEMA}).scalars().all()
        partitions = conn.execute(text(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = to_regclass(:t)"),
            {"t": f'{SCHEMA}."{Reading.__tablename__}"'}).scalar_one()
        logged = conn.execute(text(
            f"SELECT operation FROM {SCHEMA}.audit_log ORDER BY id")).scalars().all()
        soft = conn.execute(text(
            f'SELECT deleted_at IS NOT NULL FROM {SCHEMA}."{Article.__tablename__}"')).scalar_one()
    assert catalog and all(len(name.encode()) <= 63 for name in catalog)
    assert partitions == 4  # this month and three ahead: four distinct names
    with engine.connect() as conn:  # the doctor finds next month's partition under its name
        assert check_partitions(SimpleNamespace(connection=conn, metadata=Base.metadata)) == []
    assert logged == ["INSERT", "UPDATE", "SOFT_DELETE"]
    assert soft is True
