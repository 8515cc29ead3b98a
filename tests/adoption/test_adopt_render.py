"""``op.add_tenant_column`` (and the online plan of the toolkit's indexes) without a database: what a revision holding it renders (and its
reverse, for the downgrade), and the SQL it prints offline (``alembic upgrade --sql``, what the
linter reads), with every value quoted."""

from __future__ import annotations

import io
import uuid

import pytest
import sqlalchemy as sa
from alembic.autogenerate import render_python_code
from alembic.migration import MigrationContext
from alembic.operations import Operations, ops
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import sa_patterns.alembic  # noqa: F401  (registers the operations)
from sa_patterns.alembic.adopt_ops import AddTenantColumnOp
from sa_patterns.alembic.online_plan import plan_online
from sa_patterns.errors import ConfigurationError
from sa_patterns.search import Searchable
from sa_patterns.tenancy.adopt import tenant_column, tenant_constant, tenant_from, tenant_source


def test_a_revision_renders_the_call_and_its_reverse() -> None:
    up = ops.UpgradeOps(ops=[
        AddTenantColumnOp("notes", tenant_from("projects", on="project_id"), keep_trigger=True),
        AddTenantColumnOp("docs", tenant_constant("acme"), type_=sa.String(64), batch_size=500),
    ])
    code = render_python_code(up)
    assert "op.add_tenant_column('notes', source=tenant_from('projects', on='project_id'), keep_trigger=True)" in code
    assert "op.add_tenant_column('docs', source=tenant_constant('acme'), type_=sa.String(length=64), batch_size=500)" in code
    down = render_python_code(up.reverse())
    assert down.index("op.drop_tenant_column('docs'") < down.index("op.drop_tenant_column('notes'")
    assert "batch_size" not in down


def test_sources_given_plainly_and_refused() -> None:
    assert tenant_source(7) == tenant_constant(7)
    assert tenant_source("org_id") == tenant_column("org_id")
    assert repr(tenant_source(uuid.UUID(int=1))).startswith("tenant_constant(UUID(")
    for wrong in (True, None, 1.5):
        with pytest.raises(ConfigurationError, match=r"add_tenant_column\(source="):
            tenant_source(wrong)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="lock_timeout"):
        AddTenantColumnOp("notes", 7, lock_timeout="2s; DROP TABLE notes")


def offline_sql(*operations: AddTenantColumnOp) -> str:
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="postgresql", opts={"as_sql": True, "output_buffer": buffer, "transactional_ddl": True})
    op = Operations(context)
    with context.begin_transaction():
        for operation in operations:
            op.invoke(operation)
    return buffer.getvalue()


def test_offline_every_step_is_printed_and_every_value_quoted() -> None:
    sql = offline_sql(AddTenantColumnOp(
        "docs", tenant_constant("x'; DROP TABLE docs; --"), schema="app", type_=sa.String(64)))
    steps = [
        "COMMIT;",  # the autocommit block: what came before is committed
        "BEGIN;", "SET LOCAL lock_timeout = '2s';",
        "ALTER TABLE app.docs ADD COLUMN IF NOT EXISTS tenant_id VARCHAR(64);",
        "NEW.tenant_id := 'x''; DROP TABLE docs; --'::varchar(64);",
        "CREATE OR REPLACE TRIGGER docs_tenant_id_fill BEFORE INSERT OR UPDATE ON app.docs FOR EACH ROW "
        "WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION app.docs_tenant_id_fill();",
        "-- sa_patterns: fill app.docs.tenant_id from tenant_constant",
        "ADD CONSTRAINT docs_tenant_id_not_null CHECK (tenant_id IS NOT NULL) NOT VALID;",
        "ALTER TABLE app.docs VALIDATE CONSTRAINT docs_tenant_id_not_null;",
        "ALTER TABLE app.docs ALTER COLUMN tenant_id SET NOT NULL;",
        "ALTER TABLE app.docs DROP CONSTRAINT docs_tenant_id_not_null;",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_docs_tenant_id ON app.docs (tenant_id);",
        "DROP TRIGGER IF EXISTS docs_tenant_id_fill ON app.docs;",
    ]
    at = 0
    for step in steps:
        found = sql.find(step, at)
        assert found >= 0, f"{step!r} missing (in order) from:\n{sql}"
        at = found
    join = offline_sql(AddTenantColumnOp("tasks", tenant_from("projects", on="project_id", key="uid")))
    assert 'NEW.tenant_id := (SELECT p.tenant_id FROM projects p WHERE p.uid = NEW.project_id);' in join



class _Base(DeclarativeBase):
    pass


class _Doc(Searchable, _Base):
    __tablename__ = "docs"
    __searchable__ = {"title": "A"}
    __search_trigram__ = ("title",)
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    code: Mapped[str] = mapped_column(index=True)


def test_a_trigram_index_on_a_table_that_exists_is_built_concurrently() -> None:
    """``__search_trigram__``'s GIN index is the toolkit's too: on a table that exists it moves to
    the revision's concurrent block, as the search vector's does; a user's own index stays."""
    indexes = {i.name: i for i in _Doc.__table__.indexes}
    up = ops.UpgradeOps(ops=[ops.ModifyTableOps("docs", [
        ops.CreateIndexOp.from_index(indexes["ix_docs_title_trgm"]),
        ops.CreateIndexOp.from_index(indexes["ix_docs_code"]),
    ])])
    script = ops.MigrationScript("r1", up, up.reverse())
    plan_online(MigrationContext.configure(dialect_name="postgresql", opts={"target_metadata": _Base.metadata}), script)
    code = render_python_code(script.upgrade_ops)
    assert "op.create_index_concurrently('ix_docs_title_trgm'" in code
    assert "op.create_index(op.f('ix_docs_code')" in code and "create_index_concurrently('ix_docs_code'" not in code
