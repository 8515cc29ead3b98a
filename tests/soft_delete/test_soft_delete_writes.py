"""session.delete / soft_delete / bulk delete become UPDATEs; restore revives one operation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from soft_delete_models import Author, Base, Comment, Guarded, Post
from sqlalchemy import Engine, delete, event, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import sa_patterns
from sa_patterns import ConflictError
from sa_patterns.testing.plugin import SQL


@pytest.fixture(scope="module", autouse=True)
def tables(engine: Engine) -> Iterator[None]:
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)
    yield


def tree(session: Session, author_id: int = 1, email: str = "ann@x") -> Author:
    author = Author(id=author_id, name="ann", email=email)
    for p in range(2):
        post = Post(id=author_id * 10 + p, title=f"p{p}")
        post.comments = [Comment(id=author_id * 100 + p * 10 + c, body="c") for c in range(2)]
        author.posts.append(post)
    session.add(author)
    session.flush()
    return author


def state(sql: SQL, table: str) -> dict[int, tuple[bool, object]]:
    return {r[0]: (r[1] is not None, r[2]) for r in sql(
        f"SELECT id, deleted_at, delete_batch FROM {table} ORDER BY id")}


def test_session_delete_is_an_update_with_cascade(session: Session, sql: SQL) -> None:
    statements: list[str] = []
    conn = session.connection()

    def capture(_c: object, _cur: object, statement: str, *rest: object) -> None:
        statements.append(statement)

    author = tree(session)
    event.listen(conn, "before_cursor_execute", capture)
    with sa_patterns.actor_scope("alice"):
        session.delete(author)
        session.flush()
    event.remove(conn, "before_cursor_execute", capture)
    assert not any(s.lstrip().upper().startswith("DELETE") for s in statements)
    rows = sql("SELECT deleted_by, delete_batch FROM sd_author WHERE id = 1")
    assert rows[0][0] == "alice"
    batch = rows[0][1]
    # every post and comment is still in its table, deleted by the same operation
    assert set(state(sql, "sd_post").values()) == {(True, batch)}
    assert set(state(sql, "sd_comment").values()) == {(True, batch)}
    assert len(state(sql, "sd_comment")) == 4
    # the objects left the session like deleted objects: get() does not return them
    assert author not in session
    assert author.deleted_at is not None and author.is_deleted
    assert session.get(Author, 1) is None
    assert session.get(Post, 10) is None
    assert session.scalars(select(Comment)).all() == []


def test_soft_delete_method_cascades_too(session: Session, sql: SQL) -> None:
    author = tree(session)
    author.soft_delete()
    session.flush()
    batch = sql("SELECT delete_batch FROM sd_author")[0][0]
    assert batch is not None
    assert set(state(sql, "sd_comment").values()) == {(True, batch)}
    assert session.get(Author, 1) is None


def test_restore_revives_exactly_one_operation(session: Session, sql: SQL) -> None:
    author = tree(session)
    # comment 100 is deleted on its own first: restoring the author must not revive it
    session.delete(session.get(Comment, 100))
    session.flush()
    first = state(sql, "sd_comment")[100]
    session.delete(author)
    session.flush()
    # an unrelated tree deleted by another operation stays deleted
    other = tree(session, author_id=2, email="bob@x")
    session.delete(other)
    session.flush()

    again = session.scalars(
        select(Author).where(Author.id == 1).execution_options(include_deleted=True)
    ).one()
    again.restore()
    session.flush()
    assert state(sql, "sd_author") [1] == (False, None)
    assert state(sql, "sd_author")[2][0] is True
    assert {k: v[0] for k, v in state(sql, "sd_post").items()} == {
        10: False, 11: False, 20: True, 21: True}
    comments = state(sql, "sd_comment")
    assert comments[100] == first  # deleted separately before: untouched
    assert [k for k, v in comments.items() if not v[0]] == [101, 110, 111]
    assert session.get(Author, 1) is again
    assert [p.id for p in session.get(Author, 1).posts] == [10, 11]  # type: ignore[union-attr]


def test_restore_of_a_child_does_not_revive_siblings(session: Session, sql: SQL) -> None:
    author = tree(session)
    session.delete(author)
    session.flush()
    post = session.get(Post, 10, execution_options={"include_deleted": True})
    assert post is not None
    post.restore()
    session.flush()
    posts = state(sql, "sd_post")
    assert posts[10][0] is False and posts[11][0] is True
    comments = state(sql, "sd_comment")
    assert [k for k, v in comments.items() if not v[0]] == [100, 101]  # its own children
    assert state(sql, "sd_author")[1][0] is True


def test_deleting_a_deleted_row_keeps_the_first_timestamp(session: Session, sql: SQL) -> None:
    tree(session)
    session.delete(session.get(Comment, 100))
    session.flush()
    before = sql("SELECT deleted_at, delete_batch FROM sd_comment WHERE id = 100")
    comment = session.get(Comment, 100, execution_options={"include_deleted": True})
    assert comment is not None
    comment.soft_delete()
    session.delete(comment)
    session.flush()
    assert sql("SELECT deleted_at, delete_batch FROM sd_comment WHERE id = 100") == before
    # the bulk path filters to live rows, so it is a no-op too
    session.execute(delete(Comment).where(Comment.id == 100))
    assert sql("SELECT deleted_at, delete_batch FROM sd_comment WHERE id = 100") == before


def test_restoring_a_live_row_is_a_no_op(session: Session, sql: SQL) -> None:
    author = tree(session)
    statements: list[str] = []
    conn = session.connection()
    event.listen(conn, "before_cursor_execute", lambda *a: statements.append(a[2]))
    author.restore()
    session.flush()
    assert statements == []
    assert state(sql, "sd_author")[1] == (False, None)


def test_restore_conflict_raises_and_changes_nothing(session: Session, sql: SQL) -> None:
    author = tree(session)
    session.delete(author)
    session.flush()
    session.add(Author(id=3, name="new ann", email="ann@x"))  # takes the key again
    session.flush()
    before = {t: sql(f"SELECT * FROM {t} ORDER BY id") for t in ("sd_author", "sd_post", "sd_comment")}
    old = session.get(Author, 1, execution_options={"include_deleted": True})
    assert old is not None
    old.restore()
    with pytest.raises(ConflictError) as info:
        session.flush()
    assert info.value.columns == ("email",)
    assert "email" in str(info.value)
    assert info.value.table == "sd_author"
    assert {t: sql(f"SELECT * FROM {t} ORDER BY id") for t in before} == before
    assert old.is_deleted  # the object still says what the row says
    session.flush()  # the session stays usable


def test_bulk_delete_is_one_update(session: Session, sql: SQL) -> None:
    tree(session)
    statements: list[str] = []
    conn = session.connection()
    event.listen(conn, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with sa_patterns.actor_scope("bulk"):
        result = session.execute(delete(Comment).where(Comment.id > 100))
    assert result.rowcount == 3  # type: ignore[attr-defined]
    writes = [s for s in statements if s.lstrip().upper().startswith(("UPDATE", "DELETE"))]
    assert len(writes) == 1 and writes[0].lstrip().upper().startswith("UPDATE")
    rows = sql("SELECT id, deleted_by, delete_batch FROM sd_comment WHERE deleted_at IS NOT NULL")
    assert sorted(r[0] for r in rows) == [101, 110, 111]
    assert {r[1] for r in rows} == {"bulk"} and len({r[2] for r in rows}) == 1
    # objects the statement deleted are gone from the identity map
    assert session.get(Comment, 101) is None
    assert session.get(Comment, 100) is not None


def test_bulk_delete_cascades_set_based_and_restores(session: Session, sql: SQL) -> None:
    tree(session)
    tree(session, author_id=2, email="bob@x")
    session.delete(session.get(Comment, 100))  # deleted on its own before
    session.flush()
    statements: list[str] = []
    conn = session.connection()
    event.listen(conn, "before_cursor_execute", lambda *a: statements.append(a[2]))
    session.execute(delete(Author).where(Author.id == 1))
    writes = [s for s in statements if s.lstrip().upper().startswith("UPDATE")]
    assert len(writes) == 3  # one per level: authors, posts, comments
    batch = sql("SELECT delete_batch FROM sd_author WHERE id = 1")[0][0]
    assert {k: v for k, v in state(sql, "sd_post").items() if v[0]} == {
        10: (True, batch), 11: (True, batch)}
    comments = {k: v for k, v in state(sql, "sd_comment").items() if v[0]}
    assert sorted(comments) == [100, 101, 110, 111] and comments[100][1] != batch
    assert session.get(Post, 10) is None  # children left the identity map too
    author = session.get(Author, 1, execution_options={"include_deleted": True})
    assert author is not None
    author.restore()
    session.flush()
    assert [k for k, v in state(sql, "sd_comment").items() if v[0]] == [100]
    assert not any(v[0] for v in state(sql, "sd_post").values())


def test_hard_delete_option_and_function(session: Session, sql: SQL) -> None:
    tree(session)
    session.delete(session.get(Comment, 101))
    session.flush()
    # purge: hard_delete sees deleted rows too
    session.execute(delete(Comment).where(Comment.id == 101).execution_options(hard_delete=True))
    assert 101 not in state(sql, "sd_comment")
    post = session.get(Post, 11)
    assert post is not None
    sa_patterns.hard_delete(session, post)
    session.flush()
    assert 11 not in state(sql, "sd_post")
    assert 110 not in state(sql, "sd_comment") and 111 not in state(sql, "sd_comment")
    assert 10 in state(sql, "sd_post")


def test_hard_delete_of_an_object_loaded_with_its_deleted_children(
    session: Session, sql: SQL
) -> None:
    tree(session)
    session.delete(session.get(Comment, 101))
    session.flush()
    session.expunge_all()
    post = session.get(Post, 10, execution_options={"include_deleted": True})
    assert post is not None
    assert [c.id for c in post.comments] == [100, 101]  # the ORM holds the deleted child too
    sa_patterns.hard_delete(session, post)
    session.flush()  # no "expected to delete 2 rows" warning: each row is deleted once
    assert 10 not in state(sql, "sd_post")
    assert not {100, 101} & set(state(sql, "sd_comment"))


def test_guard_trigger_turns_raw_delete_into_soft_delete(session: Session, sql: SQL) -> None:
    sql("INSERT INTO sd_guarded (id, name) VALUES (1, 'a'), (2, 'b')")
    sql("SELECT set_config('app.actor_id', 'raw-sql', true)")
    sql("DELETE FROM sd_guarded WHERE id = 1")
    rows = sql("SELECT id, deleted_at IS NOT NULL, deleted_by, delete_batch IS NOT NULL "
               "FROM sd_guarded ORDER BY id")
    assert rows == [(1, True, "raw-sql", True), (2, False, None, False)]
    first = sql("SELECT deleted_at FROM sd_guarded WHERE id = 1")
    sql("DELETE FROM sd_guarded WHERE id = 1")  # again: no-op
    assert sql("SELECT deleted_at FROM sd_guarded WHERE id = 1") == first
    # the ORM's hard delete passes the guard, then the guard is back on
    g = session.get(Guarded, 2)
    sa_patterns.hard_delete(session, g)
    session.flush()
    session.execute(delete(Guarded).execution_options(hard_delete=True))
    assert sql("SELECT id FROM sd_guarded") == []
    sql("INSERT INTO sd_guarded (id, name) VALUES (3, 'c')")
    sql("DELETE FROM sd_guarded")
    assert sql("SELECT id, deleted_at IS NOT NULL FROM sd_guarded") == [(3, True)]
    # ORM soft delete on the guarded table is a plain UPDATE
    session.add(Guarded(id=4, name="d"))
    session.flush()
    session.delete(session.get(Guarded, 4))
    session.flush()
    assert sql("SELECT id, deleted_at IS NOT NULL FROM sd_guarded ORDER BY id") == [
        (3, True), (4, True)]


async def test_async_delete_restore_and_hard_delete(
    async_session: AsyncSession, async_connection: object
) -> None:
    from sqlalchemy import text

    author = Author(id=1, name="ann", email="ann@x")
    author.posts = [Post(id=10, title="p", comments=[Comment(id=100, body="c")])]
    async_session.add(author)
    await async_session.flush()
    await async_session.delete(author)
    await async_session.flush()
    assert await async_session.get(Author, 1) is None
    conn = async_connection
    rows = (await conn.execute(text(  # type: ignore[attr-defined]
        "SELECT count(*) FROM sd_comment WHERE deleted_at IS NOT NULL"))).scalar()
    assert rows == 1
    again = (await async_session.scalars(
        select(Author).execution_options(include_deleted=True))).one()
    again.restore()
    await async_session.flush()
    rows = (await conn.execute(text(  # type: ignore[attr-defined]
        "SELECT count(*) FROM sd_comment WHERE deleted_at IS NULL"))).scalar()
    assert rows == 1
    await async_session.execute(delete(Comment))
    assert (await async_session.scalars(select(Comment))).all() == []
    post = await async_session.get(Post, 10)
    await sa_patterns.hard_delete(async_session, post)
    await async_session.flush()
    rows = (await conn.execute(text("SELECT count(*) FROM sd_post"))).scalar()  # type: ignore[attr-defined]
    assert rows == 0


async def test_async_soft_delete_loads_its_cascade_inside_the_flush(
    async_session: AsyncSession, async_connection: object
) -> None:
    from sqlalchemy import text

    author = Author(id=1, name="ann", email="ann@x")
    author.posts = [Post(id=10, title="p", comments=[Comment(id=100, body="c")])]
    async_session.add(author)
    await async_session.commit()  # expires everything: the cascade must load posts itself
    async_session.expunge_all()
    fresh = await async_session.get(Author, 1)
    assert fresh is not None
    fresh.soft_delete()  # no I/O here; the flush walks the cascade in SQLAlchemy's greenlet
    await async_session.flush()
    conn = async_connection
    rows = (await conn.execute(text(  # type: ignore[attr-defined]
        "SELECT count(DISTINCT delete_batch) + count(*) FILTER (WHERE delete_batch IS NULL) "
        "FROM (SELECT delete_batch FROM sd_author UNION ALL "
        "SELECT delete_batch FROM sd_post UNION ALL SELECT delete_batch FROM sd_comment) b"
    ))).scalar()
    assert rows == 1
    assert await async_session.get(Author, 1) is None


def test_concurrent_deletes_keep_the_first(engine: Engine) -> None:
    """Two transactions soft-delete the same row: the second waits for the first's row lock,
    re-checks ``deleted_at IS NULL`` and changes nothing, so the first timestamp, actor and
    batch stay; the loser's object shows the winner's marks."""
    import threading

    from sqlalchemy import text
    from sqlalchemy.orm import sessionmaker

    factory = sa_patterns.install(sessionmaker(engine))
    assert isinstance(factory, sessionmaker)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO sd_author (id, name, email) VALUES (900, 'x', 'x@race')"))
    try:
        first, second = factory(), factory()
        a = first.get(Author, 900)
        b = second.get(Author, 900)
        assert a is not None and b is not None
        with sa_patterns.actor_scope("first"):
            first.delete(a)
            first.flush()  # holds the row lock until commit
        done = threading.Event()

        def lose() -> None:
            with sa_patterns.actor_scope("second"):
                second.delete(b)
                second.commit()
            done.set()

        thread = threading.Thread(target=lose)
        thread.start()
        with engine.connect() as conn:  # wait until the second is blocked on the row lock
            for _ in range(200):
                waiting = conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()")).scalar()
                if waiting or done.wait(0.05):
                    break
        assert waiting and not done.is_set()
        first.commit()
        thread.join(10)
        assert done.is_set()
        with engine.connect() as conn:
            row = conn.execute(text(
                "SELECT deleted_by, delete_batch FROM sd_author WHERE id = 900")).one()
        assert row == ("first", a.delete_batch)
        assert b.deleted_by == "first" and b.delete_batch == a.delete_batch
        first.close()
        second.close()
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM sd_author WHERE id = 900"))


def test_delete_of_an_object_nobody_references(session: Session, sql: SQL) -> None:
    """The session holds clean objects weakly: the flush must keep what it soft-deletes alive."""
    import gc

    tree(session)
    session.flush()
    session.expunge_all()
    session.delete(session.get(Author, 1))  # no reference kept here
    gc.collect()
    session.flush()
    assert all(v[0] for v in state(sql, "sd_comment").values())
    assert session.scalars(select(Author)).all() == []
