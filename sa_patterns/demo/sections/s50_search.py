"""Full-text search: PostgreSQL computes the vector, the GIN index answers, any text is safe."""

from __future__ import annotations

from sqlalchemy import select, text

from ...search import headline, rank
from ..models.search import SearchArticle
from ..runner import DemoContext

TITLE = "Full-text search: generated tsvector column, GIN index, ranked and safe"

ARTICLES = [
    ("Indexing PostgreSQL", "GIN indexes make full-text search fast."),
    ("Baking bread", "Flour, water and salt; no database needed."),
    ("Relational databases", "Tables, rows, and indexes on them."),
]


def run(ctx: DemoContext) -> None:
    with ctx.Session.begin() as s:
        s.add_all([SearchArticle(title=t, body=b) for t, b in ARTICLES])
        s.execute(text("INSERT INTO search_articles (title, body) VALUES ('Raw SQL row', 'written without the ORM')"))
    with ctx.engine.connect() as conn:
        expr = conn.execute(
            text(
                "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a JOIN pg_attrdef d "
                "ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                "WHERE a.attrelid = 'search_articles'::regclass AND a.attname = 'search_vector'"
            )
        ).scalar_one()
        raw = conn.execute(text("SELECT search_vector::text FROM search_articles WHERE title = 'Raw SQL row'")).scalar_one()
    ctx.show("generated column (pg_get_expr)", expr)
    ctx.show("vector of a row inserted by raw SQL", raw)
    ctx.check("'raw':1A" in raw, "PostgreSQL filled the vector of a raw INSERT (no trigger, no ORM)")

    with ctx.Session() as s:
        found = [a.title for a in s.scalars(SearchArticle.search("indexes"))]
        ctx.show('SearchArticle.search("indexes")', found)
        ctx.check(found == ["Indexing PostgreSQL", "Relational databases"], "title hit (weight A) ranks first")
        q = "fast search"
        row = s.execute(
            select(SearchArticle.title, rank(SearchArticle, q), headline(SearchArticle.body, q))
            .where(SearchArticle.search_match(q))
        ).one()
        ctx.show(f"rank and headline for {q!r}", tuple(row))
        ctx.check("<b>search</b> <b>fast</b>" in row[2], "ts_headline marks the matches with the same tsquery")
        typed = [a.title for a in s.scalars(SearchArticle.search("relat datab", prefix=True))]
        ctx.show('search("relat datab", prefix=True)', typed)
        ctx.check(typed == ["Relational databases"], "prefix matching for search-as-you-type")
        typo = [a.title for a in s.scalars(SearchArticle.search("postgrse", fuzzy=True))]
        ctx.show('search("postgrse", fuzzy=True)', typo)
        ctx.check(typo == ["Indexing PostgreSQL"], "pg_trgm fallback finds a typo")
        nasty = "\"unbalanced ((( & | ! :* <-> \\ 🐘"
        ctx.check(s.scalars(SearchArticle.search(nasty)).all() == [], f"user text {nasty!r} is safe: no error")
        s.execute(text("SET LOCAL enable_seqscan = off"))  # a 4-row table would be scanned anyway
        stmt = SearchArticle.search("indexes").compile(ctx.engine, compile_kwargs={"literal_binds": True})
        plan = [line for line in s.execute(text(f"EXPLAIN {stmt}")).scalars() if "Index" in line]
        ctx.show("EXPLAIN", plan)
        ctx.check(any("ix_search_articles_search_vector" in p for p in plan), "the GIN index answers the search")
