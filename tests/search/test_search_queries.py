"""Searchable against PostgreSQL: the generated column and its index as the catalog holds
them, search/rank/headline/prefix/fuzzy, per-row configuration, sync and async."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, ForeignKey, String, inspect, select, text, union
from sqlalchemy.dialects.postgresql import REGCONFIG
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

import sa_patterns
from sa_patterns.search import Searchable, headline, rank
from sa_patterns.testing.plugin import SQL


class Base(DeclarativeBase):
    pass


class Author(Searchable, Base):
    __tablename__ = "search_authors"
    __searchable__ = ("name",)
    __search_config__ = "simple"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Article(Searchable, Base):
    __tablename__ = "search_articles"
    __searchable__ = {"title": "A", "body": "B"}
    __search_trigram__ = ("title",)
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str | None]
    author_id: Mapped[int | None] = mapped_column(ForeignKey("search_authors.id"), index=True)
    author: Mapped[Author | None] = relationship()


class Note(Searchable, Base):
    __tablename__ = "search_notes"
    __searchable__ = {"body": "A"}
    __search_config_column__ = "language"
    id: Mapped[int] = mapped_column(primary_key=True)
    language: Mapped[str | None] = mapped_column(REGCONFIG)
    body: Mapped[str]


ARTICLES = [
    ("Learning PostgreSQL", "Full text search with GIN indexes is fast."),
    ("Cooking pasta", "Boil water, add salt. PostgreSQL is not needed here."),
    ("Gardening", "Roses need sun and water."),
    ("Databases", "An introduction to relational databases and search."),
]


@pytest.fixture(scope="module", autouse=True)
def tables(engine: Engine) -> Iterator[None]:
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)
    yield


@pytest.fixture
def articles(session: Session) -> list[Article]:
    ada = Author(name="Ada Lovelace")
    rows = [Article(title=t, body=b) for t, b in ARTICLES]
    rows[2].author = ada
    session.add_all(rows)
    session.flush()
    return rows


def test_catalog_holds_generated_column_and_gin_index(sql: SQL) -> None:
    (generated, expr), = sql(
        "SELECT a.attgenerated, pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
        "JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = 'search_articles'::regclass AND a.attname = 'search_vector'"
    )
    assert generated == "s"
    assert "setweight(to_tsvector('english'::regconfig" in expr and "'A'::\"char\"" in expr
    indexes = {r[0]: r[1] for r in sql("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'search_articles'")}
    assert "USING gin (search_vector)" in indexes["ix_search_articles_search_vector"]
    assert "USING gin (title gin_trgm_ops)" in indexes["ix_search_articles_title_trgm"]


def test_vector_is_filled_by_postgres_and_deferred(session: Session, articles: list[Article], sql: SQL) -> None:
    rows = sql("SELECT title, search_vector::text FROM search_articles ORDER BY id")
    assert all(vector for _, vector in rows)
    assert "'postgresql':2A" in rows[0][1] and "'gin':7B" in rows[0][1]  # title lexemes carry weight A
    # raw SQL insert, no ORM at all: the vector is still there
    sql("INSERT INTO search_articles (title, body) VALUES ('Raw', 'inserted without the ORM')")
    (vector,), = sql("SELECT search_vector::text FROM search_articles WHERE title = 'Raw'")
    assert "'raw':1A" in vector and "'orm':5B" in vector
    session.expunge_all()
    loaded = session.scalars(select(Article).where(Article.id == articles[0].id)).one()
    assert "search_vector" in inspect(loaded).unloaded  # deferred: not loaded by default


def test_search_filters_and_orders_by_rank(session: Session, articles: list[Article]) -> None:
    found = session.scalars(Article.search("postgresql")).all()
    # title match (weight A) ranks above a body match (weight B)
    assert [a.title for a in found] == ["Learning PostgreSQL", "Cooking pasta"]
    assert session.scalars(Article.search('"relational databases" -cooking')).all() == [articles[3]]
    assert session.scalars(Article.search("search or roses")).all() != []
    assert session.scalars(Article.search("zebra")).all() == []


def test_rank_and_headline_use_the_same_config(session: Session, articles: list[Article]) -> None:
    q = "indexes"
    rows = session.execute(
        select(
            Article.title,
            rank(Article, q).label("r"),
            headline(Article.body, q, start_sel="<mark>", stop_sel="</mark>"),
        )
        .where(Article.search_match(q))
        .order_by(rank(Article, q).desc())
    ).all()
    # english stemming: "indexes" matches "indexes" through the stem 'index' in rank and headline
    assert rows[0].title == "Learning PostgreSQL" and rows[0].r > 0
    assert rows[0][2] == "Full text search with GIN <mark>indexes</mark> is fast."
    tagged = session.scalar(
        select(headline(Article.body, "water", start_sel='<em class="hit">', stop_sel="</em>", highlight_all=True))
        .where(Article.id == articles[2].id)
    )
    assert tagged == 'Roses need sun and <em class="hit">water</em>.'


def test_prefix_search_as_you_type(session: Session, articles: list[Article]) -> None:
    assert session.scalars(Article.search("postgr", prefix=True)).all()[0].title == "Learning PostgreSQL"
    assert [a.title for a in session.scalars(Article.search("relat datab", prefix=True))] == ["Databases"]
    assert session.scalars(Article.search("postgr")).all() == []  # whole words without prefix
    assert session.scalars(Article.search("' & ! :*", prefix=True)).all() == []


def test_fuzzy_fallback_finds_typos_after_exact_matches(session: Session, articles: list[Article]) -> None:
    assert session.scalars(Article.search("postgrse")).all() == []
    found = session.scalars(Article.search("postgrse", fuzzy=True)).all()
    assert [a.title for a in found] == ["Learning PostgreSQL"]
    exact_first = session.scalars(Article.search("databases", fuzzy=True)).all()
    assert exact_first[0].title == "Databases"


def test_per_row_config_column(session: Session, sql: SQL) -> None:
    session.add_all(
        [
            Note(language="french", body="Les chevaux mangent"),
            Note(language="english", body="The horses are eating"),
            Note(language=None, body="Running dogs"),  # NULL falls back to english
        ]
    )
    session.flush()
    vectors = [r[0] for r in sql("SELECT search_vector::text FROM search_notes ORDER BY id")]
    assert "'cheval'" in vectors[0] and "'hors'" in vectors[1] and "'run'" in vectors[2]
    french = session.scalars(Note.search("cheval", config="french")).all()
    assert [n.body for n in french] == ["Les chevaux mangent"]
    # each row's own config for parsing the query: exact, but not index-backed
    per_row = session.scalars(Note.search("horses", config=Note.language)).all()
    assert [n.body for n in per_row] == ["The horses are eating"]
    assert session.scalars(Note.search("running")).all()[0].body == "Running dogs"


def test_search_across_relationship_stays_index_backed(session: Session, articles: list[Article], sql: SQL) -> None:
    q = "lovelace"
    ids = union(
        select(Article.id).where(Article.search_match(q)),
        select(Article.id).join(Article.author).where(Author.search_match(q)),
    )
    stmt = select(Article).where(Article.id.in_(ids))
    assert [a.title for a in session.scalars(stmt)] == ["Gardening"]
    session.execute(text("SET LOCAL enable_seqscan = off"))
    compiled = stmt.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
    plan = "\n".join(r[0] for r in sql(f"EXPLAIN {compiled}"))
    assert "ix_search_articles_search_vector" in plan
    assert "ix_search_authors_search_vector" in plan


def test_search_uses_gin_index(session: Session, articles: list[Article], sql: SQL) -> None:
    session.execute(text("SET LOCAL enable_seqscan = off"))
    compiled = Article.search("postgresql").compile(session.get_bind(), compile_kwargs={"literal_binds": True})
    plan = "\n".join(r[0] for r in sql(f"EXPLAIN {compiled}"))
    assert "Bitmap Index Scan on ix_search_articles_search_vector" in plan


async def test_async_search(async_session: AsyncSession) -> None:
    async_session.add_all([Article(title=t, body=b) for t, b in ARTICLES])
    await async_session.flush()
    found = (await async_session.scalars(Article.search("postgr", prefix=True))).all()
    assert next(a.title for a in found) == "Learning PostgreSQL"
    r = await async_session.scalar(select(rank(Article, "water")).where(Article.title == "Gardening"))
    assert r is not None and r > 0


def test_unsorted_search_and_rank_normalization(session: Session, articles: list[Article]) -> None:
    unsorted = Article.search("water", sort=False)
    assert unsorted._order_by_clauses == ()  # no ORDER BY: the caller sorts
    assert sorted(a.title for a in session.scalars(unsorted)) == ["Cooking pasta", "Gardening"]
    plain, normalized = session.execute(
        select(rank(Article, "water"), rank(Article, "water", normalization=1)).where(Article.id == articles[2].id)
    ).one()
    assert 0 < normalized < plain  # 1: divided by 1 + log(document length)
