"""Keyset pagination against PostgreSQL: every ordering pages through exactly the rows the
database's own ORDER BY returns, cursors are tamper-evident, concurrent inserts do not shift."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, Index, String, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sa_patterns import InvalidCursor, Page, paginate, paginate_async
from sa_patterns.errors import ConfigurationError
from sa_patterns.nplusone import QueryCounter
from sa_patterns.pagination import CURSOR_KEY_ENV

KEY = "test-secret"


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "pg_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20))
    score: Mapped[int | None]
    created: Mapped[dt.datetime | None]
    __table_args__ = (Index("pg_items_created_id", "created", "id"),)


@pytest.fixture(scope="module", autouse=True)
def tables(engine: Engine) -> Iterator[None]:
    Base.metadata.create_all(engine)
    base = dt.datetime(2024, 1, 1, tzinfo=None)
    rows = [
        {
            "id": i,
            "name": f"n{(i * 7) % 13:02d}",
            "score": None if i % 5 == 0 else (i * 37) % 11,
            "created": None if i % 9 == 0 else base + dt.timedelta(hours=(i * 13) % 40),
        }
        for i in range(1, 121)
    ]
    with engine.begin() as conn:
        conn.execute(Item.__table__.insert(), rows)
    yield
    Base.metadata.drop_all(engine)


ORDERINGS: list[tuple[str, list[Any], str]] = [
    ("id", [Item.id], "id"),
    ("score asc", [Item.score], "score ASC NULLS LAST, id ASC NULLS LAST"),
    ("score desc", [Item.score.desc()], "score DESC NULLS FIRST, id DESC NULLS FIRST"),
    ("score desc nulls last, name", [Item.score.desc().nulls_last(), Item.name.asc()],
     "score DESC NULLS LAST, name ASC NULLS LAST, id ASC NULLS LAST"),
    ("created nulls first, score desc", [Item.created.asc().nulls_first(), Item.score.desc()],
     "created ASC NULLS FIRST, score DESC NULLS FIRST, id DESC NULLS FIRST"),
    ("name desc, created asc", [Item.name.desc(), Item.created],
     "name DESC NULLS FIRST, created ASC NULLS LAST, id ASC NULLS LAST"),
    ("created, id (row comparison)", [Item.created.asc(), Item.id.asc()],
     "created ASC NULLS LAST, id ASC NULLS LAST"),
]


def walk(session: Session, order_by: list[Any], limit: int, **kw: Any) -> list[int]:
    seen: list[int] = []
    cursor = None
    for _ in range(200):
        page = paginate(session, select(Item), order_by=order_by, after=cursor, limit=limit, key=KEY, **kw)
        seen += [item.id for item in page.items]
        assert page.has_more == (page.next_cursor is not None)
        if not page.has_more:
            return seen
        cursor = page.next_cursor
    raise AssertionError("pagination did not end")


@pytest.mark.parametrize("label,order_by,sql_order", ORDERINGS, ids=[o[0] for o in ORDERINGS])
@pytest.mark.parametrize("limit", [1, 7, 50, 200])
def test_pages_match_database_order(
    session: Session, sql: Any, label: str, order_by: list[Any], sql_order: str, limit: int
) -> None:
    expected = [r.id for r in sql(f"SELECT id FROM pg_items ORDER BY {sql_order}")]
    assert len(expected) == 120
    assert walk(session, order_by, limit) == expected


@pytest.mark.parametrize("label,order_by,sql_order", ORDERINGS, ids=[o[0] for o in ORDERINGS])
def test_backward_pages_mirror_forward_pages(
    session: Session, label: str, order_by: list[Any], sql_order: str
) -> None:
    forward: list[Page[Any]] = []
    cursor = None
    while True:
        page = paginate(session, select(Item), order_by=order_by, after=cursor, limit=17, key=KEY)
        forward.append(page)
        assert (page.prev_cursor is None) == (len(forward) == 1)
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert len(forward) == 8  # 120 rows / 17
    backward = [forward[-1]]
    while backward[-1].prev_cursor:
        backward.append(paginate(session, select(Item), order_by=order_by,
                                 before=backward[-1].prev_cursor, limit=17, key=KEY))
    assert [[i.id for i in p.items] for p in reversed(backward)] == [[i.id for i in p.items] for p in forward]
    assert backward[-1].prev_cursor is None and backward[-1].has_more
    # ... and forward again from a page reached backwards
    again = paginate(session, select(Item), order_by=order_by, after=backward[2].next_cursor,
                     limit=17, key=KEY)
    assert [i.id for i in again.items] == [i.id for i in forward[-2].items]


def test_before_and_after_together_is_an_error(session: Session) -> None:
    page = paginate(session, select(Item), order_by=Item.id, limit=3, key=KEY)
    with pytest.raises(ConfigurationError, match="not both"):
        paginate(session, select(Item), order_by=Item.id, after=page.next_cursor,
                 before=page.next_cursor, key=KEY)


def test_page_object(session: Session) -> None:
    page = paginate(session, select(Item).where(Item.id <= 10), order_by=Item.id, limit=4, key=KEY)
    assert isinstance(page, Page)
    assert [i.id for i in page] == [1, 2, 3, 4] and len(page) == 4
    assert page.has_more and page.next_cursor
    last = paginate(session, select(Item).where(Item.id <= 10), order_by=Item.id, limit=4,
                    after=paginate(session, select(Item).where(Item.id <= 10), order_by=Item.id,
                                   limit=8, key=KEY).next_cursor, key=KEY)
    assert [i.id for i in last.items] == [9, 10]
    assert not last.has_more and last.next_cursor is None


def test_column_selects_return_tuples(session: Session) -> None:
    page = paginate(session, select(Item.id, Item.name), order_by=[Item.name, Item.id], limit=3, key=KEY)
    assert all(isinstance(row, tuple) and len(row) == 2 for row in page.items)
    expected = session.execute(select(Item.id, Item.name).order_by(Item.name, Item.id).limit(3)).all()
    assert page.items == [tuple(r) for r in expected]


def test_stable_under_concurrent_inserts(session: Session, engine: Engine) -> None:
    order = [Item.created.desc().nulls_last(), Item.id.desc()]
    first = paginate(session, select(Item).where(Item.id < 1000), order_by=order, limit=30, key=KEY)
    # Another transaction commits rows that sort before and after the cursor position.
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO pg_items (id, name, score, created) VALUES "
            "(500, 'new', 1, '2030-01-01'), (501, 'new', 1, '2000-01-01'), (502, 'new', 1, NULL)"))
    try:
        seen = [i.id for i in first.items]
        cursor = first.next_cursor
        while cursor:
            page = paginate(session, select(Item).where(Item.id < 1000), order_by=order,
                            after=cursor, limit=30, key=KEY)
            seen += [i.id for i in page.items]
            cursor = page.next_cursor
        assert len(seen) == len(set(seen)), "a row was returned twice"
        assert set(range(1, 121)) <= set(seen), "an existing row was skipped"
        assert 500 not in seen  # it sorts before the cursor: not shown, nothing shifted
        assert {501, 502} <= set(seen)
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM pg_items WHERE id >= 500"))


def _cursor(session: Session) -> str:
    page = paginate(session, select(Item), order_by=[Item.score.desc()], limit=5, key=KEY)
    assert page.next_cursor
    return page.next_cursor


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: c[:-3],  # truncated signature
        lambda c: c[:10],  # truncated payload
        lambda c: c.replace(".", ""),  # no separator
        lambda c: ("A" if c[0] != "A" else "B") + c[1:],  # altered payload
        lambda c: c + "x",  # padding noise
        lambda c: "not a cursor",
        lambda c: "",
        lambda c: "%%%.%%%",
    ],
    ids=["trunc-sig", "trunc-payload", "no-dot", "altered", "extra", "garbage", "empty", "not-b64"],
)
def test_forged_or_truncated_cursor_is_refused_before_sql(
    session: Session, query_counter: QueryCounter, mangle: Any
) -> None:
    bad = mangle(_cursor(session))
    query_counter.reset()
    with pytest.raises(InvalidCursor) as info:
        paginate(session, select(Item), order_by=[Item.score.desc()], after=bad, limit=5, key=KEY)
    assert query_counter.count == 0, "an invalid cursor must not reach the database"
    assert "cursor" in str(info.value) and "[sap40]" in str(info.value)


def test_cursor_for_another_ordering_or_key(session: Session) -> None:
    cursor = _cursor(session)
    with pytest.raises(InvalidCursor, match="different ordering"):
        paginate(session, select(Item), order_by=[Item.score.asc()], after=cursor, key=KEY)
    with pytest.raises(InvalidCursor, match="signature"):
        paginate(session, select(Item), order_by=[Item.score.desc()], after=cursor, key="other")


def test_key_from_environment(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CURSOR_KEY_ENV, raising=False)
    with pytest.raises(ConfigurationError, match=CURSOR_KEY_ENV):
        paginate(session, select(Item), order_by=Item.id)
    monkeypatch.setenv(CURSOR_KEY_ENV, KEY)
    page = paginate(session, select(Item), order_by=Item.id, limit=2)
    again = paginate(session, select(Item), order_by=Item.id, limit=2, after=page.next_cursor, key=KEY)
    assert [i.id for i in again.items] == [3, 4]


def test_bad_arguments(session: Session) -> None:
    with pytest.raises(ConfigurationError, match="order_by"):
        paginate(session, select(Item), order_by=[], key=KEY)
    with pytest.raises(ConfigurationError, match="limit"):
        paginate(session, select(Item), order_by=Item.id, limit=0, key=KEY)


async def test_async_pages(async_session: AsyncSession) -> None:
    seen: list[int] = []
    cursor = None
    while True:
        page = await paginate_async(async_session, select(Item), order_by=[Item.score.desc()],
                                    after=cursor, limit=25, key=KEY)
        seen += [i.id for i in page.items]
        if not page.has_more:
            break
        cursor = page.next_cursor
    rows = (await async_session.execute(
        text("SELECT id FROM pg_items ORDER BY score DESC NULLS FIRST, id DESC"))).scalars().all()
    assert seen == list(rows)
