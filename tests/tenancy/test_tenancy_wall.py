"""install() knows when the database wall is down: a superuser, a BYPASSRLS role, or the owner
of a table whose RLS is not forced is warned about once per engine, or refused with
``wall="strict"``; the app role (NOSUPERUSER NOBYPASSRLS, owning nothing) passes silently."""

from __future__ import annotations

import datetime as dt
import uuid
import warnings
from collections.abc import Iterator

import pytest
from sqlalchemy import URL, DateTime, Engine, create_engine, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import sa_patterns
from sa_patterns import DatabaseWallDown, DatabaseWallWarning, TenantMixin
from sa_patterns.partitioning import Partitioned, range_partition
from sa_patterns.roles import RoleNames, use_roles
from sa_patterns.schema import quote
from sa_patterns.tenancy.wall import missing_grant, wall_findings


class Base(DeclarativeBase):
    pass


class Note(TenantMixin, Base):
    __tablename__ = "tn_wall_notes"
    id: Mapped[int] = mapped_column(primary_key=True)


class Reading(TenantMixin, Partitioned, Base):
    __tablename__ = "tn_wall_readings"
    __partition_by__ = range_partition("taken_at", interval="month", premake=1)
    id: Mapped[int] = mapped_column(primary_key=True)
    taken_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), primary_key=True)


SUFFIX = uuid.uuid4().hex[:8]
ROLES = RoleNames(owner=f"sap_wall_owner_{SUFFIX}", app=f"sap_wall_app_{SUFFIX}", admin=f"sap_wall_admin_{SUFFIX}")
BYPASS = f"sap_wall_bypass_{SUFFIX}"


def login(pg_url: URL, schema: str, role: str) -> Engine:
    return create_engine(pg_url.set(username=role), connect_args={"options": f"-csearch_path={schema}"})


@pytest.fixture(scope="module")
def superuser(pg_url: URL) -> Iterator[Engine]:
    engine = create_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def built(superuser: Engine, db_schema: str) -> Iterator[str]:
    """The schema built as the owner (not a superuser), the roles given LOGIN."""
    with use_roles(ROLES), superuser.begin() as conn:
        conn.execute(text(f"CREATE ROLE {quote(BYPASS)} LOGIN BYPASSRLS"))
        for role in (ROLES.owner, ROLES.app, ROLES.admin):
            conn.execute(text(f"CREATE ROLE {quote(role)} LOGIN NOSUPERUSER NOBYPASSRLS"))
        conn.execute(text(f"ALTER SCHEMA {quote(db_schema)} OWNER TO {quote(ROLES.owner)}"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA {quote(db_schema)} TO {quote(BYPASS)}"))
        conn.execute(text(f"SET LOCAL ROLE {quote(ROLES.owner)}"))
        conn.execute(text(f"SET LOCAL search_path = {quote(db_schema)}"))
        sa_patterns.create_all(conn, Base.metadata)
        conn.execute(text(f"GRANT SELECT ON tn_wall_notes TO {quote(BYPASS)}"))
    try:
        yield db_schema
    finally:
        with superuser.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {quote(db_schema)} CASCADE; CREATE SCHEMA {quote(db_schema)}"))
            for role in (BYPASS, ROLES.app, ROLES.admin, ROLES.owner):
                conn.execute(text(f"DROP OWNED BY {quote(role)}; DROP ROLE {quote(role)}"))


def first_query(engine: Engine, *, wall: str = "warn") -> None:
    factory: sessionmaker[Session] = sa_patterns.install(sessionmaker(engine), wall=wall)  # type: ignore[arg-type]
    with factory() as s, sa_patterns.tenant_scope(1):
        s.scalars(select(Note)).all()


@pytest.mark.parametrize("who", ["superuser", "bypassrls", "owner"])
def test_a_role_that_skips_rls_is_warned_about_once(
    pg_url: URL, superuser: Engine, built: str, who: str
) -> None:
    engine = create_engine(pg_url, connect_args={"options": f"-csearch_path={built}"}) if who == "superuser" \
        else login(pg_url, built, BYPASS if who == "bypassrls" else ROLES.owner)
    if who == "owner":  # forced RLS binds the owner too; without FORCE it skips the policies
        with superuser.begin() as conn:
            conn.execute(text(f"ALTER TABLE {quote(built)}.tn_wall_notes NO FORCE ROW LEVEL SECURITY"))
    try:
        expected = {"superuser": "is a superuser", "bypassrls": "has BYPASSRLS", "owner": "forced"}[who]
        with pytest.warns(DatabaseWallWarning, match=expected):
            first_query(engine)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            first_query(engine)  # once per engine: another factory on it does not warn again
        with pytest.raises(DatabaseWallDown, match=expected) as refused:
            first_query(engine, wall="strict")
        assert "app role" in str(refused.value)  # the fix, not only the fault
        with pytest.raises(DatabaseWallDown):
            first_query(engine, wall="strict")  # refused every time, not once
    finally:
        engine.dispose()
        if who == "owner":
            with superuser.begin() as conn:
                conn.execute(text(f"ALTER TABLE {quote(built)}.tn_wall_notes FORCE ROW LEVEL SECURITY"))


def test_the_app_role_passes_silently_even_when_strict(pg_url: URL, built: str) -> None:
    engine = login(pg_url, built, ROLES.app)
    try:
        with engine.connect() as conn:
            assert wall_findings(conn) == []
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            first_query(engine, wall="strict")
        # the grants generated for the app role work: insert (sequence included) and read back
        factory = sa_patterns.install(sessionmaker(engine), wall="strict")
        with factory() as s, sa_patterns.tenant_scope(7):
            s.add(Note())
            s.commit()
            assert [n.tenant_id for n in s.scalars(select(Note))] == [7]
    finally:
        engine.dispose()


def test_the_forced_owner_is_not_flagged(pg_url: URL, built: str) -> None:
    """FORCE ROW LEVEL SECURITY subjects the owner to the policies: no finding."""
    engine = login(pg_url, built, ROLES.owner)
    try:
        with engine.connect() as conn:
            assert wall_findings(conn) == []
    finally:
        engine.dispose()


def test_wall_mode_is_validated() -> None:
    with pytest.raises(sa_patterns.ConfigurationError, match="wall='loose'"):
        sa_patterns.install(sessionmaker(), wall="loose")  # type: ignore[arg-type]


@pytest.mark.parametrize("missing", ["table", "sequence"])
def test_a_missing_grant_is_named(pg_url: URL, superuser: Engine, built: str, missing: str) -> None:
    """The app role without a grant gets the GRANT to add, not a bare 'permission denied'."""
    revoke, restore = {
        "table": ("REVOKE SELECT ON {s}.tn_wall_notes FROM {r}", "GRANT SELECT ON {s}.tn_wall_notes TO {r}"),
        "sequence": ("REVOKE USAGE ON SEQUENCE {s}.tn_wall_notes_id_seq FROM {r}",
                     "GRANT USAGE ON SEQUENCE {s}.tn_wall_notes_id_seq TO {r}"),
    }[missing]
    names = {"s": quote(built), "r": quote(ROLES.app)}
    with superuser.begin() as conn:
        conn.execute(text(revoke.format(**names)))
    engine = login(pg_url, built, ROLES.app)
    try:
        factory = sa_patterns.install(sessionmaker(engine))
        with factory() as s, sa_patterns.tenant_scope(3), pytest.raises(sa_patterns.MissingGrant) as denied:
            if missing == "table":
                s.scalars(select(Note)).all()
            else:
                s.add(Note())
                s.flush()
        expected = {
            "table": f"GRANT SELECT ON TABLE tn_wall_notes TO {ROLES.app}",
            "sequence": f"GRANT USAGE ON SEQUENCE tn_wall_notes_id_seq TO {ROLES.app}",
        }[missing]
        assert expected in str(denied.value)
    finally:
        engine.dispose()
        with superuser.begin() as conn:
            conn.execute(text(restore.format(**names)))


def test_a_backfill_by_the_owner_reaches_every_tenant_deliberately(
    pg_url: URL, superuser: Engine, built: str
) -> None:
    """The documented way for a migration to touch every tenant's rows: as the owner, with
    app.all_tenants on in its transaction. The app role setting it gains nothing, also through a
    view the owner owns (which reads with the owner's policies)."""
    with superuser.begin() as conn:
        conn.execute(text(f"INSERT INTO {quote(built)}.tn_wall_notes (id, tenant_id) VALUES (501, 1), (502, 2)"))
    owner, app = login(pg_url, built, ROLES.owner), login(pg_url, built, ROLES.app)
    try:
        with owner.begin() as conn:
            assert conn.scalar(text("SELECT count(*) FROM tn_wall_notes")) == 0  # FORCEd: no tenant, nothing
            conn.execute(text("SELECT set_config('app.all_tenants', 'on', true)"))
            assert conn.scalar(text("UPDATE tn_wall_notes SET tenant_id = tenant_id WHERE id > 500 RETURNING 1")) == 1
            assert conn.scalar(text("SELECT count(*) FROM tn_wall_notes WHERE id > 500")) == 2
            conn.execute(text("CREATE VIEW tn_wall_all AS SELECT * FROM tn_wall_notes"))
            conn.execute(text(f"GRANT SELECT ON tn_wall_all TO {quote(ROLES.app)}"))
        with app.begin() as conn:
            conn.execute(text("SELECT set_config('app.all_tenants', 'on', true)"))
            assert conn.scalar(text("SELECT count(*) FROM tn_wall_notes")) == 0
            assert conn.scalar(text("SELECT count(*) FROM tn_wall_all")) == 0
            conn.execute(text("SELECT set_config('app.tenant_id', '2', true)"))
            assert conn.scalars(text("SELECT id FROM tn_wall_all WHERE id > 500")).all() == [502]
    finally:
        owner.dispose()
        app.dispose()
        with superuser.begin() as conn:
            conn.execute(text(f"DROP VIEW IF EXISTS {quote(built)}.tn_wall_all"))
            conn.execute(text(f"DELETE FROM {quote(built)}.tn_wall_notes WHERE id > 500"))


def test_a_partition_read_directly_shows_nothing(pg_url: URL, superuser: Engine, built: str) -> None:
    """Default privileges give the app role a grant on each partition the maintenance function
    creates; the partition's own row-level security (no policy) keeps it from being a way around
    the parent's policies."""
    with superuser.connect() as conn:
        parts = conn.scalars(text(
            "SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:t) ORDER BY 1"), {"t": f"{built}.tn_wall_readings"}).all()
        assert parts and all(conn.execute(text(
            "SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = to_regclass(:p)"),
            {"p": p}).scalar() for p in parts)
    app = login(pg_url, built, ROLES.app)
    try:
        factory = sa_patterns.install(sessionmaker(app))
        for tenant in (1, 2):
            with factory() as s, sa_patterns.tenant_scope(tenant):
                s.add(Reading(id=tenant, taken_at=dt.datetime.now(dt.timezone.utc)))
                s.commit()
        with factory() as s, sa_patterns.tenant_scope(1):
            assert s.scalar(select(func.count()).select_from(Reading)) == 1
            assert s.scalar(text(f"SELECT count(*) FROM {parts[0]}")) == 0
            assert s.scalar(text("SELECT count(*) FROM tn_wall_readings")) == 1
    finally:
        app.dispose()


def test_a_revoked_grant_is_a_finding_and_autogenerate_repairs_it(
    pg_url: URL, superuser: Engine, built: str
) -> None:
    from alembic.autogenerate import produce_migrations
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    import sa_patterns.alembic
    from sa_patterns.alembic.ops import ReplaceEntityOp
    from sa_patterns.cli.doctor import DoctorContext, run_checks
    from sa_patterns.schema import Grant

    owner, app = login(pg_url, built, ROLES.owner), login(pg_url, built, ROLES.app)
    try:
        with use_roles(ROLES):
            with owner.begin() as conn:
                conn.execute(text(f"REVOKE INSERT ON tn_wall_notes FROM {quote(ROLES.app)}"))
            with app.connect() as conn:  # the doctor, as the app role
                problems = dict(run_checks(DoctorContext(conn, Base.metadata)))["toolkit objects present and current"]
            assert any("tn_wall_notes" in p and ROLES.app in p and "grant" in p for p in problems), problems
            with owner.begin() as conn:
                ctx = MigrationContext.configure(
                    conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": Base.metadata})
                ops = [o for o in produce_migrations(ctx, Base.metadata).upgrade_ops.ops
                       if isinstance(o, ReplaceEntityOp)]
                assert [(type(o.entity), o.entity.table, o.entity.role) for o in ops] == [  # type: ignore[attr-defined]
                    (Grant, "tn_wall_notes", "@app")]
                for op in ops:
                    Operations(ctx).invoke(op)
            with app.connect() as conn:
                assert dict(run_checks(DoctorContext(conn, Base.metadata)))["toolkit objects present and current"] == []
                assert conn.scalar(text("SELECT has_table_privilege('tn_wall_notes', 'INSERT')"))
    finally:
        owner.dispose()
        app.dispose()


async def test_async_sessions_are_checked_too(pg_url: URL, built: str) -> None:
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    sync = create_engine(pg_url)
    with sync.begin() as conn:  # a table the app role was granted nothing on
        conn.execute(text(f"CREATE TABLE {quote(built)}.tn_wall_private (id int)"))
    sync.dispose()
    superuser = create_async_engine(pg_url, connect_args={"options": f"-csearch_path={built}"})
    app = create_async_engine(pg_url.set(username=ROLES.app), connect_args={"options": f"-csearch_path={built}"})
    try:
        strict = sa_patterns.install(async_sessionmaker(superuser), wall="strict")
        with pytest.raises(DatabaseWallDown, match="superuser"):
            async with strict() as s:
                await s.execute(text("SELECT 1"))
        factory = sa_patterns.install(async_sessionmaker(app), wall="strict")
        with sa_patterns.tenant_scope(1):
            async with factory() as s:
                assert (await s.scalars(select(Note))).all() is not None
                with pytest.raises(sa_patterns.MissingGrant, match="GRANT SELECT ON TABLE tn_wall_private"):
                    await s.execute(text("SELECT * FROM tn_wall_private"))
    finally:
        await superuser.dispose()
        await app.dispose()


def test_ddl_by_the_app_role_is_named_as_the_owners_job(pg_url: URL, built: str) -> None:
    app = login(pg_url, built, ROLES.app)
    try:
        factory = sa_patterns.install(sessionmaker(app))
        with factory() as s, sa_patterns.tenant_scope(1), pytest.raises(
            sa_patterns.MissingGrant, match="only the owner role creates"
        ):
            s.execute(text("CREATE TABLE tn_wall_mine (id int)"))
    finally:
        app.dispose()


def test_the_advice_for_a_withheld_write_says_it_may_be_on_purpose() -> None:
    denied = missing_grant("permission denied for table audit_log", "DELETE FROM audit_log", "app_user")
    assert denied is not None
    assert "GRANT DELETE ON TABLE audit_log TO app_user" in str(denied)
    assert "append-only" in str(denied)
    assert missing_grant("duplicate key value violates unique constraint", "INSERT", None) is None
