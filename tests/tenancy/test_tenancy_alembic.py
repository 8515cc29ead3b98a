"""Tenant RLS objects through Alembic: autogenerate → upgrade → no diff → change → replace →
downgrade restores → models without them → nothing left. Checked against pg_policies/pg_class.
Plus the Citus calls a revision gets (Citus is not installable here: the SQL is checked as text).

Migrations run as the owner role (not a superuser), as a deployment runs them; the app role then
uses what they made.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata, produce_migrations
from alembic.migration import MigrationContext
from alembic.operations import MigrateOperation, Operations
from alembic.operations.ops import ModifyTableOps
from sqlalchemy import URL, BigInteger, Engine, Integer, MetaData, String, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import sa_patterns.alembic
from sa_patterns import TenantMixin, tenant_foreign_key, tenant_unique
from sa_patterns.alembic.ops import DropEntityOp, ReplaceEntityOp
from sa_patterns.citus import citus_statements, reference_table, revision_directives
from sa_patterns.cli.init import init
from sa_patterns.roles import configured_roles
from sa_patterns.schema import quote
from sa_patterns.testing.logins import RunRoles


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return MetaData()  # the role model, nothing built: the migrations build


@pytest.fixture(scope="module")
def other_admin(superuser_engine: Engine, db_roles: RunRoles) -> Iterator[str]:
    """A role named literally by a model's __rls_admin_role__ (not the configured admin)."""
    name = f"{db_roles.admin}_lit"
    with superuser_engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {quote(name)} NOLOGIN"))
    try:
        yield name
    finally:
        with superuser_engine.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {quote(name)}"))
            conn.execute(text(f"DROP ROLE {quote(name)}"))


def build(*, rls: bool = True, admin: str | None = None, tenant_type: object = BigInteger,
          citus: bool = False) -> MetaData:
    class Base(DeclarativeBase):
        pass

    @reference_table
    class Plan(Base):
        __tablename__ = "tn_mig_plans"
        id: Mapped[int] = mapped_column(primary_key=True)

    class Account(TenantMixin, Base):
        __tablename__ = "tn_mig_accounts"
        __tenant_type__ = tenant_type
        __rls__ = rls
        __rls_admin_role__ = admin
        __citus__ = citus
        __table_args__ = (tenant_unique("id"),)
        id: Mapped[int] = mapped_column(primary_key=True)

    class Invoice(TenantMixin, Base):
        __tablename__ = "tn_mig_invoices"
        __tenant_type__ = tenant_type
        __rls__ = rls
        __citus__ = citus
        __table_args__ = (tenant_foreign_key("account_id", "tn_mig_accounts.id"),)
        id: Mapped[int] = mapped_column(primary_key=True)
        account_id: Mapped[int]
        number: Mapped[str] = mapped_column(String(20))

    return Base.metadata


def context(conn: object, md: MetaData) -> MigrationContext:
    return MigrationContext.configure(
        conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": md})  # type: ignore[arg-type]


def apply(engine: Engine, md: MetaData, *, downgrade: bool = False) -> list[object]:
    with engine.begin() as conn:
        ctx = context(conn, md)
        script = produce_migrations(ctx, md)
        op = Operations(ctx)
        for migrate_op in flat(script.upgrade_ops.ops):
            op.invoke(migrate_op)
        if downgrade:
            for migrate_op in flat(script.downgrade_ops.ops):
                op.invoke(migrate_op)
        return [o for o in script.upgrade_ops.ops if not isinstance(o, ModifyTableOps)]


def flat(ops: list[MigrateOperation]) -> list[MigrateOperation]:
    return [i for o in ops for i in (o.ops if isinstance(o, ModifyTableOps) else [o])]


def diffs(engine: Engine, md: MetaData) -> list[object]:
    with engine.connect() as conn:
        return list(compare_metadata(context(conn, md), md))


def policies(engine: Engine, schema: str) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(text(
            "SELECT policyname, qual FROM pg_policies WHERE schemaname = :s"), {"s": schema}).all())


def admin_roles(engine: Engine, policy: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(text(
            "SELECT unnest(roles) FROM pg_policies WHERE policyname = :p"), {"p": policy}))


def forced(engine: Engine, schema: str) -> set[str]:
    with engine.connect() as conn:
        return set(conn.scalars(text(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE nspname = :s AND relrowsecurity AND relforcerowsecurity"), {"s": schema}))


def test_rls_round_trip(
    owner_engine: Engine, engine: Engine, db_schema: str, db_roles: RunRoles, other_admin: str
) -> None:
    ADMIN_ROLE = other_admin
    app = engine
    engine = owner_engine  # migrations and catalog checks: the owner's
    ops = apply(engine, build())
    kinds = [type(o).__name__ for o in ops]
    assert kinds.count("CreateTableOp") == 3
    assert kinds.index("CreateEntityOp") > max(i for i, k in enumerate(kinds) if k == "CreateTableOp")
    assert forced(engine, db_schema) == {"tn_mig_accounts", "tn_mig_invoices"}
    found = policies(engine, db_schema)
    assert set(found) == {
        f"tn_mig_{t}_tenant_{p}" for t in ("accounts", "invoices") for p in ("isolation", "admin", "owner")
    }
    assert "current_setting('app.tenant_id'::text, true)" in found["tn_mig_invoices_tenant_isolation"]
    assert "::bigint" in found["tn_mig_invoices_tenant_isolation"]
    # the admin policy is for the configured admin role, named when the migration ran
    assert admin_roles(engine, "tn_mig_accounts_tenant_admin") == [configured_roles().admin]
    assert configured_roles().admin == db_roles.admin  # the run's, in force for migrations
    assert diffs(engine, build()) == []
    # the app role works with what the owner's migration made: its tenant's rows, no other's
    with app.begin() as conn:
        conn.execute(text("SELECT set_config('app.tenant_id', '1', true)"))
        conn.execute(text("INSERT INTO tn_mig_accounts (id, tenant_id) VALUES (1, 1)"))
        conn.execute(text("INSERT INTO tn_mig_invoices (id, tenant_id, account_id, number) VALUES (1, 1, 1, 'n')"))
        assert conn.scalar(text("SELECT count(*) FROM tn_mig_invoices")) == 1
        conn.execute(text("SELECT set_config('app.tenant_id', '2', true)"))
        assert conn.scalar(text("SELECT count(*) FROM tn_mig_invoices")) == 0
        conn.rollback()

    # a literal admin role on one model: its admin policy is replaced; the downgrade restores it
    ops = apply(engine, build(admin=ADMIN_ROLE), downgrade=True)
    assert [type(o) for o in ops] == [ReplaceEntityOp]
    assert admin_roles(engine, "tn_mig_accounts_tenant_admin") == [configured_roles().admin]
    apply(engine, build(admin=ADMIN_ROLE))
    assert admin_roles(engine, "tn_mig_accounts_tenant_admin") == [ADMIN_ROLE]
    assert diffs(engine, build(admin=ADMIN_ROLE)) == []

    # a changed tenant type changes the policies: replaced (and the downgrade restores them)
    changed = build(admin=ADMIN_ROLE, tenant_type=Integer)
    with engine.begin() as conn:
        ctx = context(conn, changed)
        script = produce_migrations(ctx, changed)
        replaced = [o for o in script.upgrade_ops.ops if isinstance(o, ReplaceEntityOp)]
        assert {o.entity.name for o in replaced} == {  # type: ignore[attr-defined]
            "tn_mig_accounts_tenant_isolation", "tn_mig_invoices_tenant_isolation"}
        op = Operations(ctx)
        for migrate_op in replaced:
            op.invoke(migrate_op)
        assert "::integer" in conn.scalar(text(
            "SELECT qual FROM pg_policies WHERE policyname = 'tn_mig_invoices_tenant_isolation'"))
        for migrate_op in reversed(replaced):
            op.invoke(migrate_op.reverse())
    assert diffs(engine, build(admin=ADMIN_ROLE)) == []

    # __rls__ switched off: policies and RLS are dropped, before anything else
    ops = apply(engine, build(rls=False))
    assert ops and all(isinstance(o, DropEntityOp) for o in ops)
    assert policies(engine, db_schema) == {} and forced(engine, db_schema) == set()
    assert diffs(engine, build(rls=False)) == []

    # (Alembic's order for dropping several FK-linked tables at once is not stable, so the
    # tables go by drop_all; the CLI test below runs the full downgrade to base.)
    with engine.begin() as conn:
        build(rls=False).drop_all(conn)
    assert policies(engine, db_schema) == {}
    with engine.connect() as conn:
        assert conn.scalar(text(
            "SELECT count(*) FROM pg_tables WHERE schemaname = :s"), {"s": db_schema}) == 0


def test_autogenerate_cli_round_trip(tmp_path: Path, pg_url: URL, db_schema: str, db_roles: RunRoles) -> None:
    from alembic.config import Config

    schema = f"{db_schema}_cli"
    owner = db_roles.url(pg_url, db_roles.owner)
    admin = create_engine(owner)  # the owner creates the schema and runs the CLI
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
    url = owner.update_query_dict({"options": f"-csearch_path={schema}"})
    cfg = Config(str(init(tmp_path / "migrations", metadata="unused:unused")))
    cfg.attributes["target_metadata"] = build()
    cfg.attributes["configure_logger"] = False
    cfg.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    try:
        command.revision(cfg, message="init", autogenerate=True)
        script = next((tmp_path / "migrations" / "versions").glob("*.py")).read_text()
        assert "op.create_entity(sa_patterns.schema.Policy(" in script
        assert "op.create_entity(sa_patterns.schema.RowLevelSecurity(" in script
        command.upgrade(cfg, "head")
        command.check(cfg)
        assert forced(admin, schema) == {"tn_mig_accounts", "tn_mig_invoices"}
        command.downgrade(cfg, "base")
        assert policies(admin, schema) == {}
        with admin.connect() as conn:
            assert set(conn.scalars(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema})) == {"alembic_version"}
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def test_citus_statements() -> None:
    md = build(citus=True)
    assert citus_statements(md.sorted_tables) == [
        "SELECT create_reference_table('tn_mig_plans')",
        "SELECT create_distributed_table('tn_mig_accounts', 'tenant_id')",
        "SELECT create_distributed_table('tn_mig_invoices', 'tenant_id', "
        "colocate_with => 'tn_mig_accounts')",
    ]
    assert citus_statements(build().sorted_tables) == ["SELECT create_reference_table('tn_mig_plans')"]


def test_citus_calls_in_the_revision_that_creates_the_tables(owner_engine: Engine) -> None:
    from alembic.autogenerate import render_python_code
    from alembic.operations import ops

    md = build(citus=True)
    with owner_engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={
            **sa_patterns.alembic.configure_kwargs(process_revision_directives=revision_directives),
            "target_metadata": md})
        script = produce_migrations(ctx, md)
        directives = [script]
        revision_directives(ctx, None, directives)
        upgrade = script.upgrade_ops.ops
        code = render_python_code(script.upgrade_ops)
    names = [type(o).__name__ for o in upgrade if not isinstance(o, ModifyTableOps)]
    first_sql = names.index("ExecuteSQLOp")
    assert names[:first_sql] == ["CreateTableOp"] * 3
    upgrade = [o for o in upgrade if not isinstance(o, ModifyTableOps)]
    assert names[first_sql:first_sql + 3] == ["ExecuteSQLOp"] * 3
    assert isinstance(upgrade[first_sql], ops.ExecuteSQLOp)
    assert "op.execute(\"SELECT create_distributed_table('tn_mig_invoices', 'tenant_id', " in code
    assert "SELECT create_reference_table('tn_mig_plans')" in code
    # a revision that creates no table gets no Citus call (nothing to diff afterwards)
    later = ops.MigrationScript("x", ops.UpgradeOps([]), ops.DowngradeOps([]))
    revision_directives(ctx, None, [later])
    assert later.upgrade_ops.ops == []  # type: ignore[union-attr]
