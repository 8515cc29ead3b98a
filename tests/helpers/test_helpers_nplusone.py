"""N+1 guard and query counting: lazy loads in a loop fail naming the relationship; eager
loading passes; statement budgets count what reaches the driver (flushes included)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, ForeignKey, String, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
)

from sa_patterns import NPlusOneDetected, count_queries, nplusone_guard
from sa_patterns.nplusone import QueryCounter
from sa_patterns.testing.plugin import NPlusOneGuard


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "np_authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(30))
    books: Mapped[list[Book]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "np_books"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("np_authors.id"))
    title: Mapped[str] = mapped_column(String(30))
    author: Mapped[Author] = relationship(back_populates="books")


@pytest.fixture(scope="module", autouse=True)
def tables(engine: Engine) -> Iterator[None]:
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO np_authors (id, name) SELECT g, 'a' || g FROM generate_series(1, 5) g"))
        conn.execute(text("INSERT INTO np_books (id, author_id, title) "
                          "SELECT g, 1 + g % 5, 'b' || g FROM generate_series(1, 15) g"))
    yield
    Base.metadata.drop_all(engine)


def test_lazy_loads_in_a_loop_fail_naming_the_relationship(session: Session) -> None:
    with pytest.raises(NPlusOneDetected) as info, nplusone_guard(session):
        for author in session.scalars(select(Author)):
            _ = author.books
    message = str(info.value)
    assert "Author.books was lazy-loaded 5 times" in message
    assert "selectinload" in message and "[sap42]" in message


def test_eager_loading_passes(session: Session) -> None:
    with nplusone_guard(session, max_statements=2) as counter:
        authors = session.scalars(select(Author).options(selectinload(Author.books))).all()
        assert sum(len(a.books) for a in authors) == 15
    assert counter.count == 2


def test_single_lazy_load_is_allowed_and_limit_is_configurable(session: Session) -> None:
    with nplusone_guard(session):
        first = session.get(Author, 1)
        assert first is not None and len(first.books) == 3
    with nplusone_guard(session, max_lazy_loads=10):
        for book in session.scalars(select(Book)):
            _ = book.author  # many-to-one: at most one query per distinct author


def test_statement_budget_lists_statements(session: Session) -> None:
    with pytest.raises(NPlusOneDetected, match=r"sent 3 statements, more than max_statements=2") as info, \
            nplusone_guard(session, max_statements=2):
        session.add(Author(id=100, name="new"))
        session.flush()  # the flush's INSERT counts
        session.execute(select(Author.id))
        session.execute(select(Book.id))
    assert "INSERT INTO np_authors" in str(info.value)


def test_error_in_block_is_not_masked(session: Session) -> None:
    with pytest.raises(KeyError), nplusone_guard(session, max_statements=0):
        session.execute(select(Author.id))
        raise KeyError("boom")


def test_count_queries_on_session_and_engine(session: Session, engine: Engine) -> None:
    with count_queries(session) as q:
        session.execute(select(Author.id))
        session.execute(select(Book.id))
    assert q.count == 2
    with count_queries(engine) as q2, engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert q2.count == 1
    session.execute(select(Author.id))
    assert q.count == 2  # detached


def test_query_counter_fixture(session: Session, query_counter: QueryCounter) -> None:
    query_counter.reset()
    session.scalars(select(Author)).all()
    assert query_counter.count == 1
    assert "FROM np_authors" in query_counter.statements[0]


def test_nplusone_fixture(session: Session, nplusone: NPlusOneGuard) -> None:
    with pytest.raises(NPlusOneDetected, match=r"Author\.books"), nplusone():
        for author in session.scalars(select(Author)):
            _ = author.books
    with nplusone(session, max_statements=2):
        session.scalars(select(Author).options(selectinload(Author.books))).first()


async def test_async_session(async_session: AsyncSession) -> None:
    with pytest.raises(NPlusOneDetected, match=r"Book\.author"), nplusone_guard(async_session):
        books = (await async_session.scalars(select(Book))).all()
        for book in books:
            await async_session.run_sync(lambda s, b=book: b.author)
    with count_queries(async_session) as q:
        await async_session.execute(select(Author.id))
    assert q.count == 1
