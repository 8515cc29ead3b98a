"""Full-text search with Searchable: weighted generated vector, GIN index, ranked search,
headlines, search-as-you-type, typo tolerance and a search across a relationship."""

from sqlalchemy import URL, ForeignKey, String, create_engine, select, text, union
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

import sa_patterns
from sa_patterns.search import Searchable, headline, rank


class Base(DeclarativeBase):
    pass


class Author(Searchable, Base):
    __tablename__ = "authors"
    __searchable__ = ["name"]  # one column, default weight D
    __search_config__ = "simple"  # names are not stemmed
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Article(Searchable, Base):
    __tablename__ = "articles"
    __searchable__ = {"title": "A", "body": "B"}  # a title hit outranks a body hit
    __search_config__ = "english"
    __search_trigram__ = ("title",)  # pg_trgm index for search(fuzzy=True)
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str]
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"), index=True)
    author: Mapped[Author] = relationship()


def main(url: URL) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)  # migrations: alembic autogenerate

    Session = sa_patterns.install(sessionmaker(engine))
    with Session.begin() as session:
        ada, bob = Author(name="Ada Lovelace"), Author(name="Bob Smith")
        session.add_all(
            [
                Article(title="Indexing PostgreSQL", body="GIN indexes make text search fast.", author=ada),
                Article(title="Baking bread", body="Flour, water, salt. No database needed.", author=bob),
                Article(title="Relational databases", body="Tables, rows and indexes.", author=bob),
            ]
        )

    with Session() as session:
        # 1. ranked search; any user text is safe (web search syntax, never a syntax error)
        found = session.scalars(Article.search("indexes")).all()
        assert [a.title for a in found] == ["Indexing PostgreSQL", "Relational databases"]
        assert session.scalars(Article.search('"text search" -bread')).one().title == "Indexing PostgreSQL"
        assert session.scalars(Article.search("((( ' & !")).all() == []

        # 2. rank and headline in a select list: same tsquery, same config as the filter
        q = "fast search"
        _, score, snippet = session.execute(
            select(Article.title, rank(Article, q), headline(Article.body, q, start_sel="<mark>", stop_sel="</mark>"))
            .where(Article.search_match(q))
        ).one()
        assert score > 0 and snippet == "GIN indexes make text <mark>search</mark> <mark>fast</mark>."

        # 3. search-as-you-type and typo tolerance
        assert session.scalars(Article.search("relat datab", prefix=True)).one().title == "Relational databases"
        assert session.scalars(Article.search("postgrse", fuzzy=True)).one().title == "Indexing PostgreSQL"

        # 4. across a relationship, index-backed: a UNION of two GIN-indexed searches
        q = "lovelace"
        ids = union(
            select(Article.id).where(Article.search_match(q)),
            select(Article.id).join(Article.author).where(Author.search_match(q)),
        )
        by_author = session.scalars(select(Article).where(Article.id.in_(ids))).all()
        assert [a.title for a in by_author] == ["Indexing PostgreSQL"]

        # 5. PostgreSQL holds the vector (a raw INSERT gets one too) and uses the GIN index
        session.execute(text("INSERT INTO articles (title, body, author_id) SELECT 'Raw SQL', 'no ORM', min(id) FROM authors"))
        assert session.scalars(Article.search("raw")).one().title == "Raw SQL"
        session.execute(text("SET LOCAL enable_seqscan = off"))  # tiny table: force the choice
        stmt = Article.search("indexes").compile(engine, compile_kwargs={"literal_binds": True})
        plan = "\n".join(session.execute(text(f"EXPLAIN {stmt}")).scalars())
        assert "Bitmap Index Scan on ix_articles_search_vector" in plan
        session.rollback()
    engine.dispose()
