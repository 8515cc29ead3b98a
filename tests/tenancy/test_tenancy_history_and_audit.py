"""Copies of a tenant's rows are scoped like the rows. A tenant model's history is a tenant table
too: history(), as_of() and revert() follow the tenant in scope, a statement without one raises,
and with ``__rls__`` the history table gets the same row-level security as the live table, so
raw SQL as the app role sees its tenant's versions only (both mixin orders are covered). The
audit log's query helper narrows a tenant model's entries to the tenant in scope.

Everything runs as the plugin's app role (NOSUPERUSER NOBYPASSRLS, owning nothing) on the
schema the owner role built, but what only the admin role may see: every tenant inside
``all_tenants()``."""

from __future__ import annotations

import pytest
from sqlalchemy import URL, Engine, MetaData, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import sa_patterns
from sa_patterns import (
    Audited,
    TenantMixin,
    TenantRequired,
    Versioned,
    as_of,
    audit_entries,
    history,
    revert,
)
from sa_patterns.schema import quote
from sa_patterns.testing.logins import RunRoles
from sa_patterns.testing.rls import rls_problems


class Base(DeclarativeBase):
    pass


class Contract(Versioned, TenantMixin, Base):
    __tablename__ = "tv_contracts"
    __rls__ = True
    id: Mapped[int] = mapped_column(primary_key=True)
    amount: Mapped[int]


class Lease(TenantMixin, Versioned, Base):  # the other mixin order
    __tablename__ = "tv_leases"
    __rls__ = True
    id: Mapped[int] = mapped_column(primary_key=True)
    amount: Mapped[int]


class Ticket(TenantMixin, Audited, Base):
    __tablename__ = "tv_tickets"
    __rls__ = True
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]


MODELS = (Contract, Lease)


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return Base.metadata


def seed(session: Session) -> Session:
    """Two tenants, one row each per model, each updated once (two versions)."""
    for tenant in (1, 2):
        with sa_patterns.tenant_scope(tenant):
            rows = [model(id=tenant, amount=10 * tenant) for model in MODELS]
            session.add_all(rows)
            session.flush()
            for row in rows:
                row.amount += 1
            session.flush()
    session.expunge_all()
    return session


@pytest.fixture
def seeded(session: Session) -> Session:
    """The app role's session, seeded."""
    return seed(session)


def now(session: Session) -> object:
    return session.execute(text("SELECT clock_timestamp()")).scalar_one()


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_as_of_and_history_follow_the_tenant_in_scope(seeded: Session, model: type) -> None:
    s = seeded
    at = now(s)
    then = as_of(model, at)  # built once, filtered when each statement runs
    with sa_patterns.tenant_scope(1):
        assert s.execute(select(then.c.id, then.c.amount)).all() == [(1, 11)]
        joined = select(model.id, then.c.amount).join(then, then.c.id == model.id)  # type: ignore[attr-defined]
        assert s.execute(joined).all() == [(1, 11)]
        mine = s.get(model, 1)
        assert [v.values["amount"] for v in history(s, mine)] == [10, 11]
    with sa_patterns.tenant_scope(2):
        assert s.execute(select(then.c.id)).all() == [(2,)]
        # an object of tenant 1 still in the session shows no history under tenant 2
        assert history(s, mine) == []
    with sa_patterns.all_tenants():  # the ORM filter is lifted; to the app role RLS shows nothing
        assert s.execute(select(then.c.id)).all() == []
    s.info["tenant_id"] = 2  # the session's own tenant counts as well as the scope
    assert s.execute(select(then.c.amount)).all() == [(21,)]
    del s.info["tenant_id"]
    with pytest.raises(TenantRequired):
        s.execute(select(then.c.id)).all()
    with pytest.raises(TenantRequired):
        history(s, mine)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_as_of_shows_the_admin_role_every_tenant_in_all_tenants(admin_session: Session, model: type) -> None:
    s = seed(admin_session)
    then = as_of(model, now(s))
    with sa_patterns.all_tenants():
        assert sorted(s.execute(select(then.c.id)).all()) == [(1,), (2,)]
    with sa_patterns.tenant_scope(2):
        assert s.execute(select(then.c.id)).all() == [(2,)]


def test_revert_reads_the_version_under_the_tenant_in_scope(seeded: Session) -> None:
    s = seeded
    with sa_patterns.tenant_scope(1):
        contract = s.get(Contract, 1)
        revert(s, contract, 1)
        s.flush()
        assert contract.amount == 10
    with sa_patterns.tenant_scope(2), pytest.raises(sa_patterns.NotFound):
        revert(s, contract, 1)  # tenant 1's versions are not tenant 2's to read


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_history_table_has_the_live_tables_row_level_security(engine: Engine, model: type) -> None:
    history_name = f"{model.__tablename__}_history"  # type: ignore[attr-defined]
    with engine.connect() as conn:
        flags = conn.execute(text(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = CAST(:t AS regclass)"
        ), {"t": history_name}).one()
        policies = conn.execute(text(
            "SELECT policyname, qual, with_check FROM pg_policies WHERE tablename = :t"
        ), {"t": history_name}).all()
    assert tuple(flags) == (True, True)
    by_name = {p.policyname: p for p in policies}
    assert set(by_name) == {f"{history_name}_tenant_{p}" for p in ("isolation", "admin", "owner")}
    isolation = by_name[f"{history_name}_tenant_isolation"]
    assert "app.tenant_id" in isolation.qual and "app.tenant_id" in isolation.with_check


def test_app_role_writes_history_and_reads_its_tenants_only(engine: Engine, superuser_engine: Engine) -> None:
    """As a NOBYPASSRLS app role the triggers open and close versions under RLS, and raw SQL on
    the history table sees the tenant in scope only; without one, nothing. (Committed, through
    the plugin's app engine; the superuser cleans up.)"""
    app = engine
    factory = sa_patterns.install(sessionmaker(app))
    raw = text("SELECT id, version, amount FROM tv_contracts_history ORDER BY id, version")
    try:
        for tenant in (7, 8):
            with sa_patterns.tenant_scope(tenant), factory.begin() as s:
                row = Contract(id=100 + tenant, amount=tenant)
                s.add(row)
                s.flush()
                row.amount += 1
        with sa_patterns.tenant_scope(7), factory() as s:
            assert s.execute(raw).all() == [(107, 1, 7), (107, 2, 8)]
        with app.connect() as conn:
            assert conn.execute(raw).all() == []
    finally:
        with superuser_engine.begin() as conn:
            conn.execute(text("DELETE FROM tv_contracts WHERE id > 100"))
            conn.execute(text("ALTER TABLE tv_contracts_history DISABLE TRIGGER USER"))
            conn.execute(text("DELETE FROM tv_contracts_history WHERE id > 100"))
            conn.execute(text("ALTER TABLE tv_contracts_history ENABLE TRIGGER USER"))


def test_rls_check_covers_history_tables(engine: Engine) -> None:
    with engine.connect() as conn:  # the role checked: the connection's, the app role
        assert rls_problems(conn, Base.metadata) == []
        names = {t.name for t in sa_patterns.tenancy.tenant_tables(Base.metadata)}
    assert names == {"tv_contracts", "tv_contracts_history", "tv_leases", "tv_leases_history", "tv_tickets"}


def test_autogenerate_writes_the_history_tables_rls(pg_url: URL, db_roles: RunRoles) -> None:
    """The migration autogenerate writes for a tenant model with ``__rls__`` secures its history
    table too, and after it there is no diff. Run by the owner role (not a superuser), in a
    database of its own, as a deployment runs its migrations."""
    import uuid

    from alembic.autogenerate import compare_metadata, produce_migrations
    from alembic.migration import MigrationContext
    from alembic.operations import Operations
    from alembic.operations.ops import ModifyTableOps

    from sa_patterns.alembic import configure_kwargs

    name = f"sap_tv_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" OWNER {quote(db_roles.owner)}'))
    engine = create_engine(db_roles.url(pg_url, db_roles.owner).set(database=name))
    try:
        with engine.begin() as conn:
            ctx = MigrationContext.configure(
                conn, opts={**configure_kwargs(), "target_metadata": Base.metadata}
            )
            script = produce_migrations(ctx, Base.metadata)
            op = Operations(ctx)
            for migrate_op in script.upgrade_ops.ops:
                for each in migrate_op.ops if isinstance(migrate_op, ModifyTableOps) else [migrate_op]:
                    op.invoke(each)
        with engine.connect() as conn:
            secured = set(conn.scalars(text(
                "SELECT relname FROM pg_class WHERE relrowsecurity AND relforcerowsecurity")))
            policies = set(conn.scalars(text("SELECT policyname FROM pg_policies")))
            ctx = MigrationContext.configure(
                conn, opts={**configure_kwargs(), "target_metadata": Base.metadata}
            )
            assert list(compare_metadata(ctx, Base.metadata)) == []
        tables = {"tv_contracts", "tv_contracts_history", "tv_leases", "tv_leases_history", "tv_tickets"}
        assert secured == tables
        assert policies == {f"{t}_tenant_{p}" for t in tables for p in ("isolation", "admin", "owner")} | {
            "audit_log_tenant_read", "audit_log_admin_read", "audit_log_write"}
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def seed_tickets(s: Session) -> Session:
    for tenant in (1, 2):
        with sa_patterns.tenant_scope(tenant):
            s.add(Ticket(id=tenant, title=f"ticket of {tenant}"))
            s.flush()
    s.execute(text("INSERT INTO audit_log (table_name, operation, primary_key, transaction_id) "
                   "VALUES ('public.shared', 'INSERT', '{}', 0)"))  # an entry of a table without tenants
    return s


def tenants_of(s: Session, query: object) -> list[str | None]:
    return [row.tenant_id for row in s.execute(query)]  # type: ignore[call-overload]


def test_audit_entries_of_a_tenant_model_follow_the_tenant_in_scope(session: Session) -> None:
    s = seed_tickets(session)

    def tenants(query: object) -> list[str | None]:
        return tenants_of(s, query)

    with sa_patterns.tenant_scope(1):
        assert tenants(audit_entries(Ticket)) == ["1"]
        mine = s.get(Ticket, 1)
        assert tenants(audit_entries(mine)) == ["1"]
        assert tenants(audit_entries(Ticket, primary_key=2)) == []  # tenant 2's row: not here
        assert tenants(audit_entries(metadata=Base.metadata)) == ["1", None]
    with sa_patterns.all_tenants():  # the helper's filter is lifted; RLS shows the app role no tenant's
        assert tenants(audit_entries(Ticket)) == []
        assert tenants(audit_entries(metadata=Base.metadata)) == [None]
    with pytest.raises(TenantRequired, match="tv_tickets"):
        audit_entries(Ticket)  # no tenant in scope: refused when the query is built
    s.info["tenant_id"] = 2
    assert tenants(audit_entries(Ticket, session=s)) == ["2"]


def test_audit_entries_of_every_tenant_for_the_admin_role(admin_session: Session) -> None:
    s = seed_tickets(admin_session)
    with sa_patterns.all_tenants():
        assert tenants_of(s, audit_entries(Ticket)) == ["1", "2"]
        assert tenants_of(s, audit_entries(metadata=Base.metadata)) == ["1", "2", None]
    with sa_patterns.tenant_scope(1):
        assert tenants_of(s, audit_entries(metadata=Base.metadata)) == ["1", None]
