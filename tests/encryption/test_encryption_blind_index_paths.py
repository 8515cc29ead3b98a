"""The blind index follows the value on every write path, with or without install().

Each test writes through one path and reads ``email_bidx`` back with raw SQL: it must be the
HMAC of the new value, so a lookup by the new value finds the row and one by the old value does
not. A path that cannot compute the index (a SQL expression as the new value) is refused."""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

import pytest
from sqlalchemy import Connection, MetaData, bindparam, func, null, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import sa_patterns
from sa_patterns import ConfigurationError, EncryptedString, Keyring, insert_many, insert_many_async
from sa_patterns.encryption import blind_index_value

K1, I1 = os.urandom(32), os.urandom(32)
RING = Keyring({"k1": K1}, index_keys={"i1": I1})


class Base(DeclarativeBase):
    pass


class Contact(Base):
    __tablename__ = "enc_contact"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(default="")
    email: Mapped[str | None] = mapped_column(EncryptedString(RING, blind_index=True, normalize="lower"))


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> list[MetaData]:
    return [Base.metadata]


@pytest.fixture
def plain(connection: Connection) -> Any:
    """A session that was never install()ed."""
    with Session(bind=connection, join_transaction_mode="create_savepoint") as s:
        yield s


def mac(value: str) -> bytes:
    return b"i1:" + hmac.new(I1, value.lower().encode(), hashlib.sha256).digest()


def stored(sql: Any, id_: int) -> bytes | None:
    value = sql("SELECT email_bidx FROM enc_contact WHERE id = :i", i=id_)[0][0]
    return None if value is None else bytes(value)


def found(conn: Any, value: str) -> list[int]:
    return sorted(conn.scalars(select(Contact.id).where(Contact.email == value)))


def assert_indexed(sql: Any, conn: Any, id_: int, new: str, old: str) -> None:
    assert stored(sql, id_) == mac(new)
    assert id_ in found(conn, new) and id_ not in found(conn, old)


def test_plain_session_unit_of_work(plain: Session, sql: Any) -> None:
    plain.add(Contact(id=1, email="Old@x.io"))
    plain.flush()
    assert stored(sql, 1) == mac("old@x.io")
    contact = plain.get(Contact, 1)
    assert contact is not None
    contact.email = "New@x.io"
    plain.flush()
    assert_indexed(sql, plain, 1, "new@x.io", "old@x.io")
    contact.name = "only the name"  # an UPDATE without the value keeps the stored index
    plain.flush()
    assert stored(sql, 1) == mac("new@x.io")
    contact.email = None
    plain.flush()
    assert stored(sql, 1) is None


@pytest.mark.parametrize("installed", [False, True])
def test_orm_bulk_update_by_criteria(connection: Connection, sql: Any, installed: bool) -> None:
    factory = sessionmaker(bind=connection, join_transaction_mode="create_savepoint")
    if installed:
        sa_patterns.install(factory)
    with factory() as s:
        s.add_all([Contact(id=2, email="a@x.io"), Contact(id=3, email="b@x.io")])
        s.flush()
        s.execute(update(Contact).where(Contact.id == 2).values(email="c@x.io"))
        assert_indexed(sql, s, 2, "c@x.io", "a@x.io")
        # the same statement shape again: the cached compiled form hashes the new value
        s.execute(update(Contact).where(Contact.id == 3).values(email="d@x.io"))
        assert_indexed(sql, s, 3, "d@x.io", "b@x.io")
        s.execute(update(Contact).where(Contact.id == 3).values({Contact.email: "e@x.io"}))
        assert_indexed(sql, s, 3, "e@x.io", "d@x.io")


def test_orm_bulk_update_by_primary_key_in_a_plain_session(plain: Session, sql: Any) -> None:
    plain.add_all([Contact(id=4, email="one@x.io"), Contact(id=5, email="two@x.io")])
    plain.flush()
    plain.execute(update(Contact), [{"id": 4, "email": "uno@x.io"}, {"id": 5, "name": "no email"}])
    assert_indexed(sql, plain, 4, "uno@x.io", "one@x.io")
    assert stored(sql, 5) == mac("two@x.io")


def test_core_update_and_executemany(connection: Connection, sql: Any) -> None:
    table = Contact.__table__
    connection.execute(table.insert(), [{"id": 6, "email": "p@x.io"}, {"id": 7, "email": "q@x.io"}])
    connection.execute(update(table).where(table.c.id == 6).values(email="r@x.io"))
    assert_indexed(sql, connection, 6, "r@x.io", "p@x.io")
    connection.execute(
        update(table).where(table.c.id == bindparam("b_id")),
        [{"b_id": 6, "email": "s@x.io"}, {"b_id": 7, "email": "t@x.io"}],
    )
    assert_indexed(sql, connection, 6, "s@x.io", "r@x.io")
    assert_indexed(sql, connection, 7, "t@x.io", "q@x.io")
    connection.execute(
        update(table).where(table.c.id == bindparam("b_id")).values(email=bindparam("new_email")),
        [{"b_id": 6, "new_email": "s2@x.io"}, {"b_id": 7, "new_email": "t2@x.io"}],
    )
    assert_indexed(sql, connection, 6, "s2@x.io", "s@x.io")
    assert_indexed(sql, connection, 7, "t2@x.io", "t@x.io")
    connection.execute(update(table).where(table.c.id == 7).values(email=null()))
    assert stored(sql, 7) is None
    connection.execute(update(table).where(table.c.id == 6).values(name="n"))
    assert stored(sql, 6) == mac("s2@x.io")


def test_an_update_from_a_sql_expression_is_refused_unless_it_sets_the_index(connection: Connection, sql: Any) -> None:
    table = Contact.__table__
    connection.execute(table.insert().values(id=8, email="u@x.io"))
    with pytest.raises(ConfigurationError, match=r"enc_contact\.email is set from a SQL expression"):
        connection.execute(update(table).where(table.c.id == 8).values(email=func.lower(table.c.email)))
    connection.execute(
        update(table).where(table.c.id == 8).values(
            email="v@x.io", email_bidx=blind_index_value(Contact.email, "v@x.io")
        )
    )
    assert_indexed(sql, connection, 8, "v@x.io", "u@x.io")


@pytest.mark.parametrize("installed", [False, True])
def test_insert_many_upsert_updates_the_index(connection: Connection, sql: Any, installed: bool) -> None:
    factory = sessionmaker(bind=connection, join_transaction_mode="create_savepoint")
    if installed:
        sa_patterns.install(factory)
    with factory() as s:
        insert_many(s, Contact, [{"id": 9, "email": "old@x.io"}])
        assert stored(sql, 9) == mac("old@x.io")
        insert_many(s, Contact, [{"id": 9, "email": "new@x.io"}, {"id": 10, "email": "w@x.io"}], on_conflict="update")
        assert_indexed(sql, s, 9, "new@x.io", "old@x.io")
        assert stored(sql, 10) == mac("w@x.io")
        insert_many(s, Contact, [{"id": 9, "name": "n", "email": "x@x.io"}], on_conflict="update", update=["email"])
        assert_indexed(sql, s, 9, "x@x.io", "new@x.io")


async def test_async_plain_session(async_connection: AsyncConnection, sql: Any) -> None:
    async with AsyncSession(bind=async_connection, join_transaction_mode="create_savepoint") as s:
        s.add(Contact(id=11, email="before@x.io"))
        await s.flush()
        contact = await s.get(Contact, 11)
        assert contact is not None
        contact.email = "after@x.io"
        await s.flush()
        row = (await async_connection.exec_driver_sql("SELECT email_bidx FROM enc_contact WHERE id = 11")).one()
        assert bytes(row[0]) == mac("after@x.io")
        await s.execute(update(Contact).where(Contact.id == 11).values(email="later@x.io"))
        await s.execute(update(Contact), [{"id": 11, "name": "kept"}])
        await insert_many_async(s, Contact, [{"id": 11, "email": "last@x.io"}], on_conflict="update")
        row = (await async_connection.exec_driver_sql("SELECT email_bidx FROM enc_contact WHERE id = 11")).one()
        assert bytes(row[0]) == mac("last@x.io")
        assert (await s.scalars(select(Contact.id).where(Contact.email == "later@x.io"))).all() == []


def test_compat_per_row_update_default_is_compiled_then_called() -> None:
    """Pins what the blind index relies on (sa_patterns._compat.per_row_update_default): an
    UPDATE without the value keeps the stored index in SQL, one with it binds a parameter that
    SQLAlchemy fills per row by calling the default."""
    from sqlalchemy.dialects import postgresql

    companion = Contact.__table__.c.email_bidx
    assert companion.onupdate.is_clause_element and companion.onupdate.is_callable
    table = Contact.__table__
    keep = str(update(table).values(name="x").compile(dialect=postgresql.dialect()))
    assert "email_bidx=enc_contact.email_bidx" in keep.replace(" ", "")
    hashed = update(table).values(email="y").compile(dialect=postgresql.dialect())
    assert "email_bidx=%(email_bidx)s" in str(hashed).replace(" ", "")
    assert companion in hashed.update_prefetch  # type: ignore[attr-defined]


def test_compat_attach_default_sets_a_declared_columns_default_and_onupdate() -> None:
    """Pins sa_patterns._compat.attach_default: a default attached to a column that exists
    becomes its ``default`` (or ``onupdate``) with the column as its parent."""
    from sqlalchemy import Column, ColumnDefault, LargeBinary, MetaData, Table

    from sa_patterns._compat import attach_default, per_row_update_default

    table = Table("pin_attach", MetaData(), Column("v", LargeBinary()))
    default = ColumnDefault(b"x")
    attach_default(default, table.c.v)
    assert table.c.v.default is default and default.column is table.c.v
    onupdate = per_row_update_default(table.c.v)
    attach_default(onupdate, table.c.v)
    assert table.c.v.onupdate is onupdate and onupdate.for_update
