"""The pytest plugin's fixtures, as your own tests use them (this file shows the test code;
main() runs the same checks on a plain session so the docs build can execute it)."""

from sqlalchemy import URL, ForeignKey, String, create_engine, select
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)

from sa_patterns import NPlusOneDetected, count_queries, nplusone_guard
from sa_patterns.testing.factories import Factories, Factory, seq


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    books: Mapped[list["Book"]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


authors = Factory(Author, name=seq("Author {n}"))
books = Factory(Book, title=seq("Book {n}"), author=authors)


# --- tests/test_books.py in your project -------------------------------------------------------
def test_listing_is_two_queries(session: Session, factories: Factories, query_counter, nplusone) -> None:  # type: ignore[no-untyped-def]
    factories.create_batch(books, 5)
    session.flush()
    query_counter.reset()
    with nplusone(max_lazy_loads=1):
        from sqlalchemy.orm import selectinload

        listing = session.scalars(select(Author).options(selectinload(Author.books))).all()
        assert sum(len(a.books) for a in listing) == 5
    assert query_counter.count == 2


# --- run the same test body outside pytest ------------------------------------------------------
def main(url: URL) -> None:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    with engine.connect() as connection:
        outer = connection.begin()  # what the `connection` fixture does: rolled back after
        session = sessionmaker(bind=connection, join_transaction_mode="create_savepoint")()

        def guard(**kw: int):  # type: ignore[no-untyped-def]
            return nplusone_guard(session, **kw)

        with count_queries(connection) as counter:
            test_listing_is_two_queries(session, Factories(session, seed=0), counter, guard)
        session.expire_all()
        try:
            with nplusone_guard(session):
                for author in session.scalars(select(Author)):
                    len(author.books)
        except NPlusOneDetected:
            pass
        else:
            raise AssertionError("N+1 not detected")
        session.close()
        outer.rollback()
    with engine.connect() as conn:
        assert conn.scalar(select(Book.id).limit(1)) is None  # nothing survived the test
    engine.dispose()
