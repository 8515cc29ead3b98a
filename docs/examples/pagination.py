"""Keyset pagination: signed cursors, mixed directions with NULLs, and a tampered cursor refused."""

import datetime as dt

from sqlalchemy import URL, Index, String, create_engine, insert, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from sa_patterns import InvalidCursor, paginate


class Base(DeclarativeBase):
    pass


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    priority: Mapped[int | None]  # NULL = not triaged yet
    created_at: Mapped[dt.datetime]
    # The index matches the ordering below: every page is an index range scan.
    __table_args__ = (Index("events_created_id", "created_at", "id"),)


SECRET = "docs-example-secret"  # in production: SA_PATTERNS_CURSOR_KEY in the environment


def main(url: URL) -> None:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    start = dt.datetime(2025, 1, 1)
    with engine.begin() as conn:
        conn.execute(insert(Event), [
            {"title": f"event {i}", "priority": None if i % 4 == 0 else i % 3,
             "created_at": start + dt.timedelta(minutes=i % 97)}
            for i in range(1, 501)
        ])
    Session = sessionmaker(engine)

    with Session() as session:
        # Newest first; ties broken by id (appended automatically when missing).
        order = [Event.created_at.desc(), Event.id.desc()]
        page = paginate(session, select(Event), order_by=order, limit=20, key=SECRET)
        seen = [e.id for e in page.items]
        while page.has_more:
            page = paginate(session, select(Event), order_by=order, after=page.next_cursor,
                            limit=20, key=SECRET)
            seen += [e.id for e in page.items]
        expected = session.scalars(select(Event.id).order_by(*order)).all()
        assert seen == list(expected)  # every row once, in the database's order

        # Mixed directions and NULLs: highest priority first, untriaged (NULL) last, then oldest first.
        order2 = [Event.priority.desc().nulls_last(), Event.created_at.asc()]
        first = paginate(session, select(Event), order_by=order2, limit=100, key=SECRET)
        second = paginate(session, select(Event), order_by=order2, after=first.next_cursor,
                          limit=100, key=SECRET)
        assert not {e.id for e in first.items} & {e.id for e in second.items}

        # The cursor is opaque and signed: editing it is refused before any SQL runs.
        assert first.next_cursor is not None
        forged = first.next_cursor[:-2] + ("AA" if not first.next_cursor.endswith("AA") else "BB")
        try:
            paginate(session, select(Event), order_by=order2, after=forged, key=SECRET)
        except InvalidCursor as exc:
            print("refused:", exc)
        else:
            raise AssertionError("a forged cursor was accepted")
    engine.dispose()
