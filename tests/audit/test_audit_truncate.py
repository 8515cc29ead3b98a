"""TRUNCATE of Audited and Versioned tables (issue 22, case 2).

A TRUNCATE passes no rows to its triggers. ``Audited`` records it as one ``TRUNCATE`` entry per
statement and table (key ``{}``, no rows, no tenant: it removed every tenant's rows; actor,
request and transaction as for any entry); ``Versioned`` closes every current version, so
``as_of(now)`` is empty and ``as_of(before)`` still shows the rows. The generated grants give the
app role no TRUNCATE: its TRUNCATE is refused by PostgreSQL. The owner's is recorded; on a tenant
table, whose history row-level security hides from the owner outside ``all_tenants()``, the
owner's TRUNCATE is refused there rather than leaving other tenants' versions current.

The owner's statements run on an owner connection in a transaction rolled back at the end; the
app role's on the test's own connection."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, ForeignKey, MetaData, select, text
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sa_patterns
from sa_patterns import Audited, TenantMixin, Versioned, as_of, audit_entries
from sa_patterns.audit import AUDIT_OPERATIONS
from sa_patterns.context import ACTOR_SETTING, ALL_TENANTS_SETTING, TENANT_SETTING
from sa_patterns.testing.plugin import SQL


class Base(DeclarativeBase):
    pass


class Shelf(Versioned, Audited, Base):
    __tablename__ = "tr_shelf"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Book(Versioned, Audited, Base):
    __tablename__ = "tr_book"
    id: Mapped[int] = mapped_column(primary_key=True)
    shelf_id: Mapped[int] = mapped_column(ForeignKey("tr_shelf.id"))
    title: Mapped[str]


class Memo(TenantMixin, Versioned, Audited, Base):
    """A tenant table with row-level security (the default): its history is walled the same."""

    __tablename__ = "tr_memo"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return Base.metadata


@pytest.fixture
def owner(owner_engine: Engine) -> Iterator[Connection]:
    """The owner role's connection in a transaction rolled back after the test."""
    with owner_engine.connect() as conn:
        outer = conn.begin()
        try:
            yield conn
        finally:
            outer.rollback()


def setting(conn: Connection, name: str, value: str) -> None:
    conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})


def clock(conn: Connection) -> dt.datetime:
    value: dt.datetime = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    return value


def rows(conn: Connection, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(text(statement), params)]


def seed(conn: Connection) -> None:
    conn.execute(text("INSERT INTO tr_shelf (id, name) VALUES (1, 'a'), (2, 'b')"))
    conn.execute(text("INSERT INTO tr_book (id, shelf_id, title) VALUES (1, 1, 'x'), (2, 1, 'y'), (3, 2, 'z')"))
    conn.execute(text("UPDATE tr_book SET title = title || '2'"))


def test_truncate_is_an_audit_operation() -> None:
    assert "TRUNCATE" in AUDIT_OPERATIONS
    audit_entries(Book, operations=["TRUNCATE"])  # accepted by the helper


def test_owner_truncate_is_logged_and_closes_every_version(owner: Connection) -> None:
    seed(owner)
    before = clock(owner)
    setting(owner, ACTOR_SETTING, "ops")
    owner.execute(text("TRUNCATE tr_book"))
    entries = rows(owner, "SELECT table_name, operation, primary_key, old_row, new_row, changed_columns, actor_id, "
                          "tenant_id, transaction_id = pg_current_xact_id()::text::bigint "
                          "FROM audit_log WHERE operation = 'TRUNCATE'")
    assert entries == [(f"{schema(owner)}.tr_book", "TRUNCATE", {}, None, None, None, "ops", None, True)]
    # every version closed; as_of before the TRUNCATE still shows the rows as they were
    assert rows(owner, "SELECT count(*) FROM tr_book_history WHERE valid_to IS NULL") == [(0,)]
    assert rows(owner, "SELECT count(*) FROM tr_book_history") == [(6,)]
    session = Session(bind=owner)
    now = as_of(Book, clock(owner))
    assert session.execute(select(now)).all() == []
    then = as_of(Book, before)
    assert session.execute(select(then.c.id, then.c.title).order_by(then.c.id)).all() == [(1, "x2"), (2, "y2"), (3, "z2")]
    # the shelf was not truncated: its versions stay current
    assert rows(owner, "SELECT count(*) FROM tr_shelf_history WHERE valid_to IS NULL") == [(2,)]
    # a key written again after the TRUNCATE continues its numbering
    owner.execute(text("INSERT INTO tr_book (id, shelf_id, title) VALUES (1, 1, 'again')"))
    assert rows(owner, "SELECT version, title FROM tr_book_history WHERE id = 1 AND valid_to IS NULL") == [(3, "again")]
    assert session.execute(select(as_of(Book, clock(owner)))).all() == [(1, 1, "again")]


def test_truncate_cascade_records_every_table_it_empties(owner: Connection) -> None:
    seed(owner)
    owner.execute(text("TRUNCATE tr_shelf CASCADE"))  # takes tr_book along by its foreign key
    entries = rows(owner, "SELECT table_name, operation, transaction_id FROM audit_log WHERE operation = 'TRUNCATE' ORDER BY id")
    assert sorted(e[0].split(".")[1] for e in entries) == ["tr_book", "tr_shelf"]
    assert len({e[2] for e in entries}) == 1  # one transaction
    for table in ("tr_shelf", "tr_book"):
        assert rows(owner, f"SELECT count(*) FROM {table}_history WHERE valid_to IS NULL") == [(0,)]
    # one statement naming both tables: still one entry per table
    seed(owner)
    owner.execute(text("TRUNCATE tr_book, tr_shelf"))
    assert rows(owner, "SELECT count(*) FROM audit_log WHERE operation = 'TRUNCATE'") == [(4,)]


def test_truncate_rolled_back_leaves_nothing(owner: Connection) -> None:
    seed(owner)
    with owner.begin_nested() as savepoint:
        owner.execute(text("TRUNCATE tr_book"))
        savepoint.rollback()
    assert rows(owner, "SELECT count(*) FROM audit_log WHERE operation = 'TRUNCATE'") == [(0,)]
    assert rows(owner, "SELECT count(*) FROM tr_book_history WHERE valid_to IS NULL") == [(3,)]


def test_the_app_roles_truncate_is_refused(connection: Connection, session: Session, sql: SQL) -> None:
    """The generated grants give the app role SELECT, INSERT, UPDATE, DELETE: PostgreSQL refuses
    its TRUNCATE before any trigger runs, and nothing changes."""
    seed(connection)
    for statement in ("TRUNCATE tr_book", "TRUNCATE tr_shelf CASCADE"):
        with pytest.raises(ProgrammingError, match="permission denied for table tr_"), connection.begin_nested():
            connection.execute(text(statement))
    assert sql("SELECT count(*) FROM tr_book") == [(3,)]
    assert sql("SELECT count(*) FROM tr_book_history WHERE valid_to IS NULL") == [(3,)]
    assert sql("SELECT count(*) FROM audit_log WHERE operation = 'TRUNCATE'") == [(0,)]
    privileges = sql("SELECT has_table_privilege(current_user, 'tr_book', 'TRUNCATE')")
    assert privileges == [(False,)]


def seed_tenants(owner: Connection) -> None:
    for tenant in ("1", "2"):
        setting(owner, TENANT_SETTING, tenant)
        owner.execute(text("INSERT INTO tr_memo (id, tenant_id, body) VALUES (:i, :t, 'm')"), {"i": int(tenant), "t": int(tenant)})
    setting(owner, TENANT_SETTING, "")


def test_tenant_table_truncate_needs_every_tenant_open(owner: Connection) -> None:
    """TRUNCATE empties every tenant's rows, but the owner's UPDATE of the history (row-level
    security forced on it) would only reach the tenant in scope: refused, unless the owner works
    across tenants the documented way (all_tenants on), which closes them all."""
    seed_tenants(owner)
    setting(owner, TENANT_SETTING, "1")
    refusal = "TRUNCATE of tr_memo removes the rows of every tenant"
    with pytest.raises(DBAPIError, match=refusal) as refused, owner.begin_nested():
        owner.execute(text("TRUNCATE tr_memo"))
    assert "all_tenants()" in str(refused.value.orig.diag.message_hint)  # type: ignore[union-attr]
    setting(owner, TENANT_SETTING, "")
    setting(owner, ALL_TENANTS_SETTING, "on")
    assert rows(owner, "SELECT count(*) FROM tr_memo_history WHERE valid_to IS NULL") == [(2,)]
    owner.execute(text("TRUNCATE tr_memo"))
    assert rows(owner, "SELECT tenant_id, count(*) FILTER (WHERE valid_to IS NULL) FROM tr_memo_history "
                       "GROUP BY tenant_id ORDER BY tenant_id") == [(1, 0), (2, 0)]
    entry = rows(owner, "SELECT table_name LIKE '%.tr_memo', primary_key, tenant_id FROM audit_log WHERE operation = 'TRUNCATE'")
    assert entry == [(True, {}, None)]
    # every tenant's audit_entries() of the table shows it, beside its own entries only
    setting(owner, ALL_TENANTS_SETTING, "")
    session = Session(bind=owner)
    for tenant in (1, 2):
        with sa_patterns.tenant_scope(tenant):
            seen = session.execute(audit_entries(Memo)).all()
        assert [(e.operation, e.primary_key) for e in seen] == [("INSERT", {"id": tenant}), ("TRUNCATE", {})]


def test_superuser_truncate_of_a_tenant_table_closes_every_tenant(
    connection: Connection, session: Session, sql: SQL, superuser_sql: SQL
) -> None:
    """The app role writes each tenant's rows; a superuser (no row-level security) truncates:
    every tenant's versions are closed, and each tenant's reader sees the entry."""
    for tenant in (1, 2):
        with sa_patterns.tenant_scope(tenant):
            session.add(Memo(id=tenant, body="m"))
            session.flush()
    superuser_sql("TRUNCATE tr_memo")
    assert superuser_sql("SELECT count(*) FROM tr_memo_history WHERE valid_to IS NULL") == [(0,)]
    for tenant in (1, 2):
        with sa_patterns.tenant_scope(tenant):
            assert sql("SELECT operation FROM audit_log WHERE table_name LIKE '%.tr_memo' ORDER BY id") == [
                ("INSERT",), ("TRUNCATE",)]
            assert session.execute(select(as_of(Memo, clock(connection)))).all() == []


def schema(conn: Connection) -> str:
    value: str = conn.execute(text("SELECT current_schema()")).scalar_one()
    return value
