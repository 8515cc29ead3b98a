"""soft_unique indexes and the guard trigger through Alembic: autogenerate → upgrade → no diff →
change → replace → downgrade leaves nothing. Checked against the catalog."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata, produce_migrations
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.operations.ops import MigrateOperation
from sqlalchemy import BigInteger, Engine, MetaData, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import sa_patterns.alembic
from sa_patterns import SoftDeleteMixin, soft_unique


def models(*, guard: bool, unique: tuple[str, ...]) -> MetaData:
    class Base(DeclarativeBase):
        pass

    class Account(SoftDeleteMixin, Base):
        __tablename__ = "sd_alembic_account"
        __table_args__ = (soft_unique(*unique),)
        __soft_delete_guard__ = guard

        id: Mapped[int] = mapped_column(primary_key=True)
        tenant_id: Mapped[int] = mapped_column(BigInteger)
        email: Mapped[str] = mapped_column(String(100))
        handle: Mapped[str] = mapped_column(String(100))

    return Base.metadata


def run(op: Operations, ops: list[MigrateOperation]) -> None:
    for migrate_op in ops:
        nested = getattr(migrate_op, "ops", None)
        if nested is not None:  # ModifyTableOps: a container
            run(op, list(nested))
        else:
            op.invoke(migrate_op)


def migrate(engine: Engine, md: MetaData) -> tuple[list[MigrateOperation], list[MigrateOperation]]:
    with engine.begin() as conn:
        opts = {**sa_patterns.alembic.configure_kwargs(), "target_metadata": md}
        ctx = MigrationContext.configure(conn, opts=opts)
        script = produce_migrations(ctx, md)
        run(Operations(ctx), list(script.upgrade_ops.ops))
        return list(script.upgrade_ops.ops), list(script.downgrade_ops.ops)


def downgrade(engine: Engine, ops: list[MigrateOperation]) -> None:
    with engine.begin() as conn:
        ctx = MigrationContext.configure(conn)
        run(Operations(ctx), ops)


def diffs(engine: Engine, md: MetaData) -> list[Any]:
    with engine.connect() as conn:
        opts = {**sa_patterns.alembic.configure_kwargs(), "target_metadata": md}
        return list(compare_metadata(MigrationContext.configure(conn, opts=opts), md))


def catalog(engine: Engine, schema: str) -> dict[str, Any]:
    with engine.connect() as conn:
        def q(sql: str) -> list[Any]:
            return [tuple(r) for r in conn.execute(text(sql), {"s": schema})]

        return {
            "indexes": q(
                "SELECT i.relname, pg_get_indexdef(x.indexrelid), "
                "pg_get_expr(x.indpred, x.indrelid) FROM pg_index x "
                "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
                "JOIN pg_namespace n ON n.oid = t.relnamespace "
                "WHERE n.nspname = :s AND x.indisunique AND NOT x.indisprimary ORDER BY 1"
            ),
            "triggers": q(
                "SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND NOT tgisinternal"
            ),
            "functions": q(
                "SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = :s"
            ),
            "tables": q(
                "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND relkind = 'r'"
            ),
        }


def test_soft_unique_and_guard_roundtrip(engine: Engine, db_schema: str) -> None:
    md = models(guard=True, unique=("email",))
    _up, down = migrate(engine, md)
    found = catalog(engine, db_schema)
    # tenant_id is detected on the table and goes first; the predicate ignores deleted rows
    ((name, indexdef, predicate),) = found["indexes"]
    assert name == "uq_sd_alembic_account_email_live"
    assert "(tenant_id, email)" in indexdef
    assert predicate == "(deleted_at IS NULL)"
    assert found["triggers"] == [("sd_alembic_account_soft_delete_guard",)]
    assert found["functions"] == [("sd_alembic_account_soft_delete_guard",)]
    assert diffs(engine, md) == []  # no false diff from the partial predicate or the trigger

    # a raw DELETE is now a soft delete
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO sd_alembic_account VALUES (1, 1, 'a', 'h')"))
        conn.execute(text("DELETE FROM sd_alembic_account"))
        assert conn.execute(
            text("SELECT deleted_at IS NOT NULL FROM sd_alembic_account")
        ).scalar_one()
        conn.execute(text("SELECT set_config('sa_patterns.hard_delete', 'on', true)"))
        conn.execute(text("DELETE FROM sd_alembic_account"))
        assert conn.execute(text("SELECT count(*) FROM sd_alembic_account")).scalar_one() == 0

    # change: another column set, guard off → index swapped, guard dropped
    md2 = models(guard=False, unique=("handle",))
    up2, down2 = migrate(engine, md2)
    kinds = sorted(type(o).__name__ for o in up2)
    assert "DropEntityOp" in kinds and "ModifyTableOps" in kinds
    found = catalog(engine, db_schema)
    assert [i[0] for i in found["indexes"]] == ["uq_sd_alembic_account_handle_live"]
    assert found["triggers"] == [] and found["functions"] == []
    assert diffs(engine, md2) == []

    # downgrade both steps: back to the first state, then nothing at all
    downgrade(engine, down2)
    assert diffs(engine, md) == []
    downgrade(engine, down)
    found = catalog(engine, db_schema)
    assert found == {"indexes": [], "triggers": [], "functions": [], "tables": []}


def test_partial_predicate_change_is_detected(engine: Engine, db_schema: str) -> None:
    """A plain unique index turned into soft_unique with the same name: Alembic alone sees no
    difference; the predicate comparator asks PostgreSQL and swaps the index."""
    with engine.begin() as conn:
        conn.execute(text(
            "CREATE TABLE sd_alembic_pred (id int PRIMARY KEY, email text, "
            "deleted_at timestamptz, deleted_by text, delete_batch uuid)"))
        conn.execute(text("CREATE UNIQUE INDEX uq_pred_email ON sd_alembic_pred (email)"))

    class Base(DeclarativeBase):
        pass

    class Pred(SoftDeleteMixin, Base):
        __tablename__ = "sd_alembic_pred"
        __table_args__ = (soft_unique("email", name="uq_pred_email"),)
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str | None] = mapped_column(Text)

    md = Base.metadata
    kwargs = sa_patterns.alembic.configure_kwargs()  # the plugin compares predicates
    try:
        with engine.begin() as conn:
            ctx = MigrationContext.configure(conn, opts={**kwargs, "target_metadata": md})
            script = produce_migrations(ctx, md)
            (modify,) = script.upgrade_ops.ops
            assert [type(o).__name__ for o in modify.ops] == ["DropIndexOp", "CreateIndexOp"]
            run(Operations(ctx), list(script.upgrade_ops.ops))
            pred = conn.execute(text(
                "SELECT pg_get_expr(indpred, indrelid) FROM pg_index "
                "WHERE indexrelid = CAST('uq_pred_email' AS regclass)")).scalar_one()
            assert pred == "(deleted_at IS NULL)"
            # applied: no diff (the spelling differs, PostgreSQL's canonical form does not)
            again = produce_migrations(
                MigrationContext.configure(conn, opts={**kwargs, "target_metadata": md}), md)
            assert again.upgrade_ops.is_empty()
            # downgrade: the plain index is back
            run(Operations(ctx), list(script.downgrade_ops.ops))
            pred = conn.execute(text(
                "SELECT pg_get_expr(indpred, indrelid) FROM pg_index "
                "WHERE indexrelid = CAST('uq_pred_email' AS regclass)")).scalar_one()
            assert pred is None
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE sd_alembic_pred"))
