"""What a migration that drops, adds or renames a column does to an Audited and Versioned table's
existing history and log (issue 22), through real Alembic autogenerate, as the owner role.

- drop: autogenerate drops the column from the table *and* its history (the history mirrors the
  model), and replaces both functions in the same revision; the history's old versions lose that
  column's values, the audit log keeps them (its entries are jsonb, never rewritten).
- add: the column is added to both, the functions replaced; old versions hold NULL for it.
- rename: autogenerate cannot tell a rename from a drop and an add; written by hand on the table
  and its history, the next autogenerate replaces only the two functions, and the history's old
  versions keep their values under the new name.
- add with a default: PostgreSQL fills the rows without a trigger; ``resync()`` in the same
  migration versions what the table now holds.
After each, a second autogenerate is empty and every writer keeps the history equal to the table."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata, produce_migrations
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Engine, Integer, MetaData, Text, text
from sqlalchemy.orm import DeclarativeBase, mapped_column

import sa_patterns.alembic
from sa_patterns import Audited, Versioned
from sa_patterns.versioning import resync


def build(*columns: str) -> MetaData:
    """``cm_item`` with ``columns`` (text); a column named ``f`` has a server default."""

    class Base(DeclarativeBase):
        pass

    attrs: dict[str, Any] = {"__tablename__": "cm_item", "id": mapped_column(Integer, primary_key=True)}
    attrs.update({
        name: mapped_column(Text, nullable=True, server_default="x" if name == "f" else None) for name in columns
    })
    type("Item", (Versioned, Audited, Base), attrs)
    return Base.metadata


def migrate(engine: Engine, md: MetaData) -> list[str]:
    """Autogenerate against the live schema and apply it; the operations, by kind and target."""
    with engine.begin() as conn:
        ctx = MigrationContext.configure(conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": md})
        script = produce_migrations(ctx, md)
        op = Operations(ctx)
        names = []
        flat = []
        for migrate_op in script.upgrade_ops.ops:
            flat.extend(getattr(migrate_op, "ops", [migrate_op]))
        for migrate_op in flat:
            op.invoke(migrate_op)
            entity = getattr(migrate_op, "entity", None)
            column = getattr(migrate_op, "column_name", None) or getattr(getattr(migrate_op, "column", None), "name", None)
            what = entity.describe() if entity is not None else f"{getattr(migrate_op, 'table_name', '')}.{column}"
            names.append(f"{type(migrate_op).__name__}:{what}")
        return names


def diffs(engine: Engine, md: MetaData) -> list[Any]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": md})
        return list(compare_metadata(ctx, md))


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return MetaData()  # the role model only: the migrations build


def consistent(conn: Any, columns: tuple[str, ...]) -> None:
    listed = ", ".join(("id", *columns))
    live = conn.execute(text(f"SELECT {listed} FROM cm_item ORDER BY id")).all()
    current = conn.execute(text(f"SELECT {listed} FROM cm_item_history WHERE valid_to IS NULL ORDER BY id")).all()
    assert current == live


def writes(conn: Any, base: int) -> None:
    conn.execute(text(f"INSERT INTO cm_item (id, b) VALUES ({base + 1}, 'x'), ({base + 2}, 'y')"))
    conn.execute(text(f"UPDATE cm_item SET b = b || '!' WHERE id >= {base}"))  # multi-row
    conn.execute(text(f"UPDATE cm_item SET id = id + 5 WHERE id = {base + 2}"))  # key change
    conn.execute(text(f"DELETE FROM cm_item WHERE id = {base + 1}"))


def test_drop_add_and_rename_through_autogenerate(owner_engine: Engine, engine: Engine) -> None:
    app, owner = engine, owner_engine
    migrate(owner, build("a", "b", "c"))
    with app.begin() as conn:
        conn.execute(text("INSERT INTO cm_item (id, a, b, c) VALUES (1, 'a1', 'b1', 'c1'), (2, 'a2', 'b2', 'c2')"))
        conn.execute(text("UPDATE cm_item SET c = c || '+'"))

    # drop "a" (right after the key): both tables lose it, both functions are replaced
    ops = migrate(owner, build("b", "c"))
    assert sorted(ops) == sorted([
        "DropColumnOp:cm_item.a", "DropColumnOp:cm_item_history.a",
        "ReplaceEntityOp:function cm_item_audit", "ReplaceEntityOp:function cm_item_history"])
    assert diffs(owner, build("b", "c")) == []
    with app.begin() as conn:
        writes(conn, 10)
        consistent(conn, ("b", "c"))
        # the history lost the dropped column's values; the log kept them
        columns = conn.execute(text("SELECT column_name FROM information_schema.columns "
                                    "WHERE table_name = 'cm_item_history' AND table_schema = current_schema()")).scalars().all()
        assert "a" not in columns
        first = conn.execute(text("SELECT new_row FROM audit_log ORDER BY id LIMIT 1")).scalar_one()
        assert first == {"id": 1, "a": "a1", "b": "b1", "c": "c1"}
        assert conn.execute(text("SELECT c FROM cm_item_history WHERE id = 1 ORDER BY version")).scalars().all() == ["c1", "c1+"]

    # add "d" after the drop: old versions hold NULL for it
    ops = migrate(owner, build("b", "c", "d"))
    assert sorted(ops) == sorted([
        "AddColumnOp:cm_item.d", "AddColumnOp:cm_item_history.d",
        "ReplaceEntityOp:function cm_item_audit", "ReplaceEntityOp:function cm_item_history"])
    assert diffs(owner, build("b", "c", "d")) == []
    with app.begin() as conn:
        conn.execute(text("UPDATE cm_item SET d = 'd' || id"))
        writes(conn, 20)
        consistent(conn, ("b", "c", "d"))
        assert conn.execute(text("SELECT d FROM cm_item_history WHERE id = 1 ORDER BY version")).scalars().all() == [
            None, None, "d1"]

    # rename "c" to "e" (in the middle), by hand on both tables as autogenerate cannot detect it:
    # the next autogenerate replaces only the functions; old versions keep their values as "e"
    with owner.begin() as conn:
        conn.execute(text("ALTER TABLE cm_item RENAME COLUMN c TO e"))
        conn.execute(text("ALTER TABLE cm_item_history RENAME COLUMN c TO e"))
    ops = migrate(owner, build("b", "e", "d"))
    assert sorted(ops) == ["ReplaceEntityOp:function cm_item_audit", "ReplaceEntityOp:function cm_item_history"]
    assert diffs(owner, build("b", "e", "d")) == []
    with app.begin() as conn:
        conn.execute(text("UPDATE cm_item SET e = 'e' || id"))
        writes(conn, 30)
        consistent(conn, ("b", "e", "d"))
        assert conn.execute(text("SELECT e FROM cm_item_history WHERE id = 1 ORDER BY version")).scalars().all() == [
            "c1", "c1+", "c1+", "e1"]
        last = conn.execute(text("SELECT old_row, new_row FROM audit_log WHERE primary_key = '{\"id\": 1}' "
                                 "ORDER BY id DESC LIMIT 1")).one()
        assert tuple(last) == ({"e": "c1+"}, {"e": "e1"})
        assert conn.execute(text("SELECT count(*) FROM audit_log")).scalar_one() > 0

    # add "f" with a default: PostgreSQL fills the rows without a trigger, so the current
    # versions hold NULL until resync() (in the same migration) versions what the table holds
    md = build("b", "e", "d", "f")
    ops = migrate(owner, md)
    assert "AddColumnOp:cm_item.f" in ops and "AddColumnOp:cm_item_history.f" in ops
    assert diffs(owner, md) == []
    with owner.begin() as conn:
        rows = conn.execute(text("SELECT count(*) FROM cm_item")).scalar_one()
        assert conn.execute(text("SELECT count(*) FROM cm_item_history WHERE valid_to IS NULL AND f IS NULL")).scalar_one() == rows
        assert resync(conn, md.tables["cm_item"]) == rows
        assert resync(conn, md.tables["cm_item"]) == 0
        consistent(conn, ("b", "e", "d", "f"))
    with app.begin() as conn:
        writes(conn, 40)
        consistent(conn, ("b", "e", "d", "f"))

    migrate(owner, MetaData())
