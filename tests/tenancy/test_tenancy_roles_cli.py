"""``sa-patterns roles`` sets up the role model a DBA runs once; the owner then migrates, and the
app role works under the wall with the grants the migration generated."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import URL, Engine, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import sa_patterns
from sa_patterns import Audited, TenantMixin
from sa_patterns.cli import main as cli_main
from sa_patterns.schema import quote


class Base(DeclarativeBase):
    pass


class Invoice(TenantMixin, Audited, Base):
    __tablename__ = "rc_invoices"
    id: Mapped[int] = mapped_column(primary_key=True)
    total: Mapped[int]


SUFFIX = uuid.uuid4().hex[:8]
NAMES = {"owner": f"sap_rc_owner_{SUFFIX}", "app": f"sap_rc_app_{SUFFIX}", "admin": f"sap_rc_admin_{SUFFIX}"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for part, name in NAMES.items():
        monkeypatch.setenv(f"SA_PATTERNS_{part.upper()}_ROLE", name)
    return NAMES


@pytest.fixture
def schema(pg_url: URL, db_schema: str) -> Iterator[tuple[Engine, str]]:
    superuser = create_engine(pg_url)
    name = f"{db_schema}_rc"
    with superuser.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {quote(name)}"))
    try:
        yield superuser, name
    finally:
        with superuser.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {quote(name)} CASCADE"))
            for role in NAMES.values():
                if conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}):
                    conn.execute(text(f"DROP OWNED BY {quote(role)}; DROP ROLE {quote(role)}"))
        superuser.dispose()


def url_of(pg_url: URL) -> str:
    return pg_url.render_as_string(hide_password=False)


def test_roles_then_migrate_as_the_owner_then_work_as_the_app_role(
    pg_url: URL, schema: tuple[Engine, str], env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    superuser, name = schema
    for _ in range(2):  # idempotent
        assert cli_main(["roles", "--url", url_of(pg_url), "--schema", name]) == 0
    assert "roles ready" in capsys.readouterr().out
    with superuser.connect() as conn:
        rows = conn.execute(text(
            "SELECT rolname, rolcanlogin, rolsuper, rolbypassrls, rolcreaterole FROM pg_roles "
            "WHERE rolname = ANY(:names) ORDER BY 1"), {"names": list(env.values())}).all()
        assert sorted(rows) == sorted((n, True, False, False, False) for n in env.values())
        assert conn.scalar(text("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = :s"),
                           {"s": name}) == env["owner"]

    def login(role: str) -> Engine:
        return create_engine(pg_url.set(username=role), connect_args={"options": f"-csearch_path={name}"})

    owner, app = login(env["owner"]), login(env["app"])
    try:
        with owner.begin() as conn:  # the migration, as the owner
            sa_patterns.create_all(conn, Base.metadata)
        factory = sa_patterns.install(sessionmaker(app), wall="strict")
        for tenant in (1, 2):
            with factory() as s, sa_patterns.tenant_scope(tenant):
                s.add(Invoice(total=tenant * 10))
                s.commit()
        with factory() as s, sa_patterns.tenant_scope(2):
            assert [i.total for i in s.scalars(select(Invoice))] == [20]
            assert s.scalar(text("SELECT count(*) FROM rc_invoices")) == 1
            # the audit log: its tenant's entries only, and the app role cannot erase them
            assert s.scalars(text("SELECT tenant_id FROM audit_log")).all() == ["2"]
        with app.connect() as conn, pytest.raises(sa_patterns.MissingGrant, match="DELETE"):
            conn.execute(text("DELETE FROM audit_log"))
    finally:
        owner.dispose()
        app.dispose()
    with superuser.connect() as conn:
        assert conn.scalar(text(f"SELECT count(*) FROM {quote(name)}.audit_log")) == 2


def test_print_writes_the_sql_and_a_refusal_is_two_lines(
    pg_url: URL, schema: tuple[Engine, str], env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    superuser, name = schema
    assert cli_main(["roles", "--print", "--schema", name]) == 0
    printed = capsys.readouterr().out
    assert f'CREATE ROLE {env["app"]} LOGIN NOSUPERUSER NOBYPASSRLS' in printed
    assert f"ALTER SCHEMA {name} OWNER TO {env['owner']}" in printed
    with superuser.connect() as conn:  # printing ran nothing
        assert conn.scalar(text("SELECT count(*) FROM pg_roles WHERE rolname = ANY(:n)"),
                           {"n": list(env.values())}) == 0
    # a role that may not create roles: what failed and what to do, no traceback
    weak = f"sap_rc_weak_{SUFFIX}"
    with superuser.begin() as conn:
        conn.execute(text(f"CREATE ROLE {quote(weak)} LOGIN"))
    try:
        assert cli_main(["roles", "--url", url_of(pg_url.set(username=weak)), "--schema", name]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 2 and "permission denied" in err[0] and "superuser" in err[1]
    finally:
        with superuser.begin() as conn:
            conn.execute(text(f"DROP ROLE {quote(weak)}"))
