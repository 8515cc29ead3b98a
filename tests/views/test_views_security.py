"""Views over row-level-security tables: a plain view runs with its owner's rights and
bypasses RLS; ``security_invoker`` (emitted by default over RLS tables) applies the reader's."""

from __future__ import annotations

from sqlalchemy import Connection, MetaData, String, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sa_patterns
from sa_patterns.schema import Policy, RowLevelSecurity, register
from sa_patterns.tenancy import TenantMixin
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


def test_security_invoker_applies_the_readers_policies(connection: Connection, session: Session) -> None:
    sa_patterns.create_all(connection, Base.metadata)
    options = dict(connection.execute(text(
        "SELECT relname, array_to_string(reloptions, ',') FROM pg_class "
        "WHERE relname IN ('sec_visible_docs', 'sec_owner_docs') AND relnamespace = current_schema()::regnamespace"
    )).all())
    assert options == {"sec_visible_docs": "security_invoker=true", "sec_owner_docs": None}
    connection.execute(text(
        "INSERT INTO sec_docs (id, tenant_id, body) VALUES (1, 'a', 'x'), (2, 'a', 'y'), (3, 'b', 'z')"
    ))
    # an application role (not the superuser owner, who bypasses RLS); rolled back with the test
    connection.execute(text("CREATE ROLE sap_views_app NOLOGIN"))
    connection.execute(text("GRANT USAGE ON SCHEMA " + connection.execute(text("SELECT quote_ident(current_schema())")).scalar_one() + " TO sap_views_app"))
    connection.execute(text("GRANT SELECT ON sec_docs, sec_visible_docs, sec_owner_docs TO sap_views_app"))
    connection.execute(text("SET LOCAL ROLE sap_views_app"))
    with sa_patterns.tenant_scope("a"):
        assert session.scalar(select(func.count()).select_from(Doc)) == 2  # RLS on the table
        assert session.scalars(select(VisibleDocs.tenant_id)).all() == ["a", "a"]
        # the owner's view ignores the reader's policies: every tenant's rows leak through
        assert sorted(session.scalars(select(OwnerDocs.tenant_id))) == ["a", "a", "b"]
    connection.execute(text("RESET ROLE"))


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


def test_view_over_tenant_mixin_table_is_filtered_per_tenant(connection: Connection, session: Session) -> None:
    assert OpenTickets.__view_entity__.security_invoker is True  # type: ignore[union-attr]
    sa_patterns.create_all(connection, TBase.metadata)
    connection.execute(text("INSERT INTO sec_tickets (id, tenant_id, title) VALUES (1, 1, 'a'), (2, 2, 'b'), (3, 2, 'c')"))
    connection.execute(text("CREATE ROLE sap_views_tenant_app NOLOGIN"))
    schema = connection.execute(text("SELECT quote_ident(current_schema())")).scalar_one()
    connection.execute(text(f"GRANT USAGE ON SCHEMA {schema} TO sap_views_tenant_app"))
    connection.execute(text("GRANT SELECT ON sec_tickets, sec_open_tickets TO sap_views_tenant_app"))
    connection.execute(text("SET LOCAL ROLE sap_views_tenant_app"))
    with sa_patterns.tenant_scope(2):
        assert sorted(session.scalars(select(OpenTickets.title))) == ["b", "c"]
    with sa_patterns.tenant_scope(1):
        session.commit()  # a new (savepoint) transaction picks up the new tenant
        assert session.scalars(select(OpenTickets.title)).all() == ["a"]
    connection.execute(text("RESET ROLE"))
