"""Searchable with SoftDeleteMixin and TenantMixin: search() is an ORM select, so the installed
session filters apply: only live rows of the current tenant come back (sync and async)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, String, event, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sa_patterns
from sa_patterns import SoftDeleteMixin, TenantMixin, TenantRequired, tenant_scope
from sa_patterns.options import INCLUDE_DELETED
from sa_patterns.search import Searchable, rank
from sa_patterns.testing.plugin import SQL


class Base(DeclarativeBase):
    pass


class Post(SoftDeleteMixin, TenantMixin, Searchable, Base):
    __tablename__ = "search_compose_posts"
    __searchable__ = {"title": "A", "body": "B"}
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str]


@pytest.fixture(scope="module", autouse=True)
def tables(engine: Engine) -> Iterator[None]:
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)
    yield


def seed(session: Session) -> None:
    for tenant in (1, 2):
        with tenant_scope(tenant):
            session.add_all(
                [
                    Post(title=f"Elephants of tenant {tenant}", body="large grey animals"),
                    Post(title=f"Deleted elephant {tenant}", body="soft deleted soon"),
                ]
            )
            session.flush()
    with tenant_scope(1):
        gone = session.scalars(select(Post).where(Post.title == "Deleted elephant 1")).one()
        session.delete(gone)  # a soft delete
        session.flush()


def test_search_obeys_tenant_and_soft_delete(session: Session, sql: SQL) -> None:
    seed(session)
    # the database holds all four rows, one of them marked deleted
    assert sql("SELECT count(*), count(deleted_at) FROM search_compose_posts")[0] == (4, 1)
    with tenant_scope(1):
        found = session.scalars(Post.search("elephant")).all()
        assert [p.title for p in found] == ["Elephants of tenant 1"]
        everything = session.scalars(Post.search("elephant").execution_options(**{INCLUDE_DELETED: True})).all()
        assert sorted(p.title for p in everything) == ["Deleted elephant 1", "Elephants of tenant 1"]
        scored = session.execute(select(Post.title, rank(Post, "elephant")).where(Post.search_match("elephant"))).all()
        assert [r.title for r in scored] == ["Elephants of tenant 1"]
    with tenant_scope(2):
        assert sorted(p.title for p in session.scalars(Post.search("elephant"))) == [
            "Deleted elephant 2",
            "Elephants of tenant 2",
        ]
    with pytest.raises(TenantRequired):
        session.scalars(Post.search("elephant")).all()


def test_composed_search_still_uses_gin_index(session: Session) -> None:
    """EXPLAIN the statement really sent (with the tenant and soft-delete criteria in it), on
    enough rows for the planner to choose: the rare word goes through the GIN index."""
    seed(session)
    session.execute(
        text(
            "INSERT INTO search_compose_posts (tenant_id, title, body) "
            "SELECT 1 + i % 2, 'filler ' || i, 'common words only ' || md5(i::text) FROM generate_series(1, 4000) i"
        )
    )
    # flush GIN's pending list (VACUUM does it in production) and refresh the statistics
    session.execute(text("SELECT gin_clean_pending_list('ix_search_compose_posts_search_vector'::regclass)"))
    session.execute(text("ANALYZE search_compose_posts"))
    conn = session.connection()
    sent: list[tuple[str, object]] = []

    def capture(conn: object, cursor: object, statement: str, parameters: object, context: object, many: bool) -> None:
        sent.append((statement, parameters))

    event.listen(conn, "before_cursor_execute", capture)
    try:
        with tenant_scope(1):
            session.scalars(Post.search("elephant")).all()
    finally:
        event.remove(conn, "before_cursor_execute", capture)
    statement, parameters = next((s, p) for s, p in sent if "search_vector @@" in s)
    assert "deleted_at IS NULL" in statement and "tenant_id" in statement
    plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + statement, parameters).scalars())  # type: ignore[arg-type]
    assert "Bitmap Index Scan on ix_search_compose_posts_search_vector" in plan


async def test_async_search_obeys_both(async_session: AsyncSession) -> None:
    await async_session.run_sync(seed)
    with tenant_scope(1):
        found = (await async_session.scalars(Post.search("animals"))).all()
        assert [p.title for p in found] == ["Elephants of tenant 1"]
    with tenant_scope(2):
        found = (await async_session.scalars(Post.search("elephant", prefix=True))).all()
        assert len(found) == 2
