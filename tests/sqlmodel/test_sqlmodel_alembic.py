"""Alembic autogenerate over ``SQLModel.metadata`` (the app's tables), as the owner role: it writes the DDL
the same models on a ``DeclarativeBase`` get (compared as the SQL an offline migration
emits), the upgrade builds the toolkit's objects (checked in the catalog), a second
autogenerate finds nothing, and the downgrade leaves nothing behind."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata, produce_migrations
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations import Operations, ops
from sqlalchemy import URL, Engine, MetaData, Uuid, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlmodel_app import KEYRING
from sqlmodel_app import metadata as app_metadata

import sa_patterns.alembic
from sa_patterns import (
    Audited,
    EncryptedString,
    Searchable,
    SoftDeleteMixin,
    TenantMixin,
    Versioned,
    soft_unique,
    tenant_foreign_key,
    tenant_unique,
)
from sa_patterns.cli.init import init
from sa_patterns.testing.logins import RunRoles


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return MetaData()  # the role model, nothing built: the migrations build


def twin() -> MetaData:
    """The app's models on a DeclarativeBase with the mixins of sa_patterns."""

    class Base(DeclarativeBase):
        pass

    class Project(SoftDeleteMixin, TenantMixin, Audited, Base):
        __tablename__ = "sqm_projects"
        __table_args__ = (tenant_unique("id"), soft_unique("name"))
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]

    class Item(SoftDeleteMixin, TenantMixin, Audited, Versioned, Base):
        # the app's Item lists its fields as SQLModel orders them (inherited from ItemBase,
        # redeclared, then its own): project_id and note come after the mixins' columns
        __tablename__ = "sqm_items"
        __table_args__ = (tenant_foreign_key("project_id", "sqm_projects.id"),)
        name: Mapped[str]
        id: Mapped[int] = mapped_column(primary_key=True)
        project_id: Mapped[int] = mapped_column(sort_order=1)
        note: Mapped[str | None] = mapped_column(EncryptedString(keyring=KEYRING), sort_order=1)

    class Article(Searchable, TenantMixin, Base):
        __tablename__ = "sqm_articles"
        __searchable__ = {"title": "A", "body": "B"}
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str]
        body: Mapped[str]

    class Contact(TenantMixin, Base):
        __tablename__ = "sqm_contacts"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str] = mapped_column(EncryptedString(keyring=KEYRING, blind_index=True))

    class Note(TenantMixin, Base):  # the app's Note declares tenant_id itself, before body
        __tablename__ = "sqm_notes"
        __tenant_type__ = Uuid
        id: Mapped[int] = mapped_column(primary_key=True)
        body: Mapped[str] = mapped_column(sort_order=1)

    return Base.metadata


def context(conn: Any, md: MetaData) -> MigrationContext:
    return MigrationContext.configure(conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": md})


def flat(operations: list[ops.MigrateOperation]) -> list[ops.MigrateOperation]:
    out: list[ops.MigrateOperation] = []
    for op in operations:
        out.extend(flat(op.ops) if isinstance(op, ops.ModifyTableOps) else [op])
    return out


def offline_sql(operations: list[ops.MigrateOperation]) -> list[str]:
    """The SQL the operations emit in an offline (``--sql``) migration, one entry per
    statement."""
    buffer = io.StringIO()
    ctx = MigrationContext.configure(
        dialect_name="postgresql", opts={"as_sql": True, "output_buffer": buffer}
    )
    runner = Operations(ctx)
    for op in flat(operations):
        runner.invoke(op)
    statements = [s.strip() for s in buffer.getvalue().split(";\n\n") if s.strip()]
    return statements


def test_autogenerate_round_trip(owner_engine: Engine, db_schema: str) -> None:
    with owner_engine.connect() as conn:
        sqlmodel_ops = produce_migrations(context(conn, app_metadata), app_metadata).upgrade_ops
        twin_md = twin()
        twin_ops = produce_migrations(context(conn, twin_md), twin_md).upgrade_ops
    assert sqlmodel_ops is not None and twin_ops is not None
    written = offline_sql(sqlmodel_ops.ops)
    assert written == offline_sql(twin_ops.ops)
    assert any("CREATE POLICY sqm_items_tenant_isolation" in s for s in written), written

    with owner_engine.begin() as conn:
        ctx = context(conn, app_metadata)
        script = produce_migrations(ctx, app_metadata)
        runner = Operations(ctx)
        for op in flat(script.upgrade_ops.ops):
            runner.invoke(op)
    with owner_engine.connect() as conn:
        assert list(compare_metadata(context(conn, app_metadata), app_metadata)) == []

        def rows(sql: str) -> set[tuple[Any, ...]]:
            return {tuple(r) for r in conn.execute(text(sql), {"s": db_schema})}

        assert rows(
            "SELECT c.relname, relrowsecurity, relforcerowsecurity FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = :s AND relkind = 'r' "
            "AND relname LIKE 'sqm_%'"
        ) == {(t, True, True) for t in ("sqm_projects", "sqm_items", "sqm_items_history", "sqm_articles", "sqm_notes", "sqm_contacts")}
        assert {
            ("sqm_items", "sqm_items_audit_ins"), ("sqm_items", "sqm_items_history_ins"),
            ("sqm_projects", "sqm_projects_audit_del"),
        } <= rows(
            "SELECT c.relname, tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = :s AND NOT tgisinternal"
        )
        assert ("sqm_items", "sqm_items_tenant_isolation") in rows(
            "SELECT tablename, policyname FROM pg_policies WHERE schemaname = :s"
        )
        indexes = {r[1] for r in rows("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :s")}
        assert any("UNIQUE" in d and "(tenant_id, name)" in d and "WHERE (deleted_at IS NULL)" in d for d in indexes)
        assert any("USING gin (search_vector)" in d for d in indexes), indexes
        assert rows(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = :s AND table_name = 'sqm_items' AND column_name IN "
            "('tenant_id', 'deleted_at', 'note')"
        ) == {("tenant_id", "bigint", "NO"), ("deleted_at", "timestamp with time zone", "YES"),
              ("note", "bytea", "YES")}

    with owner_engine.begin() as conn:
        runner = Operations(context(conn, app_metadata))
        for op in flat(script.downgrade_ops.ops):
            runner.invoke(op)
    with owner_engine.connect() as conn:
        left = conn.execute(text(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE nspname = :s UNION ALL SELECT proname FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE nspname = :s"
        ), {"s": db_schema}).all()
        assert left == []


def test_the_cli_round_trip_imports_sqlmodel_itself(
    tmp_path: Path, pg_url: URL, db_schema: str, db_roles: RunRoles
) -> None:
    """``sa-patterns init``'s environment on SQLModel.metadata, its template untouched: the
    revision imports the module of SQLModel's AutoString itself (no NameError at upgrade);
    revision --autogenerate, upgrade, check (no diff), downgrade to base, as the owner in a
    schema of its own."""
    schema = f"{db_schema}_cli"
    owner_url = db_roles.url(pg_url, db_roles.owner)
    owner = create_engine(owner_url)
    with owner.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
    url = owner_url.update_query_dict({"options": f"-csearch_path={schema}"})
    cfg = Config(str(init(tmp_path / "migrations", metadata="unused:unused")))
    cfg.attributes["target_metadata"] = app_metadata
    cfg.attributes["configure_logger"] = False
    cfg.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    try:
        command.revision(cfg, message="init", autogenerate=True)
        script = next((tmp_path / "migrations" / "versions").glob("*.py")).read_text()
        assert "sqlmodel.sql.sqltypes.AutoString()" in script and "\nimport sqlmodel.sql.sqltypes\n" in script
        command.upgrade(cfg, "head")
        command.check(cfg)
        with owner.connect() as conn:
            assert conn.scalar(text(
                "SELECT count(*) FROM pg_policies WHERE schemaname = :s AND tablename = 'sqm_items'"
            ), {"s": schema}) == 3
        command.downgrade(cfg, "base")
        with owner.connect() as conn:
            assert set(conn.scalars(text(
                "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE nspname = :s AND relkind IN ('r', 'p')"
            ), {"s": schema})) == {"alembic_version"}
    finally:
        with owner.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        owner.dispose()
