"""TenantMixin added to a populated table: tenant_id filled from each row's parent in batches,
NOT NULL through a validated CHECK, the index built concurrently; autogenerate then finds the
table exactly as the model declares it."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import URL, BigInteger, create_engine, func, insert, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import sa_patterns.alembic  # registers op.add_tenant_column
from sa_patterns import TenantMixin
from sa_patterns.tenancy.adopt import tenant_from


class Before(DeclarativeBase):  # the tables as production has them
    pass


class OldProject(Before):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(BigInteger, index=True)


class OldTask(Before):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int]
    title: Mapped[str]


class Base(DeclarativeBase):  # the models, now tenant-scoped
    pass


class Project(TenantMixin, Base):
    __tablename__ = "projects"
    __rls__ = False  # (this example leaves out row-level security and its roles)
    id: Mapped[int] = mapped_column(primary_key=True)


class Task(TenantMixin, Base):
    __tablename__ = "tasks"
    __rls__ = False
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int]
    title: Mapped[str]


def main(url: URL) -> None:
    engine = create_engine(url)
    Before.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(OldProject), [{"id": p, "tenant_id": 100 + p % 3} for p in range(1, 21)])
        conn.execute(insert(OldTask), [{"project_id": 1 + t % 20, "title": f"task {t}"} for t in range(5_000)])

    # The revision's upgrade(), as Alembic runs it (autogenerate wrote add_column + create_index
    # for tenant_id; the revision says instead where each existing row's tenant comes from):
    with engine.connect() as conn:
        op = Operations(MigrationContext.configure(conn))
        op.add_tenant_column("tasks", source=tenant_from("projects", on="project_id"), batch_size=500)

    with engine.connect() as conn:
        wrong = conn.execute(
            select(func.count()).select_from(Task).join(Project, Project.id == Task.project_id)
            .where(Task.tenant_id.is_distinct_from(Project.tenant_id))
        ).scalar_one()
        assert wrong == 0
        not_null = conn.execute(text(
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'tasks'::regclass AND attname = 'tenant_id'"
        )).scalar_one()
        assert not_null
        # a second autogenerate has nothing to add: column, NOT NULL and index are the model's
        context = MigrationContext.configure(conn, opts={
            **sa_patterns.alembic.configure_kwargs(), "target_metadata": Base.metadata})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()
