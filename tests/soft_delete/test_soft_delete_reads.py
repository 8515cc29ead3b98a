"""Deleted rows are hidden everywhere an ORM statement can reach them, and only there."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from soft_delete_models import Author, Base, Comment, Post
from sqlalchemy import Engine, exists, func, select, update
from sqlalchemy.orm import Session, aliased, contains_eager, joinedload, selectinload, subqueryload

import sa_patterns
from sa_patterns.testing.plugin import SQL


@pytest.fixture(scope="module", autouse=True)
def tables(engine: Engine) -> Iterator[None]:
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)
    yield


@pytest.fixture
def data(sql: SQL) -> None:
    """Authors 1 (live) and 2 (deleted); author 1 has posts 10 (live) and 11 (deleted);
    post 10 has comments 100 (live) and 101 (deleted)."""
    sql("INSERT INTO sd_author (id, name, email, deleted_at) VALUES "
        "(1, 'ann', 'ann@x', NULL), (2, 'bob', 'bob@x', now())")
    sql("INSERT INTO sd_post (id, author_id, title, deleted_at) VALUES "
        "(10, 1, 'live', NULL), (11, 1, 'gone', now()), (12, 2, 'of bob', NULL)")
    sql("INSERT INTO sd_comment (id, post_id, body, deleted_at) VALUES "
        "(100, 10, 'live', NULL), (101, 10, 'gone', now())")


def ids(rows: object) -> list[int]:
    return sorted(r.id for r in rows)  # type: ignore[attr-defined]


def test_top_level_select_hides_deleted(session: Session, data: None) -> None:
    assert ids(session.scalars(select(Author))) == [1]
    assert session.scalar(select(func.count()).select_from(Author)) == 1
    assert session.scalar(select(func.count(Author.id))) == 1


def test_include_deleted_shows_them(session: Session, data: None) -> None:
    rows = session.scalars(select(Author).execution_options(include_deleted=True))
    assert ids(rows) == [1, 2]
    rows = session.scalars(select(Author), execution_options={"include_deleted": True})
    assert ids(rows) == [1, 2]


def test_is_deleted_hybrid_in_sql_and_python(session: Session, data: None) -> None:
    stmt = select(Author).where(Author.is_deleted).execution_options(include_deleted=True)
    (bob,) = session.scalars(stmt).all()
    assert bob.id == 2 and bob.is_deleted is True
    ann = session.get(Author, 1)
    assert ann is not None and ann.is_deleted is False


def test_explicit_join_and_outerjoin_keep_their_semantics(session: Session, data: None) -> None:
    # inner join: the deleted post does not join
    rows = session.execute(select(Author.id, Post.id).join(Author.posts)).all()
    assert sorted(rows) == [(1, 10)]
    # LEFT JOIN: the filter is in ON, so an author whose only child is deleted... still appears
    stmt = (
        select(Post.id, Comment.id)
        .outerjoin(Post.comments)
        .where(Post.id.in_([10, 12]))
        .order_by(Post.id)
    )
    assert session.execute(stmt).all() == [(10, 100), (12, None)]
    sql_text = str(stmt.compile())
    assert "LEFT OUTER JOIN" in sql_text


def test_outerjoin_puts_criteria_in_on_clause(session: Session, data: None) -> None:
    seen: list[str] = []
    from sqlalchemy import event

    conn = session.connection()

    def capture(*args: object) -> None:
        seen.append(str(args[2]))

    event.listen(conn, "before_cursor_execute", capture)
    try:
        session.execute(select(Post.id, Comment.id).outerjoin(Post.comments)).all()
    finally:
        event.remove(conn, "before_cursor_execute", capture)
    statement = " ".join(seen[-1].split())
    on_clause = statement.split(" ON ", 1)[1].split(" WHERE ", 1)[0]
    assert "sd_comment.deleted_at IS NULL" in on_clause


def test_aliases_are_filtered(session: Session, data: None) -> None:
    a = aliased(Author)
    assert ids(session.scalars(select(a))) == [1]


def test_lazy_load(session: Session, data: None) -> None:
    ann = session.get(Author, 1)
    assert ann is not None
    assert [p.id for p in ann.posts] == [10]
    assert [c.id for c in ann.posts[0].comments] == [100]


def test_many_to_one_lazy_load_of_deleted_parent(session: Session, data: None) -> None:
    post = session.get(Post, 12)  # live post of deleted bob
    assert post is not None
    assert post.author is None


@pytest.mark.parametrize("loader", [joinedload, selectinload, subqueryload])
def test_eager_loads(session: Session, data: None, loader: object) -> None:
    stmt = select(Author).options(
        loader(Author.posts).options(loader(Post.comments))  # type: ignore[operator]
    )
    authors = session.scalars(stmt).unique().all()
    assert [a.id for a in authors] == [1]
    assert [p.id for p in authors[0].posts] == [10]
    assert [c.id for c in authors[0].posts[0].comments] == [100]


def test_contains_eager(session: Session, data: None) -> None:
    stmt = select(Author).outerjoin(Author.posts).options(contains_eager(Author.posts))
    (ann,) = session.scalars(stmt).unique().all()
    assert [p.id for p in ann.posts] == [10]


def test_include_deleted_propagates_to_loaders(session: Session, data: None) -> None:
    stmt = select(Author).where(Author.id == 1).execution_options(include_deleted=True)
    ann = session.scalars(stmt).one()
    assert [p.id for p in ann.posts] == [10, 11]  # lazy load of that statement's object
    stmt2 = (
        select(Author)
        .options(selectinload(Author.posts))
        .execution_options(include_deleted=True, populate_existing=True)
    )
    authors = session.scalars(stmt2).all()
    assert {a.id: [p.id for p in a.posts] for a in authors} == {1: [10, 11], 2: [12]}


def test_exists_and_subqueries(session: Session, data: None) -> None:
    has_post = exists().where(Post.author_id == Author.id)
    assert ids(session.scalars(select(Author).execution_options(include_deleted=True)
                               .where(has_post))) == [1, 2]
    # Post 11 is deleted: the subquery must not count it
    n_posts = select(func.count(Post.id)).where(Post.author_id == Author.id).scalar_subquery()
    assert session.execute(select(Author.id, n_posts)).all() == [(1, 1)]
    stale = exists().where(Comment.post_id == Post.id, Comment.body == "gone")
    assert session.scalars(select(Post).where(stale)).all() == []


def test_session_get(session: Session, data: None) -> None:
    assert session.get(Author, 2) is None
    bob = session.get(Author, 2, execution_options={"include_deleted": True})
    assert bob is not None and bob.deleted_at is not None


def test_bulk_update_skips_deleted_rows(session: Session, data: None, sql: SQL) -> None:
    session.execute(update(Author).values(name="renamed"))
    assert sql("SELECT id, name FROM sd_author ORDER BY id") == [(1, "renamed"), (2, "bob")]
    session.execute(update(Author).values(name="all").execution_options(include_deleted=True))
    assert sql("SELECT id, name FROM sd_author ORDER BY id") == [(1, "all"), (2, "all")]


def test_unrelated_models_untouched(session: Session, data: None) -> None:
    # a non-soft-deletable statement still runs (the option matches nothing)
    assert session.execute(select(func.now())).scalar() is not None


async def test_async_reads(async_session: object, async_connection: object) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    assert isinstance(async_session, AsyncSession) and isinstance(async_connection, AsyncConnection)
    await async_connection.execute(text(
        "INSERT INTO sd_author (id, name, email, deleted_at) VALUES "
        "(1, 'ann', 'ann@x', NULL), (2, 'bob', 'bob@x', now())"))
    await async_connection.execute(text(
        "INSERT INTO sd_post (id, author_id, title, deleted_at) VALUES "
        "(10, 1, 'live', NULL), (11, 1, 'gone', now())"))
    rows = (await async_session.scalars(select(Author).options(selectinload(Author.posts)))).all()
    assert [(a.id, [p.id for p in a.posts]) for a in rows] == [(1, [10])]
    assert await async_session.get(Author, 2) is None
    everything = await async_session.scalars(
        select(Author).execution_options(include_deleted=True))
    assert ids(everything) == [1, 2]
    stmt = (
        select(Author)
        .where(Author.id == 1)
        .options(selectinload(Author.posts))
        .execution_options(include_deleted=True, populate_existing=True)
    )
    ann = (await async_session.scalars(stmt)).one()
    assert [p.id for p in ann.posts] == [10, 11]


def test_identity_map_after_a_delete_elsewhere(session: Session, data: None, sql: SQL) -> None:
    """An object soft-deleted by someone else: once expired (e.g. by commit), get() re-checks
    the database with the criteria and drops it, as for a row deleted elsewhere."""
    ann = session.get(Author, 1)
    assert ann is not None
    sql("UPDATE sd_author SET deleted_at = now() WHERE id = 1")
    session.expire(ann)
    assert session.get(Author, 1) is None
    assert ann not in session
