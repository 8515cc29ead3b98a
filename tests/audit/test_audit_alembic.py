"""Audited/Versioned through Alembic autogenerate: create → upgrade → no diff → a source column
added (history column + replaced functions follow) → downgrade to nothing. Checked in the catalog.

The migrations run as the owner role (not a superuser), as a deployment runs them; the app role
then writes through the triggers they made, and reads what its policy on the log shows it."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata, produce_migrations
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Engine, Integer, MetaData, String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import sa_patterns.alembic
from sa_patterns import Audited, Versioned
from sa_patterns.audit import audit_log_table


def build(*, extra: bool = False, partitioned: bool = False) -> MetaData:
    class Base(DeclarativeBase):
        pass

    if partitioned:
        audit_log_table(Base.metadata, partition_by_month=True, premake=2, retention_months=12)

    if extra:

        class Item(Versioned, Audited, Base):
            __tablename__ = "al_item"
            __audit_exclude__ = frozenset({"secret"})
            id: Mapped[int] = mapped_column(primary_key=True)
            name: Mapped[str] = mapped_column(String(50))
            secret: Mapped[str | None]
            subtitle: Mapped[str | None]
    else:

        class Item(Versioned, Audited, Base):  # type: ignore[no-redef]
            __tablename__ = "al_item"
            __audit_exclude__ = frozenset({"secret"})
            id: Mapped[int] = mapped_column(primary_key=True)
            name: Mapped[str] = mapped_column(String(50))
            secret: Mapped[str | None]

    return Base.metadata


def migrate(engine: Engine, md: MetaData) -> list[str]:
    with engine.begin() as conn:
        ctx = MigrationContext.configure(conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": md})
        script = produce_migrations(ctx, md)
        op = Operations(ctx)
        names = []
        flat = []
        for migrate_op in script.upgrade_ops.ops:
            flat.extend(getattr(migrate_op, "ops", [migrate_op]))  # ModifyTableOps holds add_column
        for migrate_op in flat:
            op.invoke(migrate_op)
            entity = getattr(migrate_op, "entity", None)
            what = entity.describe() if entity is not None else getattr(migrate_op, "table_name", "")
            names.append(f"{type(migrate_op).__name__}:{what}")
        return names


def diffs(engine: Engine, md: MetaData) -> list[Any]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": md})
        return list(compare_metadata(ctx, md))


def objects(engine: Engine, schema: str) -> dict[str, set[str]]:
    with engine.connect() as conn:
        def q(sql: str) -> set[str]:
            return {r[0] for r in conn.execute(text(sql), {"s": schema})}

        return {
            "functions": q("SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE nspname = :s"),
            "triggers": q("SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = :s AND NOT tgisinternal"),
            "tables": q("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = :s AND relkind IN ('r', 'p')"),
            "history_columns": q("SELECT column_name FROM information_schema.columns WHERE table_schema = :s AND table_name = 'al_item_history'"),
        }


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return MetaData()  # the role model, nothing built: the migrations build


def test_autogenerate_roundtrip(owner_engine: Engine, engine: Engine, db_schema: str) -> None:
    app, engine = engine, owner_engine
    ops = migrate(engine, build())
    assert any(o.startswith("CreateTableOp:audit_log") for o in ops)
    assert any(o.startswith("CreateTableOp:al_item_history") for o in ops)
    found = objects(engine, db_schema)
    assert found["functions"] == {"al_item_audit", "al_item_history", "audit_log_append_only"}
    assert found["triggers"] == {
        "al_item_audit_ins", "al_item_audit_upd", "al_item_audit_del", "al_item_audit_tru",
        "al_item_history_ins", "al_item_history_upd", "al_item_history_del", "al_item_history_tru",
        "audit_log_append_only",
    }
    assert diffs(engine, build()) == []  # no false diff (types, nullability, indexes, objects)

    with app.begin() as conn:  # the triggers the migration made really work, for the app role
        conn.execute(text("INSERT INTO al_item (id, name, secret) VALUES (1, 'a', 's')"))
        conn.execute(text("UPDATE al_item SET name = 'b'"))
        assert conn.execute(text("SELECT count(*) FROM audit_log")).scalar_one() == 2
        assert conn.execute(text("SELECT count(*) FROM al_item_history")).scalar_one() == 2

    # a column added to the source: the history table and both functions follow
    changed = build(extra=True)
    kinds = sorted(type(d[0] if isinstance(d, list) else d).__name__ if not isinstance(d, tuple) else d[0] for d in diffs(engine, changed))
    assert kinds.count("add_column") == 2
    ops = migrate(engine, changed)
    assert sorted(o.split(":")[1] for o in ops if o.startswith("ReplaceEntityOp")) == [
        "function al_item_audit", "function al_item_history"]
    assert "subtitle" in objects(engine, db_schema)["history_columns"]
    assert diffs(engine, changed) == []
    with app.begin() as conn:
        conn.execute(text("UPDATE al_item SET subtitle = 'x'"))
        row = conn.execute(text("SELECT new_row FROM audit_log ORDER BY id DESC LIMIT 1")).scalar_one()
        assert row == {"subtitle": "x"}
        # old entries stay readable with the columns they had
        first = conn.execute(text("SELECT new_row FROM audit_log ORDER BY id LIMIT 1")).scalar_one()
        assert first == {"id": 1, "name": "a"}

    # downgrade to nothing: no toolkit object is left behind
    migrate(engine, MetaData())
    assert objects(engine, db_schema) == {"functions": set(), "triggers": set(), "tables": set(), "history_columns": set()}


def test_partitioned_log_roundtrip(owner_engine: Engine, engine: Engine, db_schema: str) -> None:
    app, engine = engine, owner_engine
    md = build(partitioned=True)
    migrate(engine, md)
    with app.begin() as conn:
        kind = conn.execute(text("SELECT relkind FROM pg_class WHERE oid = 'audit_log'::regclass")).scalar_one()
        assert kind == "p"
        parts = conn.execute(text(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_log'::regclass")).scalar_one()
        assert parts == 3  # this month and two ahead, made by the migration
        conn.execute(text("INSERT INTO al_item (id, name) VALUES (1, 'a')"))
        assert conn.execute(text("SELECT count(*) FROM audit_log")).scalar_one() == 1
    with engine.connect() as conn:  # partitions are data, never a migration
        ctx = MigrationContext.configure(conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": md})
        upgrade = produce_migrations(ctx, md).upgrade_ops
        assert upgrade is not None
        # nothing at all: partitions (and the indexes they inherit) are never diffed
        assert upgrade.ops == []
    migrate(engine, MetaData())
    assert objects(engine, db_schema)["tables"] == set()


def build_priced(price_type: type[Integer] | type[String]) -> MetaData:
    class Base(DeclarativeBase):
        pass

    class Priced(Versioned, Audited, Base):
        __tablename__ = "al_priced"
        id: Mapped[int] = mapped_column(primary_key=True)
        price: Mapped[Any] = mapped_column(price_type(), nullable=True)

    return Base.metadata


def test_a_column_type_change_replaces_the_functions(owner_engine: Engine, engine: Engine, db_schema: str) -> None:
    """The audit function writes each column's values by its type (an integer's text is its JSON, a
    string goes through to_json): the revision that changes a type replaces the audit function
    too, and the history column follows. Both UPDATE paths then log the new type."""
    app, engine = engine, owner_engine
    migrate(engine, build_priced(Integer))
    with app.begin() as conn:
        conn.execute(text("INSERT INTO al_priced VALUES (1, 10), (2, 20)"))
        conn.execute(text("UPDATE al_priced SET price = price + 1"))
    retyped = build_priced(String)
    ops = migrate(engine, retyped)
    assert "AlterColumnOp:al_priced" in ops and "AlterColumnOp:al_priced_history" in ops
    # the history function copies columns by name: it stays
    assert [o.split(":")[1] for o in ops if o.startswith("ReplaceEntityOp")] == ["function al_priced_audit"]
    assert diffs(engine, retyped) == []
    with app.begin() as conn:
        conn.execute(text("UPDATE al_priced SET price = 'n/a'"))  # both rows: the set-based path
        conn.execute(text("UPDATE al_priced SET price = 'x' WHERE id = 1"))  # the one-row path
        rows = conn.execute(text(
            "SELECT primary_key, old_row, new_row FROM audit_log WHERE operation = 'UPDATE' ORDER BY id")).all()
        history = conn.execute(text(
            "SELECT price FROM al_priced_history WHERE id = 1 ORDER BY valid_from")).scalars().all()
    assert [tuple(r) for r in rows] == [
        ({"id": 1}, {"price": 10}, {"price": 11}),
        ({"id": 2}, {"price": 20}, {"price": 21}),
        ({"id": 1}, {"price": "11"}, {"price": "n/a"}),
        ({"id": 2}, {"price": "21"}, {"price": "n/a"}),
        ({"id": 1}, {"price": "n/a"}, {"price": "x"}),
    ]
    assert history == ["10", "11", "n/a", "x"]
    migrate(engine, MetaData())
