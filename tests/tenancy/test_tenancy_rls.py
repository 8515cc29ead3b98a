"""The database wall: row-level security as a NOBYPASSRLS, non-owner app role.

Superusers bypass RLS, so every test here connects as (or switches to) the plugin's app role,
on tables the run's owner role built; a test run as the superuser would pass vacuously. The
rows are committed once by the superuser, so that engines of their own (the app role's with a
one-connection pool, the admin role's) see them; each test's writes are rolled back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import URL, Connection, Engine, MetaData, create_engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from tenancy_models import Base, Project, StrDoc

import sa_patterns
from sa_patterns.cli import main as cli_main
from sa_patterns.schema import quote
from sa_patterns.testing.logins import RunRoles
from sa_patterns.testing.plugin import SQL
from sa_patterns.testing.rls import assert_rls_ready, rls_problems
from sa_patterns.testing.wire import RoundTrips


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return Base.metadata


def role_engine(url: URL, schema: str, **kw: object) -> Engine:
    """Log in *as* the role of ``url`` (SET ROLE under a superuser session would still allow
    SET ROLE)."""
    options = f"-csearch_path={schema},public"
    return create_engine(url, connect_args={"options": options}, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def seeded_db(superuser_engine: Engine) -> Iterator[Engine]:
    with superuser_engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO tn_projects (id, tenant_id, name) VALUES (11, 1, 'a'), (12, 1, 'b'), (21, 2, 'c')"))
    yield superuser_engine
    with superuser_engine.begin() as conn:
        conn.execute(text("TRUNCATE tn_tasks, tn_projects, tn_str_docs, tn_uuid_docs"))


@pytest.fixture(scope="module")
def app_engine(pg_url: URL, db_schema: str, db_roles: RunRoles, seeded_db: Engine) -> Iterator[Engine]:
    """The app role's own engine with a one-connection pool (the pooled connection is reused)."""
    eng = role_engine(db_roles.url(pg_url, db_roles.app), db_schema, pool_size=1, max_overflow=0)
    yield eng
    eng.dispose()


def factory(engine: Engine) -> sessionmaker[Session]:
    return sa_patterns.install(sessionmaker(engine))  # type: ignore[return-value]


RAW = text("SELECT id FROM tn_projects ORDER BY id")


def test_app_role_is_really_subject_to_rls(app_engine: Engine, engine: Engine, db_roles: RunRoles) -> None:
    for eng in (app_engine, engine):  # this module's own, and the plugin's
        with eng.connect() as conn:
            who = conn.execute(text(
                "SELECT session_user, current_user, rolsuper, rolbypassrls FROM pg_roles "
                "WHERE rolname = current_user")).one()
        assert who == (db_roles.app, db_roles.app, False, False)


def test_raw_sql_is_filtered_by_rls(app_engine: Engine) -> None:
    Session = factory(app_engine)
    with sa_patterns.tenant_scope(1), Session() as s:
        assert s.scalars(RAW).all() == [11, 12]
    with sa_patterns.tenant_scope(2), Session() as s:
        assert s.scalars(RAW).all() == [21]
    with Session() as s:  # no tenant: raw SQL sees nothing (the ORM would raise)
        assert s.scalars(RAW).all() == []
    with app_engine.connect() as conn:  # not even through a plain connection
        assert conn.execute(RAW).all() == []


def test_with_check_refuses_writing_another_tenant(app_engine: Engine) -> None:
    Session = factory(app_engine)
    with sa_patterns.tenant_scope(1), Session() as s:
        # the database's refusal, raised as the ORM wall's error (its cause: PostgreSQL's own)
        with pytest.raises(sa_patterns.TenantViolation, match="row-level security") as refused:
            s.execute(text("INSERT INTO tn_projects (id, tenant_id, name) VALUES (30, 2, 'x')"))
        assert getattr(refused.value.__cause__, "sqlstate", None) == "42501"
        s.rollback()
        # UPDATE of another tenant's rows matches nothing
        assert s.execute(text("UPDATE tn_projects SET name = 'x' WHERE id = 21")).rowcount == 0  # type: ignore[attr-defined]
        s.rollback()


def test_pool_reuse_without_tenant_sees_nothing(app_engine: Engine) -> None:
    Session = factory(app_engine)
    with sa_patterns.tenant_scope(1), Session() as s:
        pid = s.scalar(text("SELECT pg_backend_pid()"))
        assert s.scalars(RAW).all() == [11, 12]
        s.commit()
    with app_engine.connect() as conn:  # pool_size=1: the very same server connection
        assert conn.scalar(text("SELECT pg_backend_pid()")) == pid
        assert conn.scalar(text("SELECT current_setting('app.tenant_id', true)")) in ("", None)
        assert conn.execute(RAW).all() == []
    # an ORM session without tenant fails closed
    with Session() as s, pytest.raises(sa_patterns.TenantRequired):
        s.scalars(select(Project)).all()


def test_all_tenants_needs_the_admin_role(app_engine: Engine, admin_engine: Engine, seeded_db: Engine) -> None:
    with sa_patterns.all_tenants(), factory(app_engine)() as s:
        # the ORM filter is lifted, but the app role cannot see across tenants
        assert s.scalars(select(Project.id)).all() == []
    with sa_patterns.all_tenants(), factory(admin_engine)() as s:
        assert sorted(s.scalars(select(Project.id))) == [11, 12, 21]
    with sa_patterns.tenant_scope(2), factory(admin_engine)() as s:
        assert s.scalars(RAW).all() == [21]  # the admin role is scoped too unless it asks


def test_app_role_cannot_forge_the_bypass(app_engine: Engine, db_roles: RunRoles) -> None:
    with app_engine.connect() as conn:
        conn.execute(text("SELECT set_config('app.all_tenants', 'on', true)"))
        assert conn.execute(RAW).all() == []
        with pytest.raises(DBAPIError, match="permission denied"):
            conn.execute(text(f"SET LOCAL ROLE {quote(db_roles.admin)}"))


def test_hostile_setting_is_data(app_engine: Engine) -> None:
    with app_engine.connect() as conn:
        conn.execute(text("SELECT set_config('app.tenant_id', :v, true)"), {"v": "' or 1=1 --"})
        assert conn.execute(text("SELECT id FROM tn_str_docs")).all() == []
        with pytest.raises(DBAPIError, match="invalid input syntax"):
            conn.execute(RAW)  # a bigint policy cannot read it: an error, never a match
    with sa_patterns.tenant_scope("x' OR 'a'='a"), factory(app_engine)() as s:
        assert s.scalars(select(StrDoc)).all() == []


def test_set_local_role_in_a_transaction(superuser_engine: Engine, seeded_db: Engine, db_roles: RunRoles) -> None:
    """A superuser's connection, switched to the app role for one transaction."""
    with superuser_engine.connect() as conn, conn.begin():
        conn.execute(text(f"SET LOCAL ROLE {quote(db_roles.app)}"))
        conn.execute(text("SELECT set_config('app.tenant_id', '2', true)"))
        assert conn.execute(RAW).scalars().all() == [21]


def test_assert_rls_ready(connection: Connection, superuser_sql: SQL, db_roles: RunRoles, pg_url: URL) -> None:
    """Checked as the app role itself (the role of the connection), and for a named role; the
    defects are made by the superuser inside the test's transaction, which rolls back."""
    assert_rls_ready(connection, Base.metadata)
    assert_rls_ready(connection, Base.metadata, role=db_roles.app)
    with pytest.raises(AssertionError, match="superuser"):
        assert_rls_ready(connection, Base.metadata, role=pg_url.username)
    superuser_sql("ALTER TABLE tn_str_docs NO FORCE ROW LEVEL SECURITY")
    superuser_sql("DROP POLICY tn_uuid_docs_tenant_isolation ON tn_uuid_docs")
    problems = "\n".join(rls_problems(connection, Base.metadata))
    assert "tn_str_docs: row level security is not FORCEd" in problems
    assert "tn_uuid_docs has no policy" in problems  # (the admin policy is not the app's)
    superuser_sql(f"GRANT {quote(db_roles.admin)} TO {quote(db_roles.app)}")
    problems = "\n".join(rls_problems(connection, Base.metadata))
    assert f"belongs to {db_roles.admin}" in problems
    superuser_sql("ALTER TABLE tn_projects DISABLE ROW LEVEL SECURITY")
    superuser_sql(f"ALTER TABLE tn_tasks OWNER TO {quote(db_roles.app)}")
    problems = "\n".join(rls_problems(connection, Base.metadata))
    assert "tn_projects: row level security is not enabled" in problems
    assert "tn_tasks is owned by" in problems


def test_doctor_cli(
    pg_url: URL, db_schema: str, db_roles: RunRoles, seeded_db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    options = {"options": f"-csearch_path={db_schema},public"}
    raw = pg_url.update_query_dict(options).render_as_string(hide_password=False)
    app = db_roles.url(pg_url, db_roles.app).update_query_dict(options).render_as_string(hide_password=False)
    code = cli_main(["doctor", "--url", raw, "--metadata", "tenancy_models:Base", "--app-role", db_roles.app, "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["ok"] and {"check": "row level security", "problems": []} in report["checks"]
    # logged in as the app role itself, the role checked is the one connected
    assert cli_main(["doctor", "--url", app, "--metadata", "tenancy_models:Base", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and {"check": "row level security", "problems": []} in report["checks"]
    assert cli_main(["doctor", "--url", raw, "--metadata", "tenancy_models:Base"]) == 1
    out = capsys.readouterr().out
    assert "row level security" in out and "superuser" in out


def test_one_set_config_per_transaction_riding_with_the_first_query(
    pg_url: URL, db_schema: str, db_roles: RunRoles, seeded_db: Engine
) -> None:
    """As the app role, RLS on: the tenant reaches the policy before the first statement, in
    that statement's round trip; a switch inside the transaction rides with the next one."""
    with RoundTrips(pg_url) as wire:
        engine = role_engine(db_roles.url(wire.url, db_roles.app), db_schema, pool_size=1, max_overflow=0)
        with sa_patterns.tenant_scope(1), factory(engine).begin() as s:
            s.execute(text("SELECT 1"))  # connected, and install()'s one check of the role done
        wire.reset()
        with sa_patterns.tenant_scope(1), factory(engine).begin() as s:
            for _ in range(5):
                assert [p.id for p in s.scalars(select(Project))] == [11, 12]
                assert s.scalars(RAW).all() == [11, 12]
            with sa_patterns.tenant_scope(2):
                assert s.scalars(RAW).all() == [21]
        engine.dispose()
    # BEGIN, 11 queries, COMMIT: 13 round trips; 2 set_config statements ride along
    assert (wire.count, wire.statements) == (13, 15)
