"""Views over row-level-security tables: a plain view runs with its owner's rights and, owned
by a role row-level security does not stop, bypasses RLS; ``security_invoker`` (emitted by
default over RLS tables) applies the reader's.

The reader is the plugin's app role (NOSUPERUSER NOBYPASSRLS, owning nothing). The tenant
models are built by create_all as the owner role and seeded tenant by tenant as the app role;
the view that leaks is the superuser's (see its test)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, MetaData, String, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import sa_patterns
from sa_patterns.schema import Policy, RowLevelSecurity, quote, register
from sa_patterns.tenancy import TenantMixin
from sa_patterns.testing.logins import RunRoles
from sa_patterns.views import View


class Base(DeclarativeBase):
    metadata = MetaData()


class Doc(Base):
    __tablename__ = "sec_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(10))
    body: Mapped[str]


register(
    Base.metadata,
    RowLevelSecurity(None, "sec_docs"),
    Policy(None, "sec_docs", "sec_docs_tenant",
           using="tenant_id = NULLIF(current_setting('app.tenant_id', true), '')"),
)


class VisibleDocs(View, Base):
    """Over an RLS table: security_invoker is on without asking."""

    __tablename__ = "sec_visible_docs"
    __select__ = select(Doc.id, Doc.tenant_id)
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str]


class OwnerDocs(View, Base):
    """Explicitly off: reads with the view owner's rights."""

    __tablename__ = "sec_owner_docs"
    __security_invoker__ = False
    __select__ = select(Doc.id, Doc.tenant_id)
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str]


def test_security_invoker_applies_the_readers_policies(
    superuser_engine: Engine, engine: Engine, db_roles: RunRoles
) -> None:
    """Inherently about a view owned by a role row-level security never stops: the superuser
    builds these models (committed, dropped after) and seeds every tenant, so the view it owns
    without security_invoker reads past the policies. The reader is the plugin's app role
    (NOSUPERUSER NOBYPASSRLS) on its own connection."""
    with superuser_engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)
    try:
        with superuser_engine.begin() as conn:
            options = dict(conn.execute(text(
                "SELECT relname, array_to_string(reloptions, ',') FROM pg_class "
                "WHERE relname IN ('sec_visible_docs', 'sec_owner_docs') AND relnamespace = current_schema()::regnamespace"
            )).all())
            assert options == {"sec_visible_docs": "security_invoker=true", "sec_owner_docs": None}
            conn.execute(text(
                "INSERT INTO sec_docs (id, tenant_id, body) VALUES (1, 'a', 'x'), (2, 'a', 'y'), (3, 'b', 'z')"
            ))
            conn.execute(text(f"GRANT SELECT ON sec_docs, sec_visible_docs, sec_owner_docs TO {quote(db_roles.app)}"))
        with engine.connect() as connection:
            factory = sa_patterns.install(sessionmaker(bind=connection, join_transaction_mode="create_savepoint"))
            session = factory()
            with sa_patterns.tenant_scope("a"):
                assert session.scalar(select(func.count()).select_from(Doc)) == 2  # RLS on the table
                assert session.scalars(select(VisibleDocs.tenant_id)).all() == ["a", "a"]
                # the superuser's view ignores the reader's policies: every tenant's rows leak through
                assert sorted(session.scalars(select(OwnerDocs.tenant_id))) == ["a", "a", "b"]
            session.close()
            connection.rollback()
    finally:
        with superuser_engine.begin() as conn:
            sa_patterns.drop_all(conn, Base.metadata)


class TBase(DeclarativeBase):
    metadata = MetaData()


class Ticket(TenantMixin, TBase):
    __tablename__ = "sec_tickets"
    __rls__ = True
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]


class OpenTickets(View, TBase):
    """Declared over a TenantMixin(__rls__) model: security_invoker without asking."""

    __tablename__ = "sec_open_tickets"
    __select__ = select(Ticket.id, Ticket.tenant_id, Ticket.title)
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int]
    title: Mapped[str]


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return TBase.metadata  # Base is the superuser's, built by its test


def test_view_over_tenant_mixin_table_is_filtered_per_tenant(session: Session, sql, superuser_sql) -> None:  # type: ignore[no-untyped-def]
    assert OpenTickets.__view_entity__.security_invoker is True  # type: ignore[union-attr]
    options = superuser_sql("SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = 'sec_open_tickets'::regclass")
    assert options == [("security_invoker=true",)]
    for tenant, rows in ((1, "(1, 1, 'a')"), (2, "(2, 2, 'b'), (3, 2, 'c')")):
        with sa_patterns.tenant_scope(tenant):  # the tenant policy's WITH CHECK: each its own
            sql(f"INSERT INTO sec_tickets (id, tenant_id, title) VALUES {rows}")
    assert superuser_sql("SELECT count(*) FROM sec_tickets") == [(3,)]
    with sa_patterns.tenant_scope(2):
        assert sorted(session.scalars(select(OpenTickets.title))) == ["b", "c"]
    with sa_patterns.tenant_scope(1):
        session.commit()  # a new (savepoint) transaction picks up the new tenant
        assert session.scalars(select(OpenTickets.title)).all() == ["a"]
