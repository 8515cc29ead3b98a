"""The ORM wall: every path a row can take out of (or into) the database is tenant-scoped.

These tests run as the app role (NOSUPERUSER NOBYPASSRLS, owning nothing) on the schema the
toolkit built, as an application runs: the ORM filter and row-level security both stand, and
the ORM's own refusals (TenantRequired, TenantViolation) are raised before PostgreSQL is asked.
``all_tenants()`` is the admin role's (its policy lets it see every tenant). The ORM filter on
its own, as a superuser, is proven by the isolation matrix (tests/isolation); RLS on raw SQL by
test_tenancy_rls.py. ``superuser_sql`` reads what the database holds, past RLS.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import (
    Connection,
    Engine,
    MetaData,
    delete,
    event,
    exists,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, aliased, joinedload, selectinload, sessionmaker, subqueryload
from tenancy_models import Base, Project, StrDoc, Tag, Task, UuidDoc

import sa_patterns
from sa_patterns import ConfigurationError, TenantRequired, TenantViolation
from sa_patterns.testing.plugin import SQL


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return Base.metadata


def seed(session: Session) -> Session:
    """Two tenants, two projects each with two tasks, one shared tag."""
    tag = Tag(id=1, label="urgent")
    session.add(tag)
    for tenant in (1, 2):
        with sa_patterns.tenant_scope(tenant):  # RLS takes each tenant's rows under its own
            for n in (1, 2):
                pid = tenant * 10 + n
                project = Project(id=pid, tenant_id=tenant, name=f"p{pid}")
                project.tasks = [
                    Task(id=pid * 10 + k, tenant_id=tenant, title=f"t{pid}{k}", tag=tag)
                    for k in (1, 2)
                ]
                session.add(project)
            session.flush()
    session.expunge_all()
    return session


@pytest.fixture
def seeded(session: Session) -> Session:
    """The app role's session, seeded."""
    return seed(session)


def ids(rows: object) -> list[int]:
    return sorted(r.id for r in rows)  # type: ignore[attr-defined]


def test_tenant_column_types_and_index(engine: Engine, db_schema: str) -> None:
    with engine.connect() as conn:
        types = dict(conn.execute(text(
            "SELECT table_name, data_type FROM information_schema.columns "
            "WHERE table_schema = :s AND column_name = 'tenant_id'"), {"s": db_schema}).all())
        indexed = {r[0] for r in conn.execute(text(
            "SELECT tablename FROM pg_indexes WHERE schemaname = :s AND indexdef LIKE '%(tenant_id)'"),
            {"s": db_schema})}
        nullable = {r[0] for r in conn.execute(text(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = :s "
            "AND column_name = 'tenant_id' AND is_nullable = 'YES'"), {"s": db_schema})}
    assert types == {"tn_projects": "bigint", "tn_tasks": "bigint", "tn_uuid_docs": "uuid",
                     "tn_str_docs": "character varying"}
    assert indexed == set(types)
    assert nullable == set()


def test_select_join_and_aliases_are_filtered(seeded: Session) -> None:
    s = seeded
    with sa_patterns.tenant_scope(1):
        assert ids(s.scalars(select(Project))) == [11, 12]
        assert ids(s.scalars(select(Task).join(Task.project))) == [111, 112, 121, 122]
        # a join from a non-tenant entity still only reaches tenant 1's tasks
        assert s.scalars(select(Task.id).join(Tag, Task.tag).order_by(Task.id)).all() == [111, 112, 121, 122]
        p2 = aliased(Project)
        assert ids(s.scalars(select(p2))) == [11, 12]
        # outer join keeps LEFT JOIN semantics: the criterion sits in ON, not WHERE
        rows = s.execute(select(Tag.id, Task.id).outerjoin(Task, Task.tag_id == Tag.id)).all()
        assert sorted(r[1] for r in rows) == [111, 112, 121, 122]
        sub = select(Task.project_id).scalar_subquery()
        assert s.scalars(select(Project.id).where(Project.id.in_(sub))).all() == [11, 12]
    with sa_patterns.tenant_scope(2):
        assert ids(s.scalars(select(Project))) == [21, 22]


def test_lazy_and_eager_loads_are_filtered(seeded: Session, superuser_sql: SQL) -> None:
    s = seeded
    # a foreign row slipped under tenant 1's project (possible only by raw SQL as superuser)
    superuser_sql("ALTER TABLE tn_tasks DISABLE TRIGGER ALL")
    superuser_sql("INSERT INTO tn_tasks (id, tenant_id, project_id, title) VALUES (999, 2, 21, 'x')")
    superuser_sql("UPDATE tn_tasks SET project_id = 11, tenant_id = 2 WHERE id = 999")
    superuser_sql("ALTER TABLE tn_tasks ENABLE TRIGGER ALL")
    with sa_patterns.tenant_scope(1):
        for option in (joinedload, selectinload, subqueryload):
            s.expunge_all()
            p = s.scalars(select(Project).where(Project.id == 11).options(option(Project.tasks))).unique().one()
            assert ids(p.tasks) == [111, 112], option
        s.expunge_all()
        p = s.get(Project, 11)
        assert p is not None
        assert ids(p.tasks) == [111, 112]  # lazy load
        assert s.get(Task, 111).project is p  # type: ignore[union-attr]


def test_selectin_load_names_each_tenant_condition_once(seeded: Session) -> None:
    """A selectin load copies its parent statement's options, the tenant criteria included: they
    are not added a second time (a repeated condition squares its selectivity in the planner's
    row estimate)."""
    s = seeded
    statements: list[str] = []
    event.listen(s.connection(), "before_cursor_execute", lambda *args: statements.append(args[2]))
    with sa_patterns.tenant_scope(1):
        p = s.scalars(select(Project).where(Project.id == 11).options(selectinload(Project.tasks))).one()
        assert ids(p.tasks) == [111, 112]
    [child] = [st for st in statements if "FROM tn_projects AS" in st and "tn_tasks" in st]
    conditions = re.findall(r"(\w+)\.tenant_id = %\(", child)
    assert sorted(conditions) == ["tn_projects_1", "tn_tasks"], child


def test_get_exists_count(seeded: Session) -> None:
    s = seeded
    with sa_patterns.tenant_scope(1):
        assert s.get(Project, 11) is not None
        assert s.get(Project, 21) is None
        assert s.scalar(select(func.count()).select_from(Project)) == 2
        assert s.scalar(select(func.count(Task.id))) == 4
        assert s.scalar(select(exists().where(Project.id == 21))) is False
        assert s.scalar(select(exists().where(Project.id == 11))) is True
        assert s.query(Project).count() == 2


def test_get_never_returns_a_row_cached_under_another_tenant(seeded: Session) -> None:
    s = seeded
    with sa_patterns.tenant_scope(1):
        mine = s.get(Project, 11)
        assert mine is not None and mine.tenant_id == 1
    with sa_patterns.tenant_scope(2):
        assert s.get(Project, 11) is None  # in the identity map, but tenant 1's
        task = s.get(Task, 211)
        assert task is not None
        assert task.project.id == 21
    with sa_patterns.tenant_scope(1):
        assert s.get(Project, 11) is mine  # same tenant: the same object (uniquing kept)
        merged = s.merge(Project(id=11, tenant_id=1, name="renamed"))
        assert merged is mine


def test_merge_never_returns_another_tenants_row(seeded: Session) -> None:
    s = seeded
    with sa_patterns.tenant_scope(2):
        foreign = Project(id=11, tenant_id=1, name="stolen")
        with pytest.raises(TenantViolation):
            s.merge(foreign)
            s.flush()
    s.rollback()


def test_insert_fills_and_refuses_other_tenant(seeded: Session, sql: SQL) -> None:
    s = seeded
    with sa_patterns.tenant_scope(1):
        s.add(Project(id=13, name="new"))
        s.flush()
        assert sql("SELECT tenant_id FROM tn_projects WHERE id = 13") == [(1,)]
        s.add(Project(id=14, tenant_id=2, name="wrong"))
        with pytest.raises(TenantViolation, match="tenant_id=2"):
            s.flush()
    s.rollback()


def test_orm_bulk_insert_fills_and_refuses(seeded: Session, sql: SQL) -> None:
    s = seeded
    with sa_patterns.tenant_scope(2):
        s.execute(insert(Project), [{"id": 23, "name": "a"}, {"id": 24, "name": "b"}])
        s.execute(insert(Project).values(id=25, name="c"))
        assert sql("SELECT id, tenant_id FROM tn_projects WHERE id > 22 ORDER BY id") == [
            (23, 2), (24, 2), (25, 2)]
        with pytest.raises(TenantViolation):
            s.execute(insert(Project), [{"id": 26, "name": "x", "tenant_id": 1}])
        with pytest.raises(TenantViolation):
            s.execute(insert(Project).values(id=27, name="y", tenant_id=1))


def test_update_cannot_move_a_row(seeded: Session, sql: SQL) -> None:
    s = seeded
    with sa_patterns.tenant_scope(1):
        p = s.get(Project, 11)
        assert p is not None
        p.tenant_id = 2
        with pytest.raises(TenantViolation, match="cannot move"):
            s.flush()
    s.expunge_all()
    with sa_patterns.tenant_scope(1):
        with pytest.raises(TenantViolation):
            s.execute(update(Project).values(tenant_id=2))
        with pytest.raises(TenantViolation):
            s.execute(update(Project), [{"id": 11, "tenant_id": 2}])
        assert sql("SELECT tenant_id FROM tn_projects WHERE id = 11") == [(1,)]


def test_writing_an_object_loaded_under_another_tenant_is_refused(seeded: Session) -> None:
    s = seeded
    with sa_patterns.tenant_scope(1):
        p = s.get(Project, 11)
    assert p is not None
    with sa_patterns.tenant_scope(2):
        p.name = "hijack"
        with pytest.raises(TenantViolation, match="belonging to tenant 1"):
            s.flush()
    s.expunge_all()
    with sa_patterns.tenant_scope(2):
        p2 = s.get(Project, 21)
    with sa_patterns.tenant_scope(1):
        s.delete(p2)
        with pytest.raises(TenantViolation):
            s.flush()
    s.expunge_all()


def test_orm_bulk_update_and_delete_are_filtered(seeded: Session, superuser_sql: SQL) -> None:
    s = seeded
    with sa_patterns.tenant_scope(1):
        s.execute(update(Task).values(title="done"))
        s.execute(update(Project), [{"id": 21, "name": "by-pk"}, {"id": 11, "name": "mine"}])
        s.execute(delete(Task).where(Task.id.in_([122, 222])))
    assert superuser_sql("SELECT count(*) FROM tn_tasks WHERE title = 'done'") == [(3,)]
    assert superuser_sql("SELECT name FROM tn_projects WHERE id IN (11, 21) ORDER BY id") == [("mine",), ("p21",)]
    assert superuser_sql("SELECT id FROM tn_tasks WHERE id IN (122, 222)") == [(222,)]


def test_fail_closed_without_tenant(seeded: Session) -> None:
    s = seeded
    for stmt in (
        select(Project),
        select(func.count()).select_from(Task),
        select(Tag).join(Task, Task.tag_id == Tag.id),
        select(Tag).where(exists().where(Task.tag_id == Tag.id)),
        update(Project).values(name="x"),
        delete(Task),
        insert(Project).values(id=99, name="z"),
    ):
        with pytest.raises(TenantRequired, match="no tenant is in scope"):
            s.execute(stmt)
    with pytest.raises(TenantRequired):
        s.get(Project, 11)
    s.add(Project(id=98, name="orphan"))
    with pytest.raises(TenantRequired):
        s.flush()
    s.expunge_all()
    assert s.scalars(select(Tag)).all()  # non-tenant models need no tenant


def test_lazy_load_after_scope_ends_fails_closed(seeded: Session) -> None:
    s = seeded
    with sa_patterns.tenant_scope(1):
        p = s.get(Project, 11)
    assert p is not None
    with pytest.raises(TenantRequired):
        _ = p.tasks


@pytest.fixture
def superuser_session(superuser_engine: Engine) -> Iterator[Session]:
    """A session of the server's superuser, which RLS never stops: the ORM filter alone."""
    with superuser_engine.connect() as conn:
        outer = conn.begin()  # rolled back after the test
        factory = sa_patterns.install(sessionmaker(bind=conn, join_transaction_mode="create_savepoint"))
        try:
            with factory() as s:
                yield s
        finally:
            outer.rollback()


def test_all_tenants_scope_and_option_lift_the_orm_filter(superuser_session: Session) -> None:
    """As the superuser, so that the ORM filter alone decides what is seen."""
    s = seed(superuser_session)
    with sa_patterns.all_tenants():
        assert ids(s.scalars(select(Project))) == [11, 12, 21, 22]
    assert ids(s.scalars(select(Project).execution_options(all_tenants=True))) == [11, 12, 21, 22]
    with sa_patterns.tenant_scope(1):
        assert len(s.scalars(select(Task).execution_options(all_tenants=True)).all()) == 8
    s.info["tenant_id"] = 2  # session.info wins over the scope
    with sa_patterns.tenant_scope(1):
        assert ids(s.scalars(select(Project))) == [21, 22]


def test_all_tenants_as_the_admin_role(admin_session: Session) -> None:
    """At the database, all_tenants() shows the admin role every tenant (the app role none:
    test_tenancy_rls.py), and so does the statement option, for that statement only
    (app.all_tenants is sent with it, and the scope's settings again with the next)."""
    s = seed(admin_session)
    with sa_patterns.all_tenants():
        assert ids(s.scalars(select(Project))) == [11, 12, 21, 22]
    assert ids(s.scalars(select(Project).execution_options(all_tenants=True))) == [11, 12, 21, 22]
    with sa_patterns.tenant_scope(1):
        every = len(s.scalars(select(Task).execution_options(all_tenants=True)).all())
        assert every == s.scalar(text("SELECT count(*) FROM tn_tasks").execution_options(all_tenants=True))
        assert every > len(s.scalars(select(Task)).all()) > 0  # the next statement: tenant 1 again
    s.commit()  # the option on the first statement of a transaction lifts it too
    assert ids(s.scalars(select(Project).execution_options(all_tenants=True))) == [11, 12, 21, 22]
    s.info["tenant_id"] = 2  # session.info wins over the scope
    with sa_patterns.tenant_scope(1):
        assert ids(s.scalars(select(Project))) == [21, 22]


def test_uuid_and_string_tenants(session: Session, superuser_sql: SQL) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    with sa_patterns.tenant_scope(a):
        session.add(UuidDoc(id=1, body="a"))
        session.flush()
    with sa_patterns.tenant_scope(str(b)):
        session.add(UuidDoc(id=2, body="b"))
        session.flush()
        assert [d.id for d in session.scalars(select(UuidDoc))] == [2]
    with sa_patterns.tenant_scope("acme"):
        session.add(StrDoc(id=1, body="x"))
        session.flush()
    with sa_patterns.tenant_scope("acm"):
        assert session.scalars(select(StrDoc)).all() == []
    assert superuser_sql("SELECT tenant_id FROM tn_uuid_docs ORDER BY id") == [(a,), (b,)]


@pytest.mark.parametrize("hostile", ["1; drop table tn_projects", "' or 1=1 --", "1 OR 1=1", "1.5"])
def test_hostile_tenant_ids_are_refused_or_data(
    seeded: Session, sql: SQL, superuser_sql: SQL, hostile: str
) -> None:
    s = seeded
    with sa_patterns.tenant_scope(hostile):
        with pytest.raises(ConfigurationError, match="does not fit a int tenant"):
            s.scalars(select(Project)).all()
        # a string tenant column takes it as a plain value: no rows, nothing executed
        assert s.scalars(select(StrDoc)).all() == []
        s.add(StrDoc(id=50, body="data"))
        s.flush()
        assert sql("SELECT tenant_id FROM tn_str_docs WHERE id = 50") == [(hostile,)]
    assert superuser_sql("SELECT tenant_id FROM tn_str_docs WHERE id = 50") == [(hostile,)]
    assert superuser_sql("SELECT count(*) FROM tn_projects") == [(4,)]


@pytest.mark.parametrize("bad", [None, True, 1.5, b"1", ""])
def test_bad_tenant_values(bad: object) -> None:
    with pytest.raises(ConfigurationError), sa_patterns.tenant_scope(bad):  # type: ignore[arg-type]
        pass


def test_composite_foreign_key_keeps_references_inside_a_tenant(
    seeded: Session, connection: Connection, sql: SQL
) -> None:
    # project 21 exists, but belongs to tenant 2: the database itself refuses the reference
    # (raw SQL under tenant 1, which RLS lets write tenant 1's rows)
    with (
        pytest.raises(IntegrityError, match="violates foreign key"),
        connection.begin_nested(),
        sa_patterns.tenant_scope(1),
    ):
        sql("INSERT INTO tn_tasks (id, tenant_id, project_id, title) VALUES (500, 1, 21, 'x')")
    with sa_patterns.tenant_scope(1):
        seeded.add(Task(id=501, project_id=21, title="cross"))
        with pytest.raises(IntegrityError, match="violates foreign key"):
            seeded.flush()


def test_switching_tenant_inside_a_transaction_resyncs_postgres(seeded: Session) -> None:
    s = seeded
    probe = text("SELECT current_setting('app.tenant_id', true)")
    with sa_patterns.tenant_scope(1):
        assert s.scalar(probe) == "1"
    with sa_patterns.tenant_scope(2):
        assert s.scalar(probe) == "2"
    assert s.scalar(probe) == ""
    assert s.is_active


async def test_async_session_is_scoped(async_session: AsyncSession) -> None:
    s = async_session
    for tenant, pid, name in ((7, 71, "a"), (8, 81, "b")):
        with sa_patterns.tenant_scope(tenant):
            s.add(Project(id=pid, tenant_id=tenant, name=name))
            await s.flush()
    with sa_patterns.tenant_scope(7):
        assert [p.id for p in (await s.scalars(select(Project)))] == [71]
        assert await s.get(Project, 81) is None
        s.add(Project(id=72, name="c"))
        await s.flush()
        with pytest.raises(TenantViolation):
            s.add(Project(id=73, tenant_id=8, name="d"))
            await s.flush()
    await s.rollback()
    with pytest.raises(TenantRequired):
        await s.execute(select(Project))
