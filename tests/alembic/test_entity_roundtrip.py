"""Every entity kind through Alembic: autogenerate → upgrade → autogenerate is empty →
change → replace → downgrade leaves nothing. Checked against the catalog, not our own reader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata, produce_migrations
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, text

import sa_patterns.alembic
from sa_patterns.alembic.ops import CreateEntityOp, DropEntityOp
from sa_patterns.cli.init import init
from sa_patterns.schema import (
    Extension,
    Function,
    MaterializedView,
    Policy,
    RowLevelSecurity,
    Trigger,
    View,
    register,
)


def build_metadata(schema: str | None, *, variant: int = 0) -> MetaData:
    md = MetaData()
    prefix = f"{schema}." if schema else ""
    Table("items", md, Column("id", Integer, primary_key=True), Column("name", String(50)), schema=schema)
    body = "BEGIN NEW.name := lower(NEW.name); RETURN NEW; END;"
    if variant:
        body = "BEGIN NEW.name := upper(NEW.name); RETURN NEW; END;"
    register(
        md,
        Extension("pg_trgm", schema="public"),
        Function(schema, "items_norm", returns="trigger", body=body),
        Trigger(schema, "items", "items_norm", when="BEFORE INSERT OR UPDATE",
                function=f"{prefix}items_norm()"),
        RowLevelSecurity(schema, "items"),
        Policy(schema, "items", "items_visible", using="id > 0" if not variant else "id > 1"),
        View(schema, "item_names", definition=f"SELECT id, name FROM {prefix}items"),
        MaterializedView(
            schema, "item_counts", definition=f"SELECT count(*) AS n FROM {prefix}items",
            indexes=(f"CREATE UNIQUE INDEX item_counts_n ON {prefix}item_counts (n)",),
        ),
    )
    return md


def diffs(engine: Engine, md: MetaData) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": md})
        return [d for d in compare_metadata(ctx, md)]


def catalog_objects(engine: Engine, schema: str) -> dict[str, set[str]]:
    with engine.connect() as conn:
        q = lambda sql: {r[0] for r in conn.execute(text(sql), {"s": schema})}  # noqa: E731
        return {
            "functions": q("SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid=p.pronamespace WHERE nspname=:s"),
            "triggers": q("SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid=t.tgrelid JOIN pg_namespace n ON n.oid=c.relnamespace WHERE nspname=:s AND NOT tgisinternal"),
            "policies": q("SELECT policyname FROM pg_policies WHERE schemaname=:s"),
            "rls": q("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid=c.relnamespace WHERE nspname=:s AND relrowsecurity AND relforcerowsecurity"),
            "views": q("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid=c.relnamespace WHERE nspname=:s AND relkind IN ('v','m')"),
            "tables": q("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid=c.relnamespace WHERE nspname=:s AND relkind='r'"),
            "extensions": {r[0] for r in conn.execute(text("SELECT extname FROM pg_extension WHERE extname='pg_trgm'"))},
        }


@pytest.fixture
def project(tmp_path: Path, engine: Engine, db_schema: str) -> Iterator[tuple[Path, Engine]]:
    yield tmp_path, engine
    with engine.begin() as conn:
        conn.execute(text("DROP EXTENSION IF EXISTS pg_trgm"))


def test_ops_roundtrip_every_kind(engine: Engine, db_schema: str) -> None:
    md = build_metadata(db_schema)
    with engine.begin() as conn:
        conn.execute(text("DROP EXTENSION IF EXISTS pg_trgm"))
        ctx = MigrationContext.configure(conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": md})
        script = produce_migrations(ctx, md)
        kinds = [type(op).__name__ for op in script.upgrade_ops.ops]
        # extension first, table, then objects in dependency order
        assert kinds[0] == "CreateEntityOp" and isinstance(script.upgrade_ops.ops[0], CreateEntityOp)
        assert script.upgrade_ops.ops[0].entity == Extension("pg_trgm", schema="public")
        assert "CreateTableOp" in kinds
        op = Operations(ctx)
        for migrate_op in script.upgrade_ops.ops:
            op.invoke(migrate_op)
    found = catalog_objects(engine, db_schema)
    assert found["functions"] == {"items_norm"}
    assert found["triggers"] == {"items_norm"}
    assert found["policies"] == {"items_visible"}
    assert found["rls"] == {"items"}
    assert found["views"] == {"item_names", "item_counts"}
    assert found["extensions"] == {"pg_trgm"}

    # no false diff once applied
    assert diffs(engine, md) == []

    # a changed function body and policy: replace ops only
    md2 = build_metadata(db_schema, variant=1)
    with engine.begin() as conn:
        ctx = MigrationContext.configure(conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": md2})
        script = produce_migrations(ctx, md2)
        ops = script.upgrade_ops.ops
        assert sorted(type(o).__name__ for o in ops) == ["ReplaceEntityOp", "ReplaceEntityOp"]
        op = Operations(ctx)
        for migrate_op in ops:
            op.invoke(migrate_op)
        body = conn.execute(text("SELECT prosrc FROM pg_proc WHERE proname='items_norm'")).scalar_one()
        assert "upper" in body
        # downgrade of the replace restores the old definition
        for migrate_op in script.downgrade_ops.ops:
            op.invoke(migrate_op)
        body = conn.execute(text("SELECT prosrc FROM pg_proc WHERE proname='items_norm'")).scalar_one()
        assert "lower" in body
    assert diffs(engine, md) == []

    # models without the objects: drops before the table drop (extensions are never dropped by
    # autogenerate: they are database-wide; the downgrade that created one drops it)
    empty = MetaData()
    with engine.begin() as conn:
        ctx = MigrationContext.configure(conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": empty})
        script = produce_migrations(ctx, empty)
        ops = script.upgrade_ops.ops
        drop_table_at = [type(o).__name__ for o in ops].index("DropTableOp")
        assert all(isinstance(o, DropEntityOp) for o in ops[:drop_table_at])
        op = Operations(ctx)
        for migrate_op in ops:
            op.invoke(migrate_op)
    found = catalog_objects(engine, db_schema)
    assert not any(found[k] for k in ("functions", "triggers", "policies", "views", "tables"))
    assert found["extensions"] == {"pg_trgm"}
    with engine.begin() as conn:
        conn.execute(text("DROP EXTENSION pg_trgm"))


def test_autogenerate_script_imports_and_roundtrips(tmp_path: Path, pg_url, db_schema: str, capsys) -> None:  # type: ignore[no-untyped-def]
    """The full command path: init, revision --autogenerate, upgrade, check, downgrade base."""
    from alembic.config import Config
    from sqlalchemy import create_engine

    schema = f"{db_schema}_cli"
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
        conn.execute(text("DROP EXTENSION IF EXISTS pg_trgm"))
    md = build_metadata(None)  # unqualified, as most apps write models; search_path picks the schema
    url = pg_url.update_query_dict({"options": f"-csearch_path={schema}"})
    ini = init(tmp_path / "migrations", metadata="unused:unused")
    cfg = Config(str(ini))
    cfg.attributes["target_metadata"] = md
    cfg.attributes["configure_logger"] = False
    cfg.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    try:
        command.revision(cfg, message="init", autogenerate=True)
        script = next((tmp_path / "migrations" / "versions").glob("*.py")).read_text()
        assert "import sa_patterns.schema" in script
        assert "op.create_entity(sa_patterns.schema.Trigger(" in script
        compile(script, "migration", "exec")
        command.upgrade(cfg, "head")
        command.check(cfg)  # raises when autogenerate finds anything
        # no empty revision file when nothing changed (as `alembic revision --autogenerate`)
        import argparse

        cfg.cmd_opts = argparse.Namespace(autogenerate=True)
        capsys.readouterr()
        command.revision(cfg, message="noop", autogenerate=True)
        cfg.cmd_opts = None
        assert len(list((tmp_path / "migrations" / "versions").glob("*.py"))) == 1
        assert "no revision file was written" in capsys.readouterr().out  # said, not silent
        command.downgrade(cfg, "base")
        found = catalog_objects(admin, schema)
        left = {k: v for k, v in found.items() if v and k != "tables"}
        assert left == {}
        assert found["tables"] == {"alembic_version"}
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            conn.execute(text("DROP EXTENSION IF EXISTS pg_trgm"))
        admin.dispose()


def test_objects_in_another_schema_are_compared_without_include_schemas(engine: Engine, db_schema: str) -> None:
    other = f"{db_schema}_other"
    md = MetaData()
    register(md, Function(other, "answer", returns="int", language="sql", body="SELECT 42"))
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {other} CASCADE; CREATE SCHEMA {other}"))
        conn.execute(text(Function(other, "answer", returns="int", language="sql", body="SELECT 42").create_statements()[0]))
        conn.execute(text(Function(other, "answer", returns="int", language="sql", body="SELECT 42").comment_sql()))
    try:
        assert diffs(engine, md) == []
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {other} CASCADE"))
