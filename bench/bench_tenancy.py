"""Tenancy: read overhead of ``TenantMixin`` + ``SoftDeleteMixin`` criteria vs the same filters
written by hand, and the cost of the per-transaction ``set_config``.

Schema: 20 tenants, 2,000 projects and 10,000 tasks (10 % of each soft-deleted); composite
foreign key ``(tenant_id, project_id)``; ``tenant_id`` indexed. Each phase runs 1,000 queries on
distinct keys of one tenant inside one session:

* ``pk``: ``select(Task).where(Task.id == x)``
* ``join``: ``select(Task.id, Project.name).join(Task.project).where(Project.id == x)``
* ``selectin``: ``select(Project).where(Project.id == x).options(selectinload(Project.tasks))``
* ``joinedload``: the same with ``joinedload``

The hand-written variant adds ``tenant_id = :t AND deleted_at IS NULL`` for every entity in the
statement and hides deleted tasks in the relationship's ``primaryjoin`` (the composite foreign
key already keeps children inside the parent's tenant). No competitor library is timed: the
issue names none for this pattern, and sqlalchemy-tenants filters only through RLS roles.

Then: one-query transactions (the context's ``set_config`` against a plain session), lookups
with the tenant switching before each inside one transaction, round trips and statements counted
on the wire for both, and the criteria root against one ``with_loader_criteria`` per model with
32 tenant models mapped. The section is named after the SQLAlchemy line it ran on: run it under
2.1 and 2.0 (``nox -s bench -- --only tenancy`` and ``nox -s bench-sqlalchemy-2.0 -- --only
tenancy``) and RESULTS.md keeps both.
"""

from __future__ import annotations

import functools
import random
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy
from sqlalchemy import URL, String, create_engine, select, text
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    joinedload,
    mapped_column,
    relationship,
    selectinload,
    sessionmaker,
)

import sa_patterns
from bench.harness import Section, compare, consume, sized
from sa_patterns._compat import SQLALCHEMY_21
from sa_patterns.tenancy import tenant_foreign_key, tenant_unique
from sa_patterns.testing.wire import RoundTrips

# One section per SQLAlchemy line: run the bench under 2.1 and under 2.0 (nox -s bench and
# nox -s bench-sqlalchemy-2.0) and RESULTS.md keeps both.
SQLALCHEMY = sqlalchemy.__version__
NAME = "tenancy" if SQLALCHEMY_21 else "tenancy_sqlalchemy20"
TITLE = (
    f"Tenancy on SQLAlchemy {SQLALCHEMY} (TenantMixin + SoftDeleteMixin vs hand-written WHERE; "
    "the context per transaction)"
)

TENANTS = 20
PROJECTS = 2_000
TASKS = 10_000
QUERIES = sized(400, 1_000)
TRANSACTIONS = sized(400, 1_000)
SCHEMA = "bench_tenancy"
PHASES = ("pk", "join", "selectin", "joinedload")


class OursBase(DeclarativeBase):
    pass


class Project(sa_patterns.SoftDeleteMixin, sa_patterns.TenantMixin, OursBase):
    __tablename__ = "bt_projects"
    __table_args__ = (tenant_unique("id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    tasks: Mapped[list[Task]] = relationship(back_populates="project")


class Task(sa_patterns.SoftDeleteMixin, sa_patterns.TenantMixin, OursBase):
    __tablename__ = "bt_tasks"
    __table_args__ = (tenant_foreign_key("project_id", "bt_projects.id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int]
    title: Mapped[str] = mapped_column(String(50))
    project: Mapped[Project] = relationship(back_populates="tasks")


class PlainBase(DeclarativeBase):
    pass


class PProject(PlainBase):
    __tablename__ = "bt_projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int]
    name: Mapped[str] = mapped_column(String(50))
    deleted_at: Mapped[datetime | None]
    deleted_by: Mapped[str | None]  # the columns SoftDeleteMixin maps: both variants load
    delete_batch: Mapped[uuid.UUID | None]  # the same row width
    tasks: Mapped[list[PTask]] = relationship(
        primaryjoin="and_(PProject.tenant_id == foreign(PTask.tenant_id),"
        " PProject.id == foreign(PTask.project_id), PTask.deleted_at.is_(None))",
        viewonly=True,
    )


class PTask(PlainBase):
    __tablename__ = "bt_tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int]
    project_id: Mapped[int]
    title: Mapped[str] = mapped_column(String(50))
    deleted_at: Mapped[datetime | None]
    deleted_by: Mapped[str | None]
    delete_batch: Mapped[uuid.UUID | None]
    project: Mapped[PProject] = relationship(
        primaryjoin="and_(PProject.tenant_id == foreign(PTask.tenant_id),"
        " PProject.id == foreign(PTask.project_id), PProject.deleted_at.is_(None))",
        viewonly=True,
    )


def _setup(url: URL) -> None:
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        conn.execute(text(f"SET LOCAL search_path = {SCHEMA}"))
        sa_patterns.create_all(conn, OursBase.metadata)
        conn.execute(text(
            "INSERT INTO bt_projects (id, tenant_id, name, deleted_at) "
            "SELECT i, 1 + i % :t, 'p' || i, CASE WHEN i % 10 = 0 THEN now() END "
            "FROM generate_series(1, :n) i"), {"t": TENANTS, "n": PROJECTS})
        conn.execute(text(
            "INSERT INTO bt_tasks (id, tenant_id, project_id, title, deleted_at) "
            "SELECT i, 1 + (1 + i % :p) % :t, 1 + i % :p, 't' || i, "
            "CASE WHEN i % 10 = 3 THEN now() END FROM generate_series(1, :n) i"),
            {"t": TENANTS, "p": PROJECTS, "n": TASKS})
        conn.execute(text("ANALYZE bt_projects; ANALYZE bt_tasks"))
    admin.dispose()


def _keys(tenant: int) -> tuple[list[int], list[int]]:
    projects = [i for i in range(1, PROJECTS + 1) if 1 + i % TENANTS == tenant]
    tasks = [i for i in range(1, TASKS + 1) if 1 + (1 + i % PROJECTS) % TENANTS == tenant]
    rng = random.Random(7)
    return ([rng.choice(projects) for _ in range(QUERIES)],
            [rng.choice(tasks) for _ in range(QUERIES)])


def _statements(manual: bool, tenant: int) -> dict[str, Callable[[int], Any]]:
    project, task = (PProject, PTask) if manual else (Project, Task)

    def scoped(stmt: Any, *entities: Any) -> Any:
        if not manual:
            return stmt
        return stmt.where(*(c for e in entities for c in (e.tenant_id == tenant, e.deleted_at.is_(None))))

    return {
        "pk": lambda x: scoped(select(task).where(task.id == x), task),
        "join": lambda x: scoped(
            select(task.id, project.name).join(task.project).where(project.id == x), task, project),
        "selectin": lambda x: scoped(
            select(project).where(project.id == x).options(selectinload(project.tasks)), project),
        "joinedload": lambda x: scoped(
            select(project).where(project.id == x).options(joinedload(project.tasks)), project),
    }




def run(url: URL, reps: int) -> Section:
    _setup(url)
    engine = create_engine(url, connect_args={"options": f"-csearch_path={SCHEMA}"})
    ours = sa_patterns.install(sessionmaker(engine))
    plain = sessionmaker(engine)
    tenant = 3
    project_keys, task_keys = _keys(tenant)
    section = Section(NAME, TITLE)
    found: dict[tuple[str, str], int] = {}

    def phase_case(variant: str, phase: str) -> Callable[[], object]:
        manual = variant == "manual"
        factory = plain if manual else ours
        stmt_for = _statements(manual, tenant)[phase]
        keys = task_keys if phase == "pk" else project_keys

        def go() -> None:
            total = 0
            with sa_patterns.tenant_scope(tenant), factory() as s:
                for key in keys:
                    total += consume(s, phase, stmt_for(key), "tasks")
                    s.expunge_all()
            found[(variant, phase)] = total

        return go

    for phase in PHASES:
        table = compare(
            f"{phase}: {QUERIES:,} queries in one session (× vs hand-written WHERE)",
            {
                "hand-written tenant_id = :t AND deleted_at IS NULL": phase_case("manual", phase),
                "sa_patterns TenantMixin + SoftDeleteMixin": phase_case("ours", phase),
            },
            reps=reps,
            baseline="hand-written tenant_id = :t AND deleted_at IS NULL",
        )
        section.tables.append(table)
        cases = {
            "hand-written tenant_id = :t AND deleted_at IS NULL": phase_case("manual", phase),
            "sa_patterns TenantMixin + SoftDeleteMixin": phase_case("ours", phase),
        }
        section.tables.append(compare(
            f"{phase}: client CPU time of the same {QUERIES:,} queries (× vs hand-written)",
            cases, reps=reps, baseline="hand-written tenant_id = :t AND deleted_at IS NULL",
            clock=time.process_time,
        ))
        same = found[("manual", phase)] == found[("ours", phase)]
        section.notes.append(
            f"{phase}: rows seen hand-written {found[('manual', phase)]:,}, "
            f"sa_patterns {found[('ours', phase)]:,} ({'identical' if same else 'DIFFERENT'})"
        )

    # --- the context per transaction, and tenant switches, counted on the wire -----------------
    with RoundTrips(url) as wire:
        wired = create_engine(wire.url, connect_args={"options": f"-csearch_path={SCHEMA}"})
        wired_ours, wired_plain = sa_patterns.install(sessionmaker(wired)), sessionmaker(wired)

        def transactions(factory: sessionmaker[Session], queries: int) -> Callable[[], object]:
            def go() -> None:
                with sa_patterns.tenant_scope(tenant):
                    for key in task_keys[:TRANSACTIONS]:
                        with factory.begin() as s:
                            for _ in range(queries):
                                s.scalar(text("SELECT :x"), {"x": key})

            return go

        def switching(factory: sessionmaker[Session], manual: bool) -> Callable[[], object]:
            """One transaction, the tenant changing before every lookup (tenants 3 and 4)."""

            def go() -> None:
                with factory() as s:
                    for n, key in enumerate(task_keys):
                        who = tenant + n % 2
                        with sa_patterns.tenant_scope(who):
                            stmt = select(PTask if manual else Task).where(
                                (PTask if manual else Task).id == key)
                            if manual:
                                stmt = stmt.where(PTask.tenant_id == who, PTask.deleted_at.is_(None))
                            s.execute(stmt).scalars().all()
                            s.expunge_all()

            return go

        counts: dict[str, tuple[float, float]] = {}
        for label, go, per in (
            ("plain, 1 query per transaction", transactions(wired_plain, 1), TRANSACTIONS),
            ("installed, 1 query per transaction", transactions(wired_ours, 1), TRANSACTIONS),
            ("installed, 5 queries per transaction", transactions(wired_ours, 5), TRANSACTIONS),
            ("hand-written, tenant switching", switching(wired_plain, True), QUERIES),
            ("installed, tenant switching", switching(wired_ours, False), QUERIES),
        ):
            wire.reset()
            go()
            counts[label] = (wire.count / per, wire.statements / per)
        section.tables.append(compare(
            f"{TRANSACTIONS:,} transactions of 1 query each (× vs a plain session)",
            {"plain session (no context)": transactions(plain, 1),
             "installed session (tenant + context per transaction)": transactions(ours, 1)},
            reps=reps, baseline="plain session (no context)",
        ))
        section.tables.append(compare(
            f"{QUERIES:,} lookups in one transaction, the tenant switching before each "
            "(× vs hand-written WHERE)",
            {"hand-written tenant_id = :t AND deleted_at IS NULL": switching(plain, True),
             "sa_patterns, the setting following each switch": switching(ours, False)},
            reps=reps, baseline="hand-written tenant_id = :t AND deleted_at IS NULL",
        ))
        wired.dispose()
    for label, (trips, sent) in counts.items():
        unit = "lookup" if "switching" in label else "transaction"
        section.notes.append(
            f"on the wire, {label}: {trips:.2f} round trips and {sent:.2f} statements per {unit}"
        )
    section.tables.append(_criteria_roots(url, reps))
    section.notes.append(
        "wall-clock tables include the database round trip and the noise of a 2-core machine "
        "shared with other jobs (see min – max); the CPU tables isolate the Python cost the "
        "filters add on the client"
    )
    section.notes.append(
        "all variants connect as the superuser (RLS bypassed), so the tables time the ORM filter "
        "alone; RLS adds the policy's predicate inside PostgreSQL for the app role"
    )
    section.notes.append(
        "round trips are counted by sa_patterns.testing.wire.RoundTrips, a loopback proxy that "
        "reads the protocol (a Sync or a simple Query ends a round trip); with psycopg 3 the "
        "context's set_config shares the round trip of the statement after it"
    )
    engine.dispose()
    with create_engine(url).begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
    return section


def _criteria_roots(url: URL, reps: int) -> Any:
    """Why tenancy filters through one criteria root per tenant-column kind (a class whose
    ``__subclasses__()`` lists the tenant models) instead of the public spelling, one
    ``with_loader_criteria`` per tenant model: the options of every statement grow with the
    number of models. 30 more tenant models are declared (as a real application has them) and
    the same pk lookups run both ways."""
    from sqlalchemy.orm import with_loader_criteria

    from sa_patterns.tenancy import criteria

    class ManyBase(DeclarativeBase):
        pass

    extra = [
        type(f"Extra{i}", (sa_patterns.SoftDeleteMixin, sa_patterns.TenantMixin, ManyBase), {
            "__tablename__": f"bt_extra_{i}",
            "__annotations__": {"id": Mapped[int]},
            "id": mapped_column(primary_key=True),
        })
        for i in range(30)
    ]
    models = [Project, Task, *extra]

    @functools.lru_cache(maxsize=64)
    def per_model(tenant: Any) -> tuple[Any, ...]:
        return tuple(
            with_loader_criteria(m, lambda cls: cls.tenant_id == tenant, include_aliases=True)
            for m in models
        )

    engine = create_engine(url, connect_args={"options": f"-csearch_path={SCHEMA}"})
    factory = sa_patterns.install(sessionmaker(engine))
    tenant = 3
    _, task_keys = _keys(tenant)
    grouped = criteria._scoped_options

    def lookups(one_per_model: bool) -> Callable[[], object]:
        def go() -> None:
            if one_per_model:
                criteria._scoped_options = lambda kinds, t: (*per_model(t), criteria._marker(t))  # type: ignore[assignment]
            try:
                with sa_patterns.tenant_scope(tenant), factory() as s:
                    for key in task_keys:
                        s.execute(select(Task).where(Task.id == key)).scalars().all()
                        s.expunge_all()
            finally:
                criteria._scoped_options = grouped

        return go

    table = compare(
        f"pk: client CPU of {QUERIES:,} lookups with {len(models)} tenant models mapped "
        "(× vs one criteria root per kind)",
        {"one criteria root per tenant-column kind (shipped)": lookups(False),
         "one with_loader_criteria per tenant model (public API)": lookups(True)},
        reps=reps, baseline="one criteria root per tenant-column kind (shipped)",
        clock=time.process_time,
    )
    engine.dispose()
    return table
