"""Searchable added to a populated table: a plain search_vector kept by the toolkit's trigger,
filled in batches, the GIN index built concurrently; autogenerate then finds the table as the
model declares it, and a change of weights is written as an online refill."""

from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import URL, Text, create_engine, func, insert, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sa_patterns.alembic  # registers op.add_search_vector
from sa_patterns import Searchable


class Before(DeclarativeBase):  # the table as production has it
    pass


class OldArticle(Before):
    __tablename__ = "articles"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    body: Mapped[str | None] = mapped_column(Text)


class Base(DeclarativeBase):  # the model, now searchable
    pass


class Article(Searchable, Base):
    __tablename__ = "articles"
    __searchable__ = {"title": "A", "body": "B"}
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    body: Mapped[str | None] = mapped_column(Text)


class Later(DeclarativeBase):  # a later release weighs the body less
    pass


class LaterArticle(Searchable, Later):
    __tablename__ = "articles"
    __searchable__ = {"title": "A", "body": "C"}
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    body: Mapped[str | None] = mapped_column(Text)


def main(url: URL) -> None:
    engine = create_engine(url)
    Before.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(OldArticle), [
            {"title": f"Article {n}", "body": "vacuum and autovacuum" if n % 2 else "index builds"}
            for n in range(5_000)
        ])

    # The revision's upgrade() as autogenerate writes it for an existing table, run as Alembic
    # runs it: the trigger-kept column filled in batches, then the index CONCURRENTLY.
    with engine.connect() as conn:
        op = Operations(MigrationContext.configure(conn))
        op.add_search_vector("articles", {"title": "A", "body": "B"}, batch_size=500)
        with op.get_context().autocommit_block():
            op.create_index_concurrently(
                "ix_articles_search_vector", "articles", ["search_vector"], postgresql_using="gin")

    with Session(engine) as session:
        # every row has its vector; the application searches as with a generated column
        assert session.scalar(select(func.count()).where(Article.search_vector.is_(None))) == 0
        assert len(session.scalars(Article.search("autovacuum")).all()) == 2_500
        # a new row gets its vector from the trigger, fetched after the flush as a generated one
        article = Article(title="Partial indexes", body="a WHERE clause on the index")
        session.add(article)
        session.flush()
        assert "'partial':1A" in str(article.search_vector)
        session.commit()

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            **sa_patterns.alembic.configure_kwargs(), "target_metadata": Base.metadata})
        # a second autogenerate has nothing to add: the trigger computes the model's expression
        assert compare_metadata(context, Base.metadata) == []
        # the weights change: autogenerate writes the new function and a batched refill
        context = MigrationContext.configure(conn, opts={
            **sa_patterns.alembic.configure_kwargs(), "target_metadata": Later.metadata})
        script = render_python_code(produce_migrations(context, Later.metadata).upgrade_ops)
        assert "op.change_search_vector('articles', {'title': 'A', 'body': 'C'}, " \
            "previous={'title': 'A', 'body': 'B'})" in script
        trigger = conn.scalar(text("SELECT tgenabled FROM pg_trigger WHERE tgname = 'articles_search_vector'"))
        assert trigger == "O"
    engine.dispose()
