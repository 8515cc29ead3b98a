"""insert_many: ON CONFLICT DO NOTHING / DO UPDATE with RETURNING, chunked under the 65,535
parameter limit; bad rows are refused before anything is written."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, Integer, String, UniqueConstraint, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sa_patterns import InvalidData, insert_many, insert_many_async
from sa_patterns.errors import ConfigurationError
from sa_patterns.nplusone import QueryCounter
from sa_patterns.upsert import MAX_PARAMETERS


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "up_products"
    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    price: Mapped[int] = mapped_column(server_default=text("0"))
    note: Mapped[str | None]
    stock: Mapped[int] = mapped_column(default=5)


class Wide(Base):
    """100 columns: 655 rows per statement at most."""

    __tablename__ = "up_wide"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)


for _i in range(99):
    setattr(Wide, f"c{_i}", mapped_column(f"c{_i}", Integer, nullable=False))


class Tagged(Base):
    __tablename__ = "up_tagged"
    id: Mapped[int] = mapped_column(primary_key=True)
    org: Mapped[str] = mapped_column(String(10))
    tag: Mapped[str] = mapped_column(String(10))
    hits: Mapped[int] = mapped_column(default=0)
    __table_args__ = (UniqueConstraint("org", "tag", name="up_tagged_org_tag"),)


@pytest.fixture(scope="module", autouse=True)
def tables(engine: Engine) -> Iterator[None]:
    Base.metadata.create_all(engine)
    yield
    Base.metadata.drop_all(engine)


def count(sql: Any, table: str) -> int:
    return int(sql(f"SELECT count(*) FROM {table}")[0][0])


def test_insert_returns_objects_and_applies_defaults(session: Session, sql: Any) -> None:
    rows = [{"sku": f"s{i}", "name": f"P{i}"} for i in range(10)]
    rows[3]["note"] = "has note"  # heterogeneous keys are fine
    out = insert_many(session, Product, rows)
    assert [p.sku for p in out] == [f"s{i}" for i in range(10)]
    assert all(isinstance(p.id, int) for p in out)
    db = sql("SELECT sku, price, stock, note FROM up_products ORDER BY id")
    assert [r.sku for r in db] == [f"s{i}" for i in range(10)]
    assert {r.price for r in db} == {0} and {r.stock for r in db} == {5}  # server + python defaults
    assert db[3].note == "has note" and db[0].note is None


def test_on_conflict_ignore_returns_only_inserted(session: Session, sql: Any) -> None:
    insert_many(session, Product, [{"sku": "a", "name": "first"}])
    out = insert_many(session, Product, [{"sku": "a", "name": "dupe"}, {"sku": "b", "name": "new"}],
                      on_conflict="ignore", conflict=["sku"])
    assert [p.sku for p in out] == ["b"]
    assert sql("SELECT name FROM up_products WHERE sku = 'a'")[0].name == "first"


def test_on_conflict_update(session: Session, sql: Any) -> None:
    first = insert_many(session, Product, [{"sku": "u1", "name": "old", "price": 1}])
    out = insert_many(session, Product, [{"sku": "u1", "name": "new", "price": 2},
                                         {"sku": "u2", "name": "fresh", "price": 3}],
                      on_conflict="update", conflict=["sku"])
    assert [(p.sku, p.name, p.price) for p in out] == [("u1", "new", 2), ("u2", "fresh", 3)]
    assert out[0] is first[0]  # the identity map object, refreshed (populate_existing)
    assert [tuple(r) for r in sql("SELECT sku, name, price FROM up_products ORDER BY sku")] == [
        ("u1", "new", 2), ("u2", "fresh", 3)]
    # only the listed columns are updated
    insert_many(session, Product, [{"sku": "u1", "name": "ignored", "price": 9}],
                on_conflict="update", conflict=["sku"], update=["price"])
    assert tuple(sql("SELECT name, price FROM up_products WHERE sku = 'u1'")[0]) == ("new", 9)


def test_on_conflict_named_constraint(session: Session, sql: Any) -> None:
    insert_many(session, Tagged, [{"org": "o", "tag": "t", "hits": 1}])
    insert_many(session, Tagged, [{"org": "o", "tag": "t", "hits": 2}],
                on_conflict="update", conflict="up_tagged_org_tag")
    assert sql("SELECT hits FROM up_tagged")[0].hits == 2


def test_chunks_stay_under_parameter_limit(session: Session, sql: Any,
                                           query_counter: QueryCounter) -> None:
    rows = [{"id": i, **{f"c{j}": i for j in range(99)}} for i in range(2000)]
    query_counter.reset()
    out = insert_many(session, Wide, rows, returning=False)
    inserts = [s for s in query_counter.statements if s.lstrip().upper().startswith("INSERT")]
    assert out == []
    assert len(inserts) == 4  # ceil(2000 / (65535 // 100)) statements
    assert count(sql, "up_wide") == 2000
    assert MAX_PARAMETERS // 100 == 655


def test_chunk_size_is_honoured(session: Session, sql: Any, query_counter: QueryCounter) -> None:
    query_counter.reset()
    out = insert_many(session, Product, [{"sku": f"c{i}", "name": "x"} for i in range(25)], chunk_size=10)
    inserts = [s for s in query_counter.statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 3 and len(out) == 25
    assert count(sql, "up_products") == 25


def test_missing_required_key_names_row_and_key(session: Session, sql: Any,
                                                query_counter: QueryCounter) -> None:
    rows = [{"sku": "ok", "name": "fine"}] * 3 + [{"sku": "bad"}]
    query_counter.reset()
    with pytest.raises(InvalidData, match=r"row 3 is missing required key 'name'.*Nothing was written"):
        insert_many(session, Product, rows)
    assert query_counter.count == 0
    assert count(sql, "up_products") == 0
    with pytest.raises(InvalidData, match=r"row 1 has unknown key 'colour'"):
        insert_many(session, Product, [{"sku": "a", "name": "b"}, {"sku": "c", "name": "d", "colour": 1}])
    with pytest.raises(InvalidData, match="row 0 is a list"):
        insert_many(session, Product, [["sku", "name"]])  # type: ignore[list-item]


def test_database_error_in_later_chunk_writes_nothing(session: Session, sql: Any) -> None:
    rows = [{"sku": f"d{i}", "name": "x"} for i in range(30)] + [{"sku": "d0", "name": "dupe"}]
    with pytest.raises(Exception, match="duplicate key"):
        insert_many(session, Product, rows, chunk_size=10)
    assert count(sql, "up_products") == 0  # the savepoint took the first chunks back
    session.rollback()


def test_duplicate_conflict_keys_in_input(session: Session) -> None:
    with pytest.raises(InvalidData, match=r"rows 0 and 2 have the same conflict key \{'sku': 'x'\}"):
        insert_many(session, Product, [{"sku": "x", "name": "1"}, {"sku": "y", "name": "2"},
                                       {"sku": "x", "name": "3"}], on_conflict="update", conflict=["sku"])


def test_bad_options(session: Session) -> None:
    with pytest.raises(ConfigurationError, match="on_conflict"):
        insert_many(session, Product, [], on_conflict="merge")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="no column to update"):
        insert_many(session, Product, [{"sku": "k", "name": "n"}], on_conflict="update",
                    conflict=["sku"], update=[])
    assert insert_many(session, Product, []) == []


async def test_async(async_session: AsyncSession) -> None:
    out = await insert_many_async(async_session, Product,
                                  [{"sku": f"as{i}", "name": "a"} for i in range(5)], chunk_size=2)
    assert len(out) == 5
    again = await insert_many_async(async_session, Product,
                                    [{"sku": "as0", "name": "b"}, {"sku": "as9", "name": "c"}],
                                    on_conflict="update", conflict=["sku"])
    assert [(p.sku, p.name) for p in again] == [("as0", "b"), ("as9", "c")]
    total = await async_session.scalar(select(func.count()).select_from(Product))
    assert total == 6
    with pytest.raises(InvalidData, match="row 1 is missing required key 'sku'"):
        await insert_many_async(async_session, Product, [{"sku": "z", "name": "z"}, {"name": "z"}])


class Renamed(Base):
    """Attribute names differ from column names."""

    __tablename__ = "up_renamed"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column("product_code", String(20), unique=True)
    qty: Mapped[int] = mapped_column("quantity")


def test_attribute_names_differ_from_columns(session: Session, sql: Any) -> None:
    insert_many(session, Renamed, [{"code": "a", "qty": 1}])
    out = insert_many(session, Renamed, [{"code": "a", "qty": 5}, {"code": "b", "qty": 2}],
                      on_conflict="update", conflict=["code"])
    assert [(r.code, r.qty) for r in out] == [("a", 5), ("b", 2)]
    assert [tuple(r) for r in sql("SELECT product_code, quantity FROM up_renamed ORDER BY 1")] == [
        ("a", 5), ("b", 2)]
    with pytest.raises(ConfigurationError, match="has no column 'product_code'"):
        insert_many(session, Renamed, [{"code": "c", "qty": 1}], on_conflict="ignore",
                    conflict=["product_code"])
