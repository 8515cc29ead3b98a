"""Everyday helpers: keyset vs OFFSET page latency deep into a 200,000-row table, and
``insert_many`` vs per-row ORM ``session.add()`` for 5,000 rows (plain insert and upsert).

Pages: 50 rows ordered by ``(created_at DESC, id DESC)`` with a matching index, loaded as ORM
entities through ``paginate()`` (keyset, signed cursor decoded every time) or
``.offset(n).limit(50)``. Each timed case fetches 20 pages at the given depth.

Writes: a 6-column table, truncated before every timed call. "ORM add" is
``session.add()`` per object + one commit (SQLAlchemy 2.x already batches those INSERTs with
insertmanyvalues); "ORM merge" is the per-row way to upsert.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import URL, Index, String, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bench.harness import Section, compare
from sa_patterns.pagination import paginate
from sa_patterns.upsert import insert_many

NAME = "helpers"
TITLE = "Everyday helpers (keyset vs OFFSET pagination, insert_many vs ORM add)"

ROWS = 200_000
PAGE = 50
PAGES_PER_CASE = 20
WRITE_ROWS = 5_000
KEY = "bench-key"


class Base(DeclarativeBase):
    pass


class Event(Base):
    __tablename__ = "bh_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime]
    title: Mapped[str] = mapped_column(String(60))
    score: Mapped[int]
    __table_args__ = (Index("bh_events_created_id", "created_at", "id"),)


class Item(Base):
    __tablename__ = "bh_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(30), unique=True)
    name: Mapped[str] = mapped_column(String(60))
    price: Mapped[int]
    stock: Mapped[int]
    note: Mapped[str | None]


ORDER: list[Any] = [Event.created_at.desc(), Event.id.desc()]


def _rows(offset: int = 0, price: int = 1) -> list[dict[str, Any]]:
    return [
        {"sku": f"sku-{i}", "name": f"item {i}", "price": price * i, "stock": i % 17, "note": None}
        for i in range(offset, offset + WRITE_ROWS)
    ]


def run(url: URL, reps: int) -> Section:
    engine = create_engine(url)
    section = Section(NAME, TITLE)
    try:
        Base.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO bh_events (id, created_at, title, score) "
                "SELECT g, timestamp '2025-01-01' + (g / 3) * interval '1 second', "
                "'event ' || g, g % 1000 FROM generate_series(1, :n) g"), {"n": ROWS})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE bh_events"))

        session = Session(engine)

        def cursor_at(depth: int) -> str | None:
            if depth == 0:
                return None
            last = session.execute(
                select(Event).order_by(*ORDER).offset(depth - 1).limit(1)).scalar_one()
            from sa_patterns.pagination import _fingerprint, _keys, encode_cursor

            keys = _keys(select(Event), ORDER)
            return encode_cursor([last.created_at, last.id], _fingerprint(keys), KEY.encode())

        for depth in (0, 10_000, 150_000):
            after = cursor_at(depth)
            check_keyset = [e.id for e in paginate(session, select(Event), order_by=ORDER,
                                                   after=after, limit=PAGE, key=KEY).items]
            check_offset = session.scalars(
                select(Event).order_by(*ORDER).offset(depth).limit(PAGE)).all()
            assert check_keyset == [e.id for e in check_offset], "keyset and offset disagree"

            def offset_pages(depth: int = depth) -> None:
                for _ in range(PAGES_PER_CASE):
                    session.scalars(select(Event).order_by(*ORDER).offset(depth).limit(PAGE)).all()
                    session.expunge_all()

            def keyset_pages(after: str | None = after) -> None:
                for _ in range(PAGES_PER_CASE):
                    paginate(session, select(Event), order_by=ORDER, after=after, limit=PAGE, key=KEY)
                    session.expunge_all()

            section.tables.append(compare(
                f"{PAGES_PER_CASE} pages of {PAGE} rows at depth {depth:,} of {ROWS:,} "
                "(ORM entities; × vs OFFSET)",
                {"OFFSET/LIMIT": offset_pages, "paginate() keyset": keyset_pages},
                reps=reps, baseline="OFFSET/LIMIT"))
        plan = "\n".join(r[0] for r in session.execute(text(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT * FROM bh_events "
            "WHERE (created_at, id) < (timestamp '2025-01-01 05:00', 60000) "
            "ORDER BY created_at DESC, id DESC LIMIT 51")))
        session.close()

        def truncate(_: str) -> None:
            with engine.begin() as conn:
                conn.execute(text("TRUNCATE bh_items RESTART IDENTITY"))

        def orm_add() -> None:
            with Session(engine) as s:
                s.add_all([Item(**r) for r in _rows()])
                s.commit()

        def many_returning() -> None:
            with Session(engine) as s:
                assert len(insert_many(s, Item, _rows())) == WRITE_ROWS
                s.commit()

        def many_plain() -> None:
            with Session(engine) as s:
                insert_many(s, Item, _rows(), returning=False)
                s.commit()

        cases: dict[str, Callable[[], object]] = {
            "ORM session.add() per row": orm_add,
            "insert_many (RETURNING objects)": many_returning,
            "insert_many(returning=False)": many_plain,
        }
        section.tables.append(compare(
            f"insert {WRITE_ROWS:,} new rows (× vs ORM add)", cases, reps=reps,
            baseline="ORM session.add() per row", setup=truncate))

        def seed(_: str) -> None:
            truncate(_)
            with Session(engine) as s:
                insert_many(s, Item, _rows(offset=WRITE_ROWS // 2), returning=False)
                s.commit()

        def orm_merge() -> None:
            # the per-row upsert without ON CONFLICT: look up by sku, update or add
            with Session(engine) as s:
                existing = {i.sku: i for i in s.scalars(select(Item))}
                for r in _rows(price=2):
                    item = existing.get(r["sku"])
                    if item is None:
                        s.add(Item(**r))
                    else:
                        item.price = r["price"]
                s.commit()

        def many_upsert() -> None:
            with Session(engine) as s:
                insert_many(s, Item, _rows(price=2), on_conflict="update", conflict=["sku"],
                            update=["price"], returning=False)
                s.commit()

        section.tables.append(compare(
            f"upsert {WRITE_ROWS:,} rows, half already present (× vs ORM lookup + add/update)",
            {"ORM lookup + add/update": orm_merge, "insert_many(on_conflict='update')": many_upsert},
            reps=reps, baseline="ORM lookup + add/update", setup=seed))
        with engine.connect() as conn:
            total = conn.execute(text(
                "SELECT count(*), count(*) FILTER (WHERE price = 2 * substr(sku, 5)::int) "
                "FROM bh_items")).one()
        section.notes += [
            "keyset plan: " + " / ".join(line.strip() for line in plan.splitlines()[:3]),
            f"upsert result check: {total[0]:,} rows, {total[1]:,} of the {WRITE_ROWS:,} upserted "
            f"carry the new price ({'ok' if total[1] == WRITE_ROWS and total[0] == 7_500 else 'MISMATCH'})",
            "Every keyset page was checked against the OFFSET page at the same depth (same ids).",
            "No competitor library is named for these helpers; baselines are plain SQLAlchemy.",
        ]
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()
    return section
