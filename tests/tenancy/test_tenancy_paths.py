"""ORM paths the tenant wall once missed (issue 20), each on deliberately inconsistent data.

The data: three tenants; task 999 of tenant 2 hangs under project 11 of tenant 1 (a plain
foreign key allows it, as a bug or a raw-SQL fix-up would leave it); project 13 of tenant 1 is
soft-deleted. Every test runs as the app role (NOSUPERUSER NOBYPASSRLS, owning nothing) on the
schema the toolkit built, so both walls stand (the ORM wall alone, as a superuser, is proven by
the isolation matrix, tests/isolation), and reads back what the database holds with
``superuser_sql``, past row-level security. The rows are written by the app role itself, each
under its own tenant: the cross-tenant ones are what a missing composite reference lets it write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import (
    Engine,
    ForeignKey,
    MetaData,
    String,
    delete,
    event,
    func,
    insert,
    join,
    literal,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    joinedload,
    mapped_column,
    relationship,
    sessionmaker,
)
from sqlalchemy.orm import join as orm_join

import sa_patterns
from sa_patterns import (
    ConfigurationError,
    SoftDeleteMixin,
    TenantMixin,
    TenantRequired,
    TenantViolation,
)
from sa_patterns.errors import ReadOnlyError
from sa_patterns.testing.plugin import SQL
from sa_patterns.testing.rls import drop_tenant_references


class Base(DeclarativeBase):
    pass


class Project(SoftDeleteMixin, TenantMixin, Base):
    __tablename__ = "tp_projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    tasks: Mapped[list[Task]] = relationship(
        back_populates="project", order_by="Task.id", cascade="all, delete-orphan"
    )


class Task(SoftDeleteMixin, TenantMixin, Base):
    __tablename__ = "tp_tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    # a plain foreign key on purpose: the inconsistent rows these tests need are possible
    project_id: Mapped[int] = mapped_column(ForeignKey("tp_projects.id"))
    title: Mapped[str] = mapped_column(String(50))
    project: Mapped[Project] = relationship(back_populates="tasks")


class Archive(TenantMixin, Base):
    __tablename__ = "tp_archive"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    # what PostgreSQL held when the row was inserted (as a policy or a trigger would read it)
    seen: Mapped[str | None] = mapped_column(
        server_default=text("current_setting('app.tenant_id', true)")
    )


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return Base.metadata


@pytest.fixture(scope="module", autouse=True)
def tables(owner_engine: Engine) -> Iterator[None]:
    with owner_engine.begin() as conn:  # the owner's tables: only it may alter them
        drop_tenant_references(conn, Base.metadata)  # the seeded data crosses tenants on purpose
    yield


def seed(sql: Callable[[str], object]) -> None:
    """The module's rows, each statement run under its rows' tenant (RLS lets the app role)."""
    for tenant in (1, 2, 3):
        pids = [tenant * 10 + n for n in (1, 2, 3)]
        with sa_patterns.tenant_scope(tenant):
            sql("INSERT INTO tp_projects (id, tenant_id, name) VALUES "
                + ", ".join(f"({pid}, {tenant}, 'p{pid}')" for pid in pids))
            sql("INSERT INTO tp_tasks (id, tenant_id, project_id, title) VALUES "
                + ", ".join(f"({pid * 10 + k}, {tenant}, {pid}, 't{pid}{k}')" for pid in pids for k in (1, 2)))
    with sa_patterns.tenant_scope(1):
        sql("UPDATE tp_projects SET deleted_at = now() WHERE id = 13")
        sql("UPDATE tp_tasks SET deleted_at = now() WHERE id = 112")
    with sa_patterns.tenant_scope(2):
        # a task of tenant 2 under a project of tenant 1
        sql("INSERT INTO tp_tasks (id, tenant_id, project_id, title) VALUES (999, 2, 11, 'foreign')")
        # and a soft-deleted one of tenant 2 under another project of tenant 1
        sql("INSERT INTO tp_tasks (id, tenant_id, project_id, title, deleted_at) "
            "VALUES (998, 2, 12, 'foreign, deleted', now())")


@pytest.fixture
def s(session: Session, sql: SQL) -> Session:
    """The app role's session, seeded."""
    seed(sql)
    return session


@pytest.fixture
def superuser_s(superuser_engine: Engine) -> Iterator[tuple[Session, SQL]]:
    """A superuser's session, seeded, and raw SQL on its connection: RLS never stops it, so the
    ORM wall alone decides (for the refusals whose kind as the app role PostgreSQL decides)."""
    with superuser_engine.connect() as conn:
        outer = conn.begin()  # rolled back after the test

        def run(statement: str, /, **params: Any) -> list[Any]:
            result = conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []

        seed(run)
        factory = sa_patterns.install(sessionmaker(bind=conn, join_transaction_mode="create_savepoint"))
        try:
            with factory() as session:
                yield session, run
        finally:
            outer.rollback()


def statements(session: Session) -> list[str]:
    seen: list[str] = []
    event.listen(session.connection(), "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


# --- 1. joinedload --------------------------------------------------------------------------


def test_joinedload_child_of_another_tenant_is_not_loaded(s: Session) -> None:
    with sa_patterns.tenant_scope(1):
        p = s.scalars(select(Project).where(Project.id == 11).options(joinedload(Project.tasks))).unique().one()
        assert [t.id for t in p.tasks] == [111]  # 112 soft-deleted, 999 of tenant 2
    s.expunge_all()
    with sa_patterns.tenant_scope(2):
        # the parent is tenant 1's: the foreign child must not drag it in (many-to-one joined)
        t = s.scalars(select(Task).where(Task.id == 999).options(joinedload(Task.project))).one()
        assert t.project is None


# --- 2. refresh and expired attributes ------------------------------------------------------


def test_refresh_under_another_tenant_reads_nothing(s: Session, superuser_sql: SQL) -> None:
    with sa_patterns.tenant_scope(2):
        p = s.get(Project, 21)
        assert p is not None
    superuser_sql("UPDATE tp_projects SET name = 'secret' WHERE id = 21")  # behind its back
    sent = statements(s)
    with sa_patterns.tenant_scope(1):
        with pytest.raises(sa_exc.InvalidRequestError):
            s.refresh(p)
        assert any("tp_projects.tenant_id = " in st for st in sent), sent
        s.expire(p, ["name"])
        with pytest.raises(sa_exc.InvalidRequestError):
            _ = p.name
    with pytest.raises(TenantRequired):
        s.refresh(p)
    with sa_patterns.tenant_scope(2):
        s.refresh(p)
        assert p.name == "secret"


# --- 3. INSERT ... SELECT -------------------------------------------------------------------


def test_insert_from_select_copies_the_tenants_live_rows_only(s: Session, superuser_sql: SQL) -> None:
    stmt = insert(Archive).from_select(
        ["id", "name", "tenant_id"], select(Project.id, Project.name, Project.tenant_id)
    )
    with pytest.raises(TenantRequired):
        s.execute(stmt)
    with sa_patterns.tenant_scope(1):
        s.execute(stmt)
        # a hand-written tenant value of another tenant is not written either
        s.execute(insert(Archive).from_select(
            ["id", "name", "tenant_id"], select(Task.id, Task.title, literal(2))))
    assert superuser_sql("SELECT id, tenant_id FROM tp_archive ORDER BY id") == [(11, 1), (12, 1)]


def test_insert_from_select_without_tenant_id_is_filled(s: Session, superuser_sql: SQL) -> None:
    with sa_patterns.tenant_scope(3):
        s.execute(insert(Archive).from_select(["id", "name"], select(Project.id + 100, Project.name)))
    assert superuser_sql("SELECT id, tenant_id FROM tp_archive ORDER BY id") == [(131, 3), (132, 3), (133, 3)]


# --- 9. multi-VALUES ------------------------------------------------------------------------


def test_multi_values_insert(s: Session, superuser_sql: SQL) -> None:
    with sa_patterns.tenant_scope(1):
        s.execute(insert(Archive).values([{"id": 1, "name": "a"}, {"id": 2, "name": "b", "tenant_id": 1}]))
        with pytest.raises(TenantViolation):
            s.execute(insert(Archive).values([{"id": 3, "name": "c"}, {"id": 4, "name": "d", "tenant_id": 2}]))
    assert superuser_sql("SELECT id, tenant_id FROM tp_archive ORDER BY id") == [(1, 1), (2, 1)]


# --- 4. explicit joins in select_from -------------------------------------------------------


@pytest.mark.parametrize("joiner", [orm_join, join], ids=["orm.join", "sa.join"])
def test_counts_over_explicit_joins(s: Session, joiner: Any) -> None:
    with sa_patterns.tenant_scope(1):
        inner = select(func.count()).select_from(joiner(Project, Task, Project.id == Task.project_id))
        assert s.scalar(inner) == 3  # 111, 121, 122 (112 deleted, 999 tenant 2's, 13 deleted)
        outer = select(func.count()).select_from(
            joiner(Project, Task, Project.id == Task.project_id, isouter=True)
        )
        assert s.scalar(outer) == 3  # projects 11, 12 (x2)
        ids = s.scalars(select(Task.id).select_from(joiner(Task, Project, Task.project_id == Project.id)).order_by(Task.id)).all()
        assert ids == [111, 121, 122]
    with pytest.raises(TenantRequired):
        s.scalar(select(func.count()).select_from(joiner(Project, Task, Project.id == Task.project_id)))
    with sa_patterns.tenant_scope(1), pytest.raises(ConfigurationError, match="FULL"):
        s.scalar(select(func.count()).select_from(
            joiner(Project, Task, Project.id == Task.project_id, full=True)))


# --- 5. upserts -----------------------------------------------------------------------------


def test_upserts_never_touch_another_tenants_row(superuser_s: tuple[Session, SQL]) -> None:
    """The ORM wall's refusals, as the superuser (the app role: the next test)."""
    s, superuser_sql = superuser_s
    with sa_patterns.tenant_scope(1):
        with pytest.raises(TenantViolation):
            sa_patterns.insert_many(s, Project, [{"id": 21, "name": "stolen"}], on_conflict="update")
        stmt = pg_insert(Project).values(id=21, name="overwritten")
        stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={"name": stmt.excluded.name})
        returned = s.execute(stmt.returning(Project.name)).all()
        assert returned == []
        # its own row still upserts
        sa_patterns.insert_many(s, Project, [{"id": 11, "name": "mine"}], on_conflict="update")
        with pytest.raises(TenantViolation):
            sa_patterns.insert_many(s, Project, [{"id": 12, "name": "x", "tenant_id": 2}],
                                    on_conflict="update")
    assert superuser_sql("SELECT id, tenant_id, name FROM tp_projects WHERE id IN (11, 21) ORDER BY id") == [
        (11, 1, "mine"), (21, 2, "p21")]


def test_upserts_never_touch_another_tenants_row_as_the_app_role(s: Session, superuser_sql: SQL) -> None:
    """As the app role PostgreSQL may check the conflicting row against the UPDATE policy before
    the statement's own WHERE and refuse (PostgreSQL 15: an ON CONFLICT DO UPDATE onto a row the
    policy hides is an error, not a skip; 18 skips it): refused with TenantViolation either way
    (the database's refusal is mapped to it) or skipped, the row untouched."""
    refused = TenantViolation
    with sa_patterns.tenant_scope(1):
        with pytest.raises(refused), s.begin_nested():
            sa_patterns.insert_many(s, Project, [{"id": 21, "name": "stolen"}], on_conflict="update")
        stmt = pg_insert(Project).values(id=21, name="overwritten")
        stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={"name": stmt.excluded.name})
        try:
            with s.begin_nested():
                returned = s.execute(stmt.returning(Project.name)).all()
        except refused:
            pass
        else:
            assert returned == []
        sa_patterns.insert_many(s, Project, [{"id": 11, "name": "mine"}], on_conflict="update")
        with pytest.raises(TenantViolation):
            sa_patterns.insert_many(s, Project, [{"id": 12, "name": "x", "tenant_id": 2}],
                                    on_conflict="update")
    assert superuser_sql("SELECT id, tenant_id, name FROM tp_projects WHERE id IN (11, 21) ORDER BY id") == [
        (11, 1, "mine"), (21, 2, "p21")]


# --- 6. Session.bulk_* ----------------------------------------------------------------------


def test_legacy_bulk_methods_are_scoped(s: Session, superuser_sql: SQL) -> None:
    with sa_patterns.tenant_scope(1):
        s.bulk_update_mappings(Project, [{"id": 21, "name": "hijacked"}, {"id": 11, "name": "ok"}])
        with pytest.raises(TenantViolation):
            s.bulk_update_mappings(Project, [{"id": 12, "tenant_id": 2}])
        s.bulk_insert_mappings(Archive, [{"id": 5, "name": "x"}])
        with pytest.raises(TenantViolation):
            s.bulk_insert_mappings(Archive, [{"id": 6, "name": "y", "tenant_id": 2}])
        with pytest.raises(ConfigurationError, match="bulk_save_objects"):
            s.bulk_save_objects([Archive(id=7, name="z")])
    with pytest.raises(TenantRequired):
        s.bulk_insert_mappings(Archive, [{"id": 8, "name": "w"}])
    assert superuser_sql("SELECT id, tenant_id, name FROM tp_projects WHERE id IN (11, 21, 22) ORDER BY id") == [
        (11, 1, "ok"), (21, 2, "p21"), (22, 2, "p22")]
    assert superuser_sql("SELECT id, tenant_id FROM tp_archive") == [(5, 1)]


# --- 7. cascades by foreign key -------------------------------------------------------------


def test_bulk_delete_cascade_stays_inside_the_tenant(s: Session, superuser_sql: SQL) -> None:
    with sa_patterns.tenant_scope(1):
        s.execute(delete(Project).where(Project.id == 11))
    assert superuser_sql("SELECT id FROM tp_tasks WHERE deleted_at IS NOT NULL ORDER BY id") == [
        (111,), (112,), (998,)]
    assert superuser_sql("SELECT deleted_at FROM tp_tasks WHERE id = 999") == [(None,)]


def test_hard_delete_never_purges_another_tenants_child(superuser_s: tuple[Session, SQL]) -> None:
    # 998 (tenant 2, soft-deleted) references the parent: the hard delete is refused; it never
    # reaches across the tenant wall to purge it. As the superuser: the ORM wall's refusal (the
    # app role cannot see 998; the next test)
    s, superuser_sql = superuser_s
    with sa_patterns.tenant_scope(1):
        p = s.get(Project, 12)
        assert p is not None
        sa_patterns.hard_delete(s, p)
        with pytest.raises(TenantViolation, match="belonging to another tenant"):
            s.flush()
    s.rollback()
    assert superuser_sql("SELECT tenant_id FROM tp_tasks WHERE id = 998") == [(2,)]


def test_hard_delete_never_purges_another_tenants_child_as_the_app_role(s: Session, superuser_sql: SQL) -> None:
    """The app role does not see 998, so nothing is purged: the parent's DELETE meets the
    foreign key (checked past RLS), refused either way."""
    with sa_patterns.tenant_scope(1):
        p = s.get(Project, 12)
        assert p is not None
        sa_patterns.hard_delete(s, p)
        with pytest.raises((TenantViolation, sa_exc.IntegrityError)):
            s.flush()
    s.rollback()
    assert superuser_sql("SELECT tenant_id FROM tp_tasks WHERE id = 998") == [(2,)]


# --- 10. __rls__ without TenantMixin --------------------------------------------------------


def test_rls_without_tenant_mixin_is_refused() -> None:
    class Other(DeclarativeBase):
        pass

    with pytest.raises(ConfigurationError, match="__rls__"):

        class Plain(SoftDeleteMixin, Other):
            __tablename__ = "tp_plain"
            __rls__ = True
            id: Mapped[int] = mapped_column(primary_key=True)


def test_rls_on_a_model_without_any_mixin_is_refused_at_first_use(s: Session) -> None:
    class Other(DeclarativeBase):
        pass

    class Bare(Other):
        __tablename__ = "tp_bare"
        __rls__ = True
        id: Mapped[int] = mapped_column(primary_key=True)

    with pytest.raises(ConfigurationError, match="__rls__"):
        s.execute(select(Bare))


# --- 11. savepoints -------------------------------------------------------------------------


def test_tenant_switch_inside_a_rolled_back_savepoint(s: Session) -> None:
    probe = text("SELECT current_setting('app.tenant_id', true)")
    with sa_patterns.tenant_scope(1):
        assert s.scalar(probe) == "1"
        savepoint = s.begin_nested()
        with sa_patterns.tenant_scope(2):
            assert s.scalar(probe) == "2"
            savepoint.rollback()
            assert s.scalar(probe) == "2"  # PostgreSQL undid the switch: it is sent again
        assert s.scalar(probe) == "1"


# --- 12. the actor --------------------------------------------------------------------------


def test_actor_set_after_the_transaction_began_reaches_postgres(s: Session) -> None:
    probe = text("SELECT current_setting('app.actor_id', true)")
    with sa_patterns.tenant_scope(1):
        s.get(Project, 11)
        with sa_patterns.actor_scope("alice"):
            assert s.scalar(probe) == "alice"
            with sa_patterns.actor_scope("bob"):
                assert s.scalar(probe) == "bob"
        s.info["actor_id"] = "carol"
        assert s.scalar(probe) == "carol"


def test_scope_set_after_begin_is_sent_before_a_flush(s: Session, superuser_sql: SQL) -> None:
    s.execute(text("SELECT 1"))  # the transaction begins with no tenant
    with sa_patterns.tenant_scope(3):
        s.add(Archive(id=40, name="late"))
        # the flush's INSERT is no ORM statement: the settings must be sent before it
        s.flush()
    assert superuser_sql("SELECT tenant_id, seen FROM tp_archive WHERE id = 40") == [(3, "3")]


async def test_async_refresh_and_joinedload(async_session: AsyncSession) -> None:
    a = async_session
    with sa_patterns.tenant_scope(7):
        a.add(Project(id=71, tenant_id=7, name="a"))
        await a.flush()
    with sa_patterns.tenant_scope(8):
        a.add(Project(id=81, tenant_id=8, name="b"))
        await a.flush()
        a.add(Task(id=811, tenant_id=8, project_id=71, title="foreign"))
        await a.flush()
    a.expunge_all()
    with sa_patterns.tenant_scope(7):
        p = (await a.scalars(select(Project).where(Project.id == 71).options(joinedload(Project.tasks)))).unique().one()
        assert p.tasks == []
    with sa_patterns.tenant_scope(8):
        q = await a.get(Project, 81)
    with sa_patterns.tenant_scope(7), pytest.raises(sa_exc.InvalidRequestError):
        await a.refresh(q)


def test_view_models_refuse_legacy_bulk_writes(s: Session) -> None:
    from sa_patterns import View

    class VBase(DeclarativeBase):
        pass

    class Names(View, VBase):
        __tablename__ = "tp_names"
        __select__ = select(Archive.__table__.c.id, Archive.__table__.c.name)
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]

    for call in (
        lambda: s.bulk_insert_mappings(Names, [{"id": 1, "name": "x"}]),
        lambda: s.bulk_update_mappings(Names, [{"id": 1, "name": "x"}]),
        lambda: s.bulk_save_objects([Names(id=1, name="x")]),
    ):
        with pytest.raises(ReadOnlyError):
            call()


def test_orm_update_statement_with_returning_is_scoped(s: Session) -> None:
    with sa_patterns.tenant_scope(1):
        rows = s.execute(update(Project).values(name="x").returning(Project.id)).scalars().all()
    assert sorted(rows) == [11, 12]


def test_delete_orphan_of_a_soft_deletable_child_is_a_soft_delete(s: Session, superuser_sql: SQL) -> None:
    """A child removed from a delete-orphan collection is soft-deleted (restorable), and a child
    appended in the same flush is still written with its parent's key."""
    with sa_patterns.tenant_scope(1):
        p = s.get(Project, 12)
        assert p is not None
        gone = p.tasks[0]
        p.tasks.remove(gone)
        p.tasks.append(Task(id=129, title="new"))
        s.flush()
        assert superuser_sql("SELECT project_id, deleted_at IS NOT NULL FROM tp_tasks WHERE id = :i",
                   i=gone.id) == [(12, True)]
        assert superuser_sql("SELECT project_id, tenant_id FROM tp_tasks WHERE id = 129") == [(12, 1)]
        assert sorted(t.id for t in s.scalars(select(Task).where(Task.project_id == 12))) == [122, 129]
        back = s.get(Task, gone.id, execution_options={"include_deleted": True})
        assert back is not None and back is not gone  # it left the session like a deleted one
        back.restore()
        s.flush()
    assert superuser_sql("SELECT deleted_at FROM tp_tasks WHERE id = :i", i=gone.id) == [(None,)]


def test_tenant_parameter_equality_is_answered_without_building_sql(
    s: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pins the speed trick of tenancy.criteria._TenantValue on SQLAlchemy 2.0 and 2.1: while a
    tenant-filtered statement executes, SQLAlchemy compares the criteria's bound parameter with
    its annotated twin (``==``) and the comparator answers with a plain bool. If SQLAlchemy stops
    doing this, the trick is dead code and this test says so."""
    from sqlalchemy.sql.elements import BindParameter

    from sa_patterns.tenancy.criteria import _TenantValue

    answers: list[object] = []
    original = _TenantValue.comparator_factory.__eq__

    def counting(self: object, other: object) -> object:
        result = original(self, other)  # type: ignore[arg-type]
        if isinstance(other, BindParameter):
            answers.append(result)
        return result

    monkeypatch.setattr(_TenantValue.comparator_factory, "__eq__", counting)
    with sa_patterns.tenant_scope(1):
        assert [p.id for p in s.scalars(select(Project).where(Project.id == 11))] == [11]
    assert answers, "SQLAlchemy no longer compares the tenant parameter: remove _TenantValue"
    assert all(isinstance(answer, bool) for answer in answers)


def test_settings_reach_a_server_side_cursor(s: Session) -> None:
    """A streamed result (a named cursor, which cannot run inside a pipeline) still sees the
    settings of the tenant in force, after a switch inside the transaction too."""
    probe = text("current_setting('app.tenant_id', true)")
    for tenant, live in ((1, [11, 12]), (2, [21, 22, 23])):  # 13 is soft-deleted
        with sa_patterns.tenant_scope(tenant):
            rows = s.execute(
                select(Project.id, probe).execution_options(yield_per=2)
            ).all()
        assert {r[1] for r in rows} == {str(tenant)}
        assert sorted(r[0] for r in rows) == live
