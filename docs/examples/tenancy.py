"""A multi-tenant task board: the ORM scopes every statement to the tenant in scope, fails
closed without one, and row-level security filters even raw SQL for the app role."""

import uuid

from sqlalchemy import URL, String, create_engine, func, select, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

import sa_patterns
from sa_patterns import TenantMixin, TenantRequired, TenantViolation
from sa_patterns.schema import quote
from sa_patterns.testing.rls import rls_problems


class Base(DeclarativeBase):
    pass


class Project(TenantMixin, Base):
    __tablename__ = "projects"
    __rls__ = True  # ENABLE + FORCE ROW LEVEL SECURITY and a tenant policy, via autogenerate
    # unique per tenant, and the target of the composite foreign key below
    __table_args__ = (sa_patterns.tenant_unique("id"), sa_patterns.tenant_unique("name"))

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    tasks: Mapped[list["Task"]] = relationship(back_populates="project", order_by="Task.id")


class Task(TenantMixin, Base):
    __tablename__ = "tasks"
    __rls__ = True
    # FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id)
    __table_args__ = (sa_patterns.tenant_foreign_key("project_id", "projects.id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int]
    title: Mapped[str]
    project: Mapped[Project] = relationship(back_populates="tasks")


def main(url: URL) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)  # applications: alembic --autogenerate
    Session = sa_patterns.install(sessionmaker(engine))

    # Inserts fill tenant_id from the scope.
    with sa_patterns.tenant_scope(1), Session.begin() as s:
        s.add(Project(name="Website", tasks=[Task(title="Design"), Task(title="Build")]))
    with sa_patterns.tenant_scope(2), Session.begin() as s:
        s.add(Project(name="Website", tasks=[Task(title="Other tenant's task")]))

    # Reads, joins, relationship loads, counts and get() see only the tenant in scope.
    with sa_patterns.tenant_scope(1), Session() as s:
        project = s.scalars(select(Project)).one()
        assert [t.title for t in project.tasks] == ["Design", "Build"]
        assert s.scalar(select(func.count()).select_from(Task)) == 2
        assert s.get(Task, 3) is None  # task 3 belongs to tenant 2
        # ORM bulk UPDATE is scoped too: tenant 2's task keeps its title.
        s.execute(update(Task).values(title=Task.title + " (done)"))
        s.commit()

    # Fail closed: no tenant, no query.
    with Session() as s:
        try:
            s.scalars(select(Task)).all()
            raise AssertionError("unreachable")
        except TenantRequired:
            pass

    # Writing into another tenant, or moving a row, is refused before any SQL runs.
    with sa_patterns.tenant_scope(1), Session() as s:
        s.add(Project(name="Intruder", tenant_id=2))
        try:
            s.flush()
            raise AssertionError("unreachable")
        except TenantViolation:
            s.rollback()

    # Deliberate admin work across tenants.
    with sa_patterns.all_tenants(), Session() as s:
        assert s.scalar(select(func.count()).select_from(Task)) == 3

    # The second wall: row-level security for a NOSUPERUSER NOBYPASSRLS role that does not own
    # the tables (superusers and owners skip RLS). Production apps log in as such a role; here a
    # superuser connection switches to it for one transaction.
    app_role = f"app_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {quote(app_role)} NOLOGIN NOSUPERUSER NOBYPASSRLS"))
        conn.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON projects, tasks TO {quote(app_role)}"))
        assert rls_problems(conn, Base.metadata, role=app_role) == []
        assert rls_problems(conn, Base.metadata, role="postgres")  # a superuser: flagged
    try:
        with sa_patterns.tenant_scope(2), Session() as s:
            s.execute(text(f"SET LOCAL ROLE {quote(app_role)}"))
            # raw SQL, no ORM filter: the policy on app.tenant_id (set by the session) filters
            titles = s.scalars(text("SELECT title FROM tasks ORDER BY id")).all()
            assert titles == ["Other tenant's task"], titles
        with engine.begin() as conn:
            conn.execute(text(f"SET LOCAL ROLE {quote(app_role)}"))
            assert conn.execute(text("SELECT * FROM tasks")).all() == []  # no tenant: no rows
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {quote(app_role)}"))
            conn.execute(text(f"DROP ROLE {quote(app_role)}"))
    engine.dispose()
