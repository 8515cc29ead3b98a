"""Alembic round trip of the generated search column: autogenerate creates it with its GIN
index, finds nothing once applied, replaces column + index when weights, columns or config
change (reversibly), and drops everything on the way down. Checked in the catalog."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata, produce_migrations
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations import Operations, ops
from sqlalchemy import URL, Engine, MetaData, String, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import sa_patterns.alembic
from sa_patterns.cli.init import init
from sa_patterns.search import Searchable


def models(searchable: dict[str, str], config: str = "english", trigram: tuple[str, ...] = ()) -> MetaData:
    class Base(DeclarativeBase):
        pass

    class Post(Searchable, Base):
        __tablename__ = "search_posts"
        __searchable__ = searchable
        __search_config__ = config
        __search_trigram__ = trigram
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str] = mapped_column(String(200))
        body: Mapped[str | None]
        summary: Mapped[str | None]

    return Base.metadata


def context(conn: Any, md: MetaData) -> MigrationContext:
    return MigrationContext.configure(conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": md})


def diffs(engine: Engine, md: MetaData) -> list[Any]:
    with engine.connect() as conn:
        return list(compare_metadata(context(conn, md), md))


def flat(operations: list[ops.MigrateOperation]) -> list[ops.MigrateOperation]:
    out: list[ops.MigrateOperation] = []
    for op in operations:
        out.extend(flat(op.ops) if isinstance(op, ops.ModifyTableOps) else [op])
    return out


def migrate(engine: Engine, md: MetaData) -> tuple[list[ops.MigrateOperation], list[ops.MigrateOperation]]:
    """Autogenerate against ``md`` and apply the upgrade; return (upgrade, downgrade) ops."""
    with engine.begin() as conn:
        ctx = context(conn, md)
        script = produce_migrations(ctx, md)
        up, down = flat(script.upgrade_ops.ops), flat(script.downgrade_ops.ops)
        operations = Operations(ctx)
        for op in up:
            operations.invoke(op)
    return up, down


def downgrade(engine: Engine, down: list[ops.MigrateOperation]) -> None:
    with engine.begin() as conn:
        operations = Operations(context(conn, MetaData()))
        for op in down:
            operations.invoke(op)


def vector_expr(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a JOIN pg_attrdef d "
                "ON d.adrelid = a.attrelid AND d.adnum = a.attnum WHERE a.attrelid = "
                "to_regclass('search_posts') AND a.attname = 'search_vector' AND a.attgenerated = 's'"
            )
        ).scalar()


def indexes(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'search_posts' AND schemaname = current_schema()")
        )
        return {r[0]: r[1] for r in rows if not r[0].endswith("_pkey")}


def kinds(operations: list[ops.MigrateOperation]) -> list[str]:
    return [type(o).__name__ for o in operations]


def test_autogenerate_create_nodiff_replace_downgrade(engine: Engine) -> None:
    v1 = models({"title": "A", "body": "B"})
    up, _ = migrate(engine, v1)
    assert kinds(up) == ["CreateTableOp", "CreateIndexOp"]
    assert "'B'::\"char\"" in (vector_expr(engine) or "")
    assert "USING gin (search_vector)" in indexes(engine)["ix_search_posts_search_vector"]
    assert diffs(engine, v1) == []  # no false diff (and no "cannot be modified" warning)
    assert diffs(engine, models({"title": "A", "body": "B"})) == []  # a fresh, identical model

    # weight changed: drop index, drop column, add column, create index
    v2 = models({"title": "A", "body": "C"})
    up, down = migrate(engine, v2)
    assert kinds(up) == ["DropIndexOp", "DropColumnOp", "AddColumnOp", "CreateIndexOp"]
    assert "'C'::\"char\"" in (vector_expr(engine) or "")
    assert "ix_search_posts_search_vector" in indexes(engine)
    assert diffs(engine, v2) == []

    # the downgrade restores the previous expression and index
    downgrade(engine, down)
    assert "'B'::\"char\"" in (vector_expr(engine) or "")
    assert "USING gin (search_vector)" in indexes(engine)["ix_search_posts_search_vector"]
    assert diffs(engine, v1) == []

    # a column added to the search, and a config change: replaced each time
    v3 = models({"title": "A", "body": "B", "summary": "D"})
    up, _ = migrate(engine, v3)
    assert kinds(up) == ["DropIndexOp", "DropColumnOp", "AddColumnOp", "CreateIndexOp"]
    assert "summary" in (vector_expr(engine) or "")
    v4 = models({"title": "A", "body": "B", "summary": "D"}, config="simple")
    up, _ = migrate(engine, v4)
    assert kinds(up) == ["DropIndexOp", "DropColumnOp", "AddColumnOp", "CreateIndexOp"]
    assert "'simple'::regconfig" in (vector_expr(engine) or "")
    assert diffs(engine, v4) == []

    # trigram asked for: the extension and a trigram index appear
    v5 = models({"title": "A", "body": "B", "summary": "D"}, config="simple", trigram=("title",))
    with engine.begin() as conn:
        conn.execute(text("DROP EXTENSION IF EXISTS pg_trgm"))
    up, _ = migrate(engine, v5)
    assert kinds(up) == ["CreateEntityOp", "CreateIndexOp"]
    assert "gin_trgm_ops" in indexes(engine)["ix_search_posts_title_trgm"]
    assert diffs(engine, v5) == []

    # models gone: the table (column, indexes) goes; extensions are database-wide and are
    # never dropped by autogenerate (only by the downgrade of the revision that created them)
    up, _ = migrate(engine, MetaData())
    assert "DropTableOp" in kinds(up) and "DropEntityOp" not in kinds(up)
    assert vector_expr(engine) is None and indexes(engine) == {}
    with engine.begin() as conn:
        conn.execute(text("DROP EXTENSION IF EXISTS pg_trgm"))


def test_cli_revision_upgrade_check_downgrade(tmp_path: Path, pg_url: URL, db_schema: str) -> None:
    schema = f"{db_schema}_cli"
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
        conn.execute(text("DROP EXTENSION IF EXISTS pg_trgm"))
    url = pg_url.update_query_dict({"options": f"-csearch_path={schema},public"})
    cfg = Config(str(init(tmp_path / "migrations", metadata="unused:unused")))
    cfg.attributes["configure_logger"] = False
    cfg.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    versions = tmp_path / "migrations" / "versions"
    try:
        cfg.attributes["target_metadata"] = models({"title": "A", "body": "B"}, trigram=("title",))
        command.revision(cfg, message="one", autogenerate=True, rev_id="one")
        script = (versions / "one_one.py").read_text()
        assert "sa.Computed(" in script and "postgresql_using='gin'" in script
        assert "op.create_entity(sa_patterns.schema.Extension(" in script
        command.upgrade(cfg, "head")
        command.check(cfg)
        cfg.cmd_opts = argparse.Namespace(autogenerate=True)
        command.revision(cfg, message="noop", autogenerate=True)  # nothing changed: no file
        cfg.cmd_opts = None
        assert len(list(versions.glob("*.py"))) == 1

        cfg.attributes["target_metadata"] = models({"title": "B", "body": "B"}, trigram=("title",))
        command.revision(cfg, message="two", autogenerate=True, rev_id="two")
        two = (versions / "two_two.py").read_text()
        assert "op.drop_column('search_posts', 'search_vector')" in two
        compile(two, "two", "exec")
        command.upgrade(cfg, "head")
        command.check(cfg)
        command.downgrade(cfg, "one")
        scoped = create_engine(url)
        try:  # the downgrade restored revision one exactly
            assert diffs(scoped, models({"title": "A", "body": "B"}, trigram=("title",))) == []
        finally:
            scoped.dispose()
        command.downgrade(cfg, "base")
        with admin.connect() as conn:
            left = conn.execute(
                text("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = :s"),
                {"s": schema},
            ).scalars().all()
            assert set(left) <= {"alembic_version", "alembic_version_pkc"}
            assert conn.execute(text("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'")).scalar() == 0
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def test_plain_tsvector_column_is_replaced_by_generated(engine: Engine) -> None:
    """A trigger-maintained vector (as sqlalchemy-searchable makes) becomes a generated one."""
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS search_posts"))
        conn.execute(
            text(
                "CREATE TABLE search_posts (id serial PRIMARY KEY, title varchar(200) NOT NULL, "
                "body varchar, summary varchar, search_vector tsvector)"
            )
        )
        conn.execute(text("CREATE INDEX ix_search_posts_search_vector ON search_posts USING gin (search_vector)"))
    v1 = models({"title": "A", "body": "B"})
    up, down = migrate(engine, v1)
    assert kinds(up) == ["DropIndexOp", "DropColumnOp", "AddColumnOp", "CreateIndexOp"]
    assert "setweight" in (vector_expr(engine) or "")
    assert diffs(engine, v1) == []
    downgrade(engine, down)
    assert vector_expr(engine) is None  # back to the plain column
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE search_posts"))
