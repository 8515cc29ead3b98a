"""Soft delete: read overhead of ``SoftDeleteMixin``'s criteria vs a hand-written
``deleted_at IS NULL`` filter vs sqlalchemy-easy-softdelete, and the bulk soft delete.

Same schema for every variant: 2,000 authors (5 % soft-deleted), 10,000 posts (10 % deleted),
``sd_post.author_id`` indexed. Each phase runs 2,000 queries on distinct keys in one session:

* ``pk``: ``select(Post).where(Post.id == x)``
* ``selectin``: ``select(Author).where(Author.id == x).options(selectinload(Author.posts))``
* ``join``: ``select(Post.id, Author.name).join(Post.author).where(Author.id == x)``
* ``joinedload``: ``select(Author).where(Author.id == x).options(joinedload(Author.posts))``

Every variant runs in its own worker process (sqlalchemy-easy-softdelete hooks the global
``Session`` class, so it must not share a process with the others); the parent alternates the
workers and times each phase round trip (the pipe costs microseconds against ~0.5 s phases).
Each worker also reports its own CPU time per phase: on a loaded machine wall time swings by
several × between repetitions, client CPU time does not, and the hook's cost is CPU.

``sa_patterns, full install()`` composes every pattern's hooks (as an application does);
``soft-delete hooks only`` composes the context and soft-delete modules alone, to show what
this pattern itself costs.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import random
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    URL,
    ForeignKey,
    String,
    Text,
    Uuid,
    create_engine,
    delete,
    event,
    select,
    text,
    update,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    joinedload,
    mapped_column,
    relationship,
    selectinload,
    sessionmaker,
)

import sa_patterns
from bench.harness import Row, Section, Table, compare, consume, sized

NAME = "soft_delete"
TITLE = "Soft delete (SoftDeleteMixin vs hand-written filter vs sqlalchemy-easy-softdelete)"

AUTHORS = 2_000
POSTS = 10_000
QUERIES = sized(400, 2_000)
BULK_ROWS = 100_000
SCHEMA = "bench_soft_delete"
PHASES = ("pk", "selectin", "join", "joinedload")
VARIANTS = {
    "no filter (reference)": "plain",
    "hand-written deleted_at IS NULL": "manual",
    "sa_patterns, full install()": "ours",
    "sa_patterns, soft-delete hooks only": "ours_only",
    "sqlalchemy-easy-softdelete": "easy",
}
BASELINE = "hand-written deleted_at IS NULL"


# --- models ---------------------------------------------------------------------------------


def _plain_models() -> tuple[type[Any], type[Any]]:
    class Base(DeclarativeBase):
        pass

    class Author(Base):
        __tablename__ = "sd_author"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(50))
        deleted_at: Mapped[datetime | None]
        deleted_by: Mapped[str | None]
        delete_batch: Mapped[uuid.UUID | None]
        posts: Mapped[list[Post]] = relationship(back_populates="author")

    class Post(Base):
        __tablename__ = "sd_post"
        id: Mapped[int] = mapped_column(primary_key=True)
        author_id: Mapped[int] = mapped_column(ForeignKey("sd_author.id"), index=True)
        title: Mapped[str] = mapped_column(String(100))
        deleted_at: Mapped[datetime | None]
        deleted_by: Mapped[str | None]
        delete_batch: Mapped[uuid.UUID | None]
        author: Mapped[Author] = relationship(back_populates="posts")

    return Author, Post


def _manual_models() -> tuple[type[Any], type[Any]]:
    """Hand-written filters: the relationship's own primaryjoin hides deleted posts."""

    class Base(DeclarativeBase):
        pass

    class Author(Base):
        __tablename__ = "sd_author"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(50))
        deleted_at: Mapped[datetime | None]
        deleted_by: Mapped[str | None]
        delete_batch: Mapped[uuid.UUID | None]
        posts: Mapped[list[Post]] = relationship(
            primaryjoin="and_(Author.id == Post.author_id, Post.deleted_at.is_(None))",
            viewonly=True,
        )

    class Post(Base):
        __tablename__ = "sd_post"
        id: Mapped[int] = mapped_column(primary_key=True)
        author_id: Mapped[int] = mapped_column(ForeignKey("sd_author.id"), index=True)
        title: Mapped[str] = mapped_column(String(100))
        deleted_at: Mapped[datetime | None]
        deleted_by: Mapped[str | None]
        delete_batch: Mapped[uuid.UUID | None]
        author: Mapped[Author] = relationship(
            primaryjoin="and_(Author.id == Post.author_id, Author.deleted_at.is_(None))",
            viewonly=True,
        )

    return Author, Post


def _ours_models() -> tuple[type[Any], type[Any], type[Any]]:
    class Base(DeclarativeBase):
        pass

    class Author(sa_patterns.SoftDeleteMixin, Base):
        __tablename__ = "sd_author"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(50))
        posts: Mapped[list[Post]] = relationship(back_populates="author")

    class Post(sa_patterns.SoftDeleteMixin, Base):
        __tablename__ = "sd_post"
        id: Mapped[int] = mapped_column(primary_key=True)
        author_id: Mapped[int] = mapped_column(ForeignKey("sd_author.id"), index=True)
        title: Mapped[str] = mapped_column(String(100))
        author: Mapped[Author] = relationship(back_populates="posts")

    class Row(sa_patterns.SoftDeleteMixin, Base):
        __tablename__ = "sd_bulk"
        id: Mapped[int] = mapped_column(primary_key=True)
        payload: Mapped[str] = mapped_column(String(20))

    return Author, Post, Row


def _easy_models() -> tuple[type[Any], type[Any]]:
    from sqlalchemy_easy_softdelete.mixin import generate_soft_delete_mixin_class

    class SoftDelete(generate_soft_delete_mixin_class()):  # type: ignore[misc]
        deleted_at: datetime
        # the same loaded columns as the other variants: only the filtering differs
        deleted_by: Mapped[str | None] = mapped_column(Text)
        delete_batch: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    class Base(DeclarativeBase):
        pass

    class Author(SoftDelete, Base):
        __tablename__ = "sd_author"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(50))
        posts: Mapped[list[Post]] = relationship(back_populates="author")

    class Post(SoftDelete, Base):
        __tablename__ = "sd_post"
        id: Mapped[int] = mapped_column(primary_key=True)
        author_id: Mapped[int] = mapped_column(ForeignKey("sd_author.id"), index=True)
        title: Mapped[str] = mapped_column(String(100))
        author: Mapped[Author] = relationship(back_populates="posts")

    return Author, Post


# --- worker ---------------------------------------------------------------------------------


def _queries(variant: str, author: Any, post: Any) -> dict[str, Callable[[int], Any]]:
    manual = variant == "manual"

    def live(stmt: Any, *entities: Any) -> Any:
        return stmt.where(*(e.deleted_at.is_(None) for e in entities)) if manual else stmt

    return {
        "pk": lambda x: live(select(post).where(post.id == x), post),
        "selectin": lambda x: live(
            select(author).where(author.id == x).options(selectinload(author.posts)), author
        ),
        "join": lambda x: live(
            select(post.id, author.name).join(post.author).where(author.id == x), post, author
        ),
        "joinedload": lambda x: live(
            select(author).where(author.id == x).options(joinedload(author.posts)), author
        ),
    }




def _worker(conn: multiprocessing.connection.Connection, variant: str, url: str) -> None:
    engine = create_engine(url, connect_args={"options": f"-csearch_path={SCHEMA}"})
    if variant == "easy":
        author, post = _easy_models()
    elif variant in ("ours", "ours_only"):
        author, post, _ = _ours_models()
    elif variant == "manual":
        author, post = _manual_models()
    else:
        author, post = _plain_models()
    factory = sessionmaker(engine)
    if variant == "ours_only":
        # isolate this pattern's cost: compose only the context and soft-delete hooks (an
        # application installs every pattern)
        from sa_patterns import context, soft_delete

        sa_patterns.install(factory, patterns=[context.PATTERN, soft_delete.PATTERN])
    elif variant == "ours":
        sa_patterns.install(factory)
    queries = _queries(variant, author, post)
    conn.send("ready")
    while True:
        message = conn.recv()
        if message is None:
            break
        phase, keys = message
        build = queries[phase]
        seen = 0
        cpu = time.process_time()
        with factory() as session:
            for key in keys:
                seen += consume(session, phase, build(key), "posts")
        conn.send((seen, time.process_time() - cpu))
    engine.dispose()


class _Worker:
    def __init__(self, variant: str, url: URL) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        dsn = url.render_as_string(hide_password=False)
        self.process = ctx.Process(target=_worker, args=(child, variant, dsn), daemon=True)
        self.process.start()
        assert self.conn.recv() == "ready"
        self.seen: dict[str, int] = {}
        self.cpu: dict[str, list[float]] = {}

    def phase(self, phase: str, keys: list[int]) -> None:
        self.conn.send((phase, keys))
        self.seen[phase], cpu = self.conn.recv()
        self.cpu.setdefault(phase, []).append(cpu)

    def close(self) -> None:
        self.conn.send(None)
        self.process.join(30)


def _cpu_table(phase: str, workers: dict[str, _Worker], reps: int) -> Table:
    """Client CPU seconds per phase, as the worker measured them: far steadier than wall time
    on a shared machine, and it is where a ``do_orm_execute`` hook spends its cost."""
    samples = {label: w.cpu[phase][-reps:] for label, w in workers.items()}
    base = samples[BASELINE]
    rows = [
        Row(
            label,
            statistics.median(values),
            min(values),
            max(values),
            statistics.median(v / b for v, b in zip(values, base, strict=True)),
        )
        for label, values in samples.items()
    ]
    return Table(f"{phase}: client CPU time of the same runs (× vs hand-written filter)", rows)


# --- data and bulk ----------------------------------------------------------------------------


def _setup_data(url: URL) -> Any:
    engine = create_engine(url, connect_args={"options": f"-csearch_path={SCHEMA}"})
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
    author, _post, row = _ours_models()
    with engine.begin() as conn:
        sa_patterns.create_all(conn, author.metadata)
        conn.execute(
            text("INSERT INTO sd_author (id, name, deleted_at) SELECT i, 'a' || i, "
                 "CASE WHEN i % 20 = 0 THEN now() END FROM generate_series(1, :n) i"),
            {"n": AUTHORS},
        )
        conn.execute(
            text("INSERT INTO sd_post (id, author_id, title, deleted_at) SELECT i, "
                 "1 + (i * 7919) % :a, 't' || i, CASE WHEN i % 10 = 0 THEN now() END "
                 "FROM generate_series(1, :n) i"),
            {"n": POSTS, "a": AUTHORS},
        )
        conn.execute(
            text("INSERT INTO sd_bulk (id, payload) SELECT i, 'p' FROM generate_series(1, :n) i"),
            {"n": BULK_ROWS},
        )
        conn.execute(text("ANALYZE"))
    return engine, row


def _bulk(engine: Any, row: Any, reps: int) -> tuple[Table, int]:
    factory = sa_patterns.install(sessionmaker(engine))
    assert isinstance(factory, sessionmaker)
    statements: list[str] = []

    def reset(_: str) -> None:
        with engine.begin() as conn:
            conn.execute(text("UPDATE sd_bulk SET deleted_at = NULL, deleted_by = NULL, "
                              "delete_batch = NULL WHERE deleted_at IS NOT NULL"))

    def ours() -> None:
        with factory() as session:
            conn = session.connection()
            event.listen(conn, "before_cursor_execute", lambda *a: statements.append(a[2]))
            session.execute(delete(row))
            session.commit()

    def manual() -> None:
        with Session(engine) as session:
            session.execute(
                update(row.__table__)
                .where(row.__table__.c.deleted_at.is_(None))
                .values(deleted_at=datetime.now().astimezone())
            )
            session.commit()

    table = compare(
        f"bulk soft delete of {BULK_ROWS:,} rows (median of {reps} reps)",
        {"hand-written UPDATE ... SET deleted_at": manual, "sa_patterns delete(Model)": ours},
        reps=reps,
        baseline="hand-written UPDATE ... SET deleted_at",
        setup=reset,
    )
    writes = [s for s in statements if s.lstrip().upper().startswith(("UPDATE", "DELETE"))]
    per_run = len(writes) // (reps + 1)
    return table, per_run


def run(url: URL, reps: int) -> Section:
    engine, row = _setup_data(url)
    section = Section(NAME, TITLE)
    workers = {label: _Worker(variant, url) for label, variant in VARIANTS.items()}
    rnd = random.Random(42)
    try:
        for phase in PHASES:
            pool = list(range(1, (POSTS if phase == "pk" else AUTHORS) + 1))
            rnd.shuffle(pool)
            keys = pool[:QUERIES]
            cases = {
                label: (lambda w=w, phase=phase, keys=keys: w.phase(phase, keys))
                for label, w in workers.items()
            }
            table = compare(
                f"{phase}: {QUERIES:,} queries, wall time (median of {reps} reps; "
                "× vs hand-written filter)",
                cases,
                reps=reps,
                baseline=BASELINE,
            )
            section.tables.append(table)
            section.tables.append(_cpu_table(phase, workers, reps))
        details = {label: dict(w.seen) for label, w in workers.items()}
        filtered = [details[label] for label, v in VARIANTS.items() if v != "plain"]
        assert all(d == filtered[0] for d in filtered), details  # same rows = same semantics
    finally:
        for w in workers.values():
            w.close()
    bulk_table, statements = _bulk(engine, row, reps)
    section.tables.append(bulk_table)
    section.notes += [
        f"{AUTHORS:,} authors (5 % deleted), {POSTS:,} posts (10 % deleted); each variant in "
        "its own worker process; timing = one phase round trip from the parent.",
        f"rows seen per phase: {details}",
        f"bulk soft delete: {statements} write statement(s) per delete(Model) of "
        f"{BULK_ROWS:,} rows (target: one UPDATE).",
        "sqlalchemy-easy-softdelete 0.9.1 declares sqlalchemy<2.1 but runs these queries on "
        "SQLAlchemy 2.1 (installed with pip, then SQLAlchemy 2.1.9 restored).",
        "the gap between 'full install()' and 'soft-delete hooks only' is the other patterns' "
        "session listeners (tenancy resync, views, blind index, typed JSON) and their event "
        "dispatch, paid even by statements on models without those mixins.",
        "every variant maps and loads the same columns (deleted_at, deleted_by, delete_batch), "
        "so the ratios isolate the filtering.",
        "hand-written variant: WHERE deleted_at IS NULL on each statement's entities and "
        "viewonly relationships whose primaryjoin carries the filter (the usual manual recipe).",
    ]
    engine.dispose()
    return section
