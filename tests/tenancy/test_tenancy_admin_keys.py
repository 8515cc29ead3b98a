"""Administrators who are users of the app, on the app role's pool, act across tenants with a
key the database checks; SQL that sets the setting itself, a revoked or expired key, or the next
transaction on the same pooled connection opens nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import URL, Engine, create_engine, select, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import sa_patterns
import sa_patterns.alembic
from sa_patterns import ConfigurationError, MissingGrant, TenantMixin
from sa_patterns.cli import main as cli_main
from sa_patterns.roles import RoleNames, use_roles
from sa_patterns.schema import quote
from sa_patterns.tenancy.admin_keys import add_admin_key, enable_admin_keys, new_admin_key


class Base(DeclarativeBase):
    pass


class Ticket(TenantMixin, Base):
    __tablename__ = "ak_tickets"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str]


enable_admin_keys(Base.metadata)

SUFFIX = uuid.uuid4().hex[:8]
ROLES = RoleNames(owner=f"sap_ak_owner_{SUFFIX}", app=f"sap_ak_app_{SUFFIX}", admin=f"sap_ak_admin_{SUFFIX}")


@pytest.fixture(scope="module")
def superuser(pg_url: URL) -> Iterator[Engine]:
    engine = create_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def built(superuser: Engine, db_schema: str) -> Iterator[str]:
    with use_roles(ROLES), superuser.begin() as conn:
        for role in (ROLES.owner, ROLES.app, ROLES.admin):
            conn.execute(text(f"CREATE ROLE {quote(role)} LOGIN NOSUPERUSER NOBYPASSRLS"))
        conn.execute(text(f"ALTER SCHEMA {quote(db_schema)} OWNER TO {quote(ROLES.owner)}"))
        conn.execute(text(f"SET LOCAL ROLE {quote(ROLES.owner)}"))
        conn.execute(text(f"SET LOCAL search_path = {quote(db_schema)}"))
        sa_patterns.create_all(conn, Base.metadata)
        conn.execute(text("SELECT set_config('app.all_tenants', 'on', true)"))  # the owner's seed
        conn.execute(text("INSERT INTO ak_tickets (id, tenant_id, status) VALUES (1, 1, 'open'), (2, 2, 'open')"))
    try:
        yield db_schema
    finally:
        with superuser.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {quote(db_schema)} CASCADE; CREATE SCHEMA {quote(db_schema)}"))
            for role in (ROLES.app, ROLES.admin, ROLES.owner):
                conn.execute(text(f"DROP OWNED BY {quote(role)}; DROP ROLE {quote(role)}"))


def login(pg_url: URL, schema: str, role: str) -> Engine:
    return create_engine(pg_url.set(username=role), connect_args={"options": f"-csearch_path={schema}"},
                         pool_size=1, max_overflow=0)


@pytest.fixture(scope="module")
def owner(pg_url: URL, built: str) -> Iterator[Engine]:
    engine = login(pg_url, built, ROLES.owner)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def app(pg_url: URL, built: str) -> Iterator[Engine]:
    engine = login(pg_url, built, ROLES.app)
    yield engine
    engine.dispose()


def visible(app: Engine, **scope: str) -> list[int]:
    factory = sa_patterns.install(sessionmaker(app), wall="strict")
    with sa_patterns.all_tenants(**scope), factory() as s:
        orm = sorted(t.id for t in s.scalars(select(Ticket)))
        assert sorted(s.scalars(text("SELECT id FROM ak_tickets"))) == orm  # raw SQL agrees
        return orm


def test_a_stored_key_opens_every_tenant_and_nothing_else_does(
    owner: Engine, app: Engine, pg_url: URL, built: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert visible(app) == []  # all_tenants() alone: the ORM filter lifts, the database's holds
    owner_url = pg_url.set(username=ROLES.owner).update_query_dict({"options": f"-csearch_path={built}"})
    assert cli_main(["admin-key", "add", "support", "--url", owner_url.render_as_string(False)]) == 0
    key = capsys.readouterr().out.strip()
    assert len(key) >= 32
    assert visible(app, key=key) == [1, 2]
    # writes across tenants pass the WITH CHECK too
    factory = sa_patterns.install(sessionmaker(app))
    with sa_patterns.all_tenants(key=key), factory.begin() as s:
        assert s.execute(update(Ticket).values(status="seen")).rowcount == 2
    # the next transaction on the same pooled connection: nothing carried over
    assert visible(app) == []
    # SQL that sets the setting itself knows no key; the keys are not the app role's to read
    with app.begin() as conn:
        conn.execute(text("SELECT set_config('app.admin_key', :k, true)"), {"k": new_admin_key()})
        conn.execute(text("SELECT set_config('app.all_tenants', 'on', true)"))
        assert conn.scalar(text("SELECT count(*) FROM ak_tickets")) == 0
    factory = sa_patterns.install(sessionmaker(app))
    with factory() as s, sa_patterns.tenant_scope(1), pytest.raises(MissingGrant):
        s.execute(text("SELECT key_hash FROM sa_patterns_admin_keys"))
    # the database keeps a hash, never the key
    with owner.connect() as conn:
        stored = conn.execute(text("SELECT name, key_hash FROM sa_patterns_admin_keys")).all()
        assert [n for n, _ in stored] == ["support"] and key.encode() not in bytes(stored[0][1])
    # revoked: closed from the next statement on
    assert cli_main(["admin-key", "revoke", "support", "--url", owner_url.render_as_string(False)]) == 0
    assert visible(app, key=key) == []


def test_an_expired_key_opens_nothing(owner: Engine, app: Engine) -> None:
    key = new_admin_key()
    with owner.begin() as conn:
        add_admin_key(conn, "old", key, expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1))
    try:
        assert visible(app, key=key) == []
    finally:
        with owner.begin() as conn:
            conn.execute(text("DELETE FROM sa_patterns_admin_keys WHERE name = 'old'"))


def test_a_short_key_is_refused_before_any_sql() -> None:
    with pytest.raises(ConfigurationError, match="at least 32"), sa_patterns.all_tenants(key="hunter2"):
        pass


def test_autogenerate_is_empty_after_create_all(owner: Engine) -> None:
    with use_roles(ROLES), owner.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={**sa_patterns.alembic.configure_kwargs(), "target_metadata": Base.metadata})
        assert list(compare_metadata(ctx, Base.metadata)) == []
        policies = set(conn.scalars(text(
            "SELECT policyname FROM pg_policies WHERE tablename = 'ak_tickets'")))
        assert "ak_tickets_tenant_admin_key" in policies
