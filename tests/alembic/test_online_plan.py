"""What autogenerate writes for a table that exists, per ``configure_kwargs(concurrent_indexes=)``:
the user's own indexes built CONCURRENTLY only when asked, their foreign keys added NOT VALID
and validated after the transaction, a table created in the same revision left as Alembic
writes it; and the rendered upgrade runs, leaving a validated key and a valid index, with the
second autogenerate empty (the downgrade under traffic: tests/online)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import produce_migrations, render_python_code
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import (
    Column,
    Engine,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    text,
)
from sqlalchemy.engine import URL

import sa_patterns.alembic
from sa_patterns.alembic.online_plan import ConcurrentIndexes


def models(version: int) -> MetaData:
    md = MetaData()
    Table("op_owners", md, Column("id", Integer, primary_key=True))
    items = Table("op_items", md, Column("id", Integer, primary_key=True), Column("name", String(50)),
                  Column("owner_id", Integer))
    if version == 2:
        items.append_constraint(ForeignKeyConstraint(["owner_id"], ["op_owners.id"], name="op_items_owner_fkey"))
        Index("ix_op_items_name", items.c.name)
        Table("op_fresh", md, Column("id", Integer, primary_key=True),
              Column("item_id", Integer, ForeignKey("op_items.id", name="op_fresh_item_fkey")),
              Index("ix_op_fresh_item_id", "item_id"))
    return md


@pytest.fixture
def engine(pg_url: URL, db_schema: str) -> Iterator[Engine]:
    name = f"{db_schema}_op"
    eng = create_engine(pg_url.update_query_dict({"options": f"-csearch_path={name}"}))
    with eng.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"))
        models(1).create_all(conn)
        conn.execute(text("INSERT INTO op_owners SELECT g FROM generate_series(1, 10) g"))
        conn.execute(text("INSERT INTO op_items SELECT g, 'n' || g, 1 + g % 10 FROM generate_series(1, 500) g"))
    try:
        yield eng
    finally:
        with eng.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        eng.dispose()


def plan(engine: Engine, indexes: ConcurrentIndexes) -> tuple[Any, str, str]:
    md = models(2)
    kwargs = sa_patterns.alembic.configure_kwargs(concurrent_indexes=indexes)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={**kwargs, "target_metadata": md})
        script = produce_migrations(ctx, md)
        kwargs["process_revision_directives"](ctx, None, [script])
        assert script.upgrade_ops is not None and script.downgrade_ops is not None
        up = render_python_code(script.upgrade_ops, render_item=kwargs["render_item"])
        down = render_python_code(script.downgrade_ops, render_item=kwargs["render_item"])
    return script, up, down


def test_the_users_indexes_only_when_asked(engine: Engine) -> None:
    _, up, _ = plan(engine, "toolkit")
    assert "op.create_index('ix_op_items_name', 'op_items', ['name'], unique=False)" in up
    _, up, down = plan(engine, "all")
    assert "op.create_index_concurrently('ix_op_items_name', 'op_items', ['name'], unique=False)" in up
    assert "op.drop_index_concurrently('ix_op_items_name', 'op_items')" in down
    # a table of the same revision: nobody's yet, Alembic's own operations
    assert "op.create_index('ix_op_fresh_item_id', 'op_fresh', ['item_id'], unique=False)" in up
    assert up.index("op.create_table('op_fresh'") < up.index("autocommit_block()")
    assert down.index("autocommit_block()") < down.index("op.drop_table('op_fresh')")


def test_foreign_keys_not_valid_then_validated_and_the_script_runs(engine: Engine) -> None:
    script, up, _ = plan(engine, "all")
    assert "postgresql_not_valid=True" in up
    assert up.index("postgresql_not_valid=True") < up.index("autocommit_block()") < up.index(
        "op.validate_constraint('op_items_owner_fkey', 'op_items')")
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"target_metadata": models(2)})
        op = Operations(ctx)
        namespace: dict[str, Any] = {"op": op, "sa": sa}
        exec("def upgrade():\n    " + up.replace("\n", "\n    "), namespace)
        with ctx.begin_transaction():
            namespace["upgrade"]()
        rows = conn.execute(text(
            "SELECT conname, convalidated FROM pg_constraint WHERE conrelid = 'op_items'::regclass AND contype = 'f'"
        )).all()
        assert rows == [("op_items_owner_fkey", True)]
        assert conn.execute(text(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_op_items_name'::regclass")).scalar() is True
        ctx = MigrationContext.configure(conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": models(2)})
        again = produce_migrations(ctx, models(2))
        assert again.upgrade_ops is not None and again.upgrade_ops.is_empty()
    assert script is not None
