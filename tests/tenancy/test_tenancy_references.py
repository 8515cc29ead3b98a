"""References between tenant models cannot cross tenants, by default: a plain ForeignKey from one
tenant model to another gets a composite (tenant_id, id) key beside it, written by autogenerate,
and the doctor flags a plain one the database holds without it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata, produce_migrations
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.operations.ops import ModifyTableOps
from sqlalchemy import BigInteger, Engine, ForeignKey, Uuid, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

import sa_patterns
import sa_patterns.alembic
from sa_patterns import ConfigurationError, TenantMixin
from sa_patterns.alembic.ops import CreateEntityOp
from sa_patterns.cli.doctor import DoctorContext, run_checks
from sa_patterns.schema import TenantReference


def build() -> type[DeclarativeBase]:
    class Base(DeclarativeBase):
        pass

    class Task(TenantMixin, Base):  # declared before the tables it points at
        __tablename__ = "tr_tasks"
        id: Mapped[int] = mapped_column(primary_key=True)
        project_id: Mapped[int] = mapped_column(ForeignKey("tr_projects.id", ondelete="CASCADE"))
        owner_id: Mapped[int | None] = mapped_column(ForeignKey("tr_users.id"))
        project: Mapped[Project] = relationship(back_populates="tasks")
        owner: Mapped[User | None] = relationship()

    class Project(TenantMixin, Base):
        __tablename__ = "tr_projects"
        id: Mapped[int] = mapped_column(primary_key=True)
        tasks: Mapped[list[Task]] = relationship(back_populates="project")

    class User(TenantMixin, Base):
        __tablename__ = "tr_users"
        id: Mapped[int] = mapped_column(primary_key=True)

    class Plan(Base):  # not a tenant table: its references stay as declared
        __tablename__ = "tr_plans"
        id: Mapped[int] = mapped_column(primary_key=True)

    class Subscription(TenantMixin, Base):
        __tablename__ = "tr_subscriptions"
        id: Mapped[int] = mapped_column(primary_key=True)
        plan_id: Mapped[int] = mapped_column(ForeignKey("tr_plans.id"))

    return Base


BASE = build()
METADATA = BASE.metadata
CLASSES: dict[str, Any] = {m.class_.__name__: m.class_ for m in BASE.registry.mappers}


@pytest.fixture(scope="module")
def tables(engine: Engine) -> Iterator[Engine]:
    with engine.begin() as conn:
        sa_patterns.create_all(conn, METADATA)
        conn.execute(text(
            "INSERT INTO tr_projects (id, tenant_id) VALUES (1, 1), (2, 2);"
            "INSERT INTO tr_users (id, tenant_id) VALUES (1, 1), (2, 2)"
        ))
    yield engine


def composite_keys(conn: Any) -> set[tuple[str, str]]:
    return set(conn.execute(text(
        "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'f' AND cardinality(conkey) = 2 AND connamespace = current_schema()::regnamespace"
    )).all())


def test_the_database_holds_composite_keys_beside_the_plain_ones(tables: Engine) -> None:
    with tables.connect() as conn:
        assert composite_keys(conn) == {
            ("tr_tasks", "FOREIGN KEY (tenant_id, project_id) REFERENCES tr_projects(tenant_id, id) ON DELETE CASCADE"),
            ("tr_tasks", "FOREIGN KEY (tenant_id, owner_id) REFERENCES tr_users(tenant_id, id)"),
        }
        uniques = set(conn.execute(text(
            "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE contype = 'u' AND connamespace = current_schema()::regnamespace")).all())
        assert uniques == {("tr_projects", "UNIQUE (tenant_id, id)"), ("tr_users", "UNIQUE (tenant_id, id)")}
        # one index per reference, leading with the column: it serves the plain key and the
        # composite one (the doctor's foreign-key index check finds nothing to add)
        indexes = set(conn.scalars(text(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'tr_tasks' AND indexdef LIKE '%tenant_id)'")))
        assert any("(project_id, tenant_id)" in i for i in indexes), indexes
        assert any("(owner_id, tenant_id)" in i for i in indexes), indexes


def test_a_cross_tenant_reference_is_refused_by_the_database(tables: Engine) -> None:
    with tables.connect() as conn, pytest.raises(IntegrityError, match="tr_tasks_project_id_tenant_fkey"):
        conn.execute(text("INSERT INTO tr_tasks (id, tenant_id, project_id) VALUES (99, 2, 1)"))


def test_the_orm_joins_over_the_plain_key_without_overlap_warnings(tables: Engine) -> None:
    """Two many-to-one relationships on Task: no 'overlaps' warning (filterwarnings = error)."""
    factory = sa_patterns.install(sessionmaker(tables))
    with factory() as s, sa_patterns.tenant_scope(1):
        user = s.get_one(CLASSES["User"], 1)
        project = s.get_one(CLASSES["Project"], 1)
        task = CLASSES["Task"](id=10, project=project, owner=user)
        s.add(task)
        s.flush()
        assert [t.id for t in s.scalars(select(CLASSES["Task"]))] == [10]
        assert project.tasks == [task]
        s.rollback()


def test_plain_reference_to_a_table_without_tenants_is_left_alone(tables: Engine) -> None:
    with tables.connect() as conn:
        assert not any(t == "tr_subscriptions" for t, _ in composite_keys(conn))


def test_tenant_types_must_match() -> None:
    class Base(DeclarativeBase):
        pass

    class Org(TenantMixin, Base):
        __tablename__ = "tr_orgs"
        __tenant_type__ = Uuid
        id: Mapped[int] = mapped_column(primary_key=True)

    with pytest.raises(ConfigurationError, match="same __tenant_type__"):
        class Member(TenantMixin, Base):
            __tablename__ = "tr_members"
            __tenant_type__ = BigInteger
            id: Mapped[int] = mapped_column(primary_key=True)
            org_id: Mapped[int] = mapped_column(ForeignKey("tr_orgs.id"))


def test_autogenerate_writes_them_and_the_doctor_flags_their_absence(engine: Engine, db_schema: str) -> None:
    metadata = build().metadata
    schema = f"{db_schema}_ag"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        with engine.begin() as conn:
            conn.execute(text(f"SET LOCAL search_path = {schema}"))
            ctx = MigrationContext.configure(
                conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": metadata})
            script = produce_migrations(ctx, metadata)
            created = [o.entity for o in script.upgrade_ops.ops
                       if isinstance(o, CreateEntityOp) and isinstance(o.entity, TenantReference)]
            assert {(e.table, e.column) for e in created} == {("tr_tasks", "project_id"), ("tr_tasks", "owner_id")}
            op = Operations(ctx)
            for migrate_op in script.upgrade_ops.ops:
                for each in migrate_op.ops if isinstance(migrate_op, ModifyTableOps) else [migrate_op]:
                    op.invoke(each)
            assert list(compare_metadata(ctx, metadata)) == []
            doctor = dict(run_checks(DoctorContext(conn, metadata)))
            assert doctor["references between tenants include tenant_id"] == []

            conn.execute(text("ALTER TABLE tr_tasks DROP CONSTRAINT tr_tasks_owner_id_tenant_fkey"))
            problems = dict(run_checks(DoctorContext(conn, metadata)))["references between tenants include tenant_id"]
            assert len(problems) == 1 and "owner_id" in problems[0] and "tr_users" in problems[0]
            repair = [o for o in produce_migrations(ctx, metadata).upgrade_ops.ops if isinstance(o, CreateEntityOp)]
            assert [o.entity.name for o in repair] == ["tr_tasks_owner_id_tenant_fkey"]  # type: ignore[attr-defined]
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
