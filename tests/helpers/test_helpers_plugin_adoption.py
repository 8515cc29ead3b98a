"""A user's project adopts the plugin: it is loaded through its pytest11 entry point with no
conftest wiring, gives per-test rollback, and its new fixtures work. Runs pytest in a
subprocess on a throwaway project, against the same server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import URL

CONFTEST = '''
import pytest
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from sa_patterns.testing.factories import Factory, seq


class Base(DeclarativeBase):
    pass


class Shelf(Base):
    __tablename__ = "shelves"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(30))
    books: Mapped[list["Book"]] = relationship(back_populates="shelf")


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(30))
    shelf_id: Mapped[int] = mapped_column(ForeignKey("shelves.id"))
    shelf: Mapped[Shelf] = relationship(back_populates="books")


shelves = Factory(Shelf, name=seq("shelf {n}"))
books = Factory(Book, title=seq("book {n}"), shelf=shelves)


@pytest.fixture(scope="module", autouse=True)
def tables(engine):
    Base.metadata.create_all(engine)
    yield
'''

TESTS = '''
import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from conftest import Book, Shelf, books
from sa_patterns import NPlusOneDetected


def test_a_writes(session, factories, sql):
    factories.create_batch(books, 3)
    session.commit()  # releases the test's savepoint; the outer transaction still rolls back
    assert sql("SELECT count(*) FROM books")[0][0] == 3


def test_b_sees_nothing(sql):
    assert sql("SELECT count(*) FROM books")[0][0] == 0


def test_c_counter_and_guard(session, factories, query_counter, nplusone):
    factories.create_batch(books, 4)
    session.flush()
    session.expire_all()
    query_counter.reset()
    with nplusone(max_statements=2):
        shelves = session.scalars(select(Shelf).options(selectinload(Shelf.books))).all()
        assert sum(len(s.books) for s in shelves) == 4
    assert query_counter.count == 2
    session.expire_all()
    with pytest.raises(NPlusOneDetected, match="Shelf.books"):
        with nplusone():
            for shelf in session.scalars(select(Shelf)):
                len(shelf.books)


async def test_d_async(async_session, sql):
    async_session.add(Shelf(id=99, name="async"))
    await async_session.flush()
'''

INI = '''
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = session
asyncio_default_test_loop_scope = session
filterwarnings = error
'''


def test_user_project_uses_the_plugin(tmp_path: Path, pg_url: URL) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_library.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text(INI)
    server = pg_url.set(database="postgres").render_as_string(hide_password=False)
    env = {**os.environ, "DATABASE_URL": server}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 passed" in run.stdout
