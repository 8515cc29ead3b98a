"""Production roles end to end: a DBA creates the roles once, the owner runs the migrations, the
application works as the app role under the database wall, an operator reads across tenants."""

import uuid

from sqlalchemy import URL, ForeignKey, create_engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

import sa_patterns
from sa_patterns import Audited, DatabaseWallDown, MissingGrant, TenantMixin
from sa_patterns.cli.roles import role_statements
from sa_patterns.roles import RoleNames, use_roles
from sa_patterns.schema import quote


class Base(DeclarativeBase):
    pass


class Account(TenantMixin, Audited, Base):  # RLS is on by default: no option to remember
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Invoice(TenantMixin, Base):
    __tablename__ = "invoices"
    id: Mapped[int] = mapped_column(primary_key=True)
    # a plain foreign key: the toolkit adds FOREIGN KEY (tenant_id, account_id) beside it
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    total: Mapped[int]
    account: Mapped[Account] = relationship()


def main(url: URL) -> None:
    # The example shares its server with others: role names of its own (a deployment sets
    # SA_PATTERNS_OWNER_ROLE / _APP_ROLE / _ADMIN_ROLE, or keeps app_owner, app_user, app_admin).
    suffix = uuid.uuid4().hex[:8]
    roles = RoleNames(owner=f"ex_owner_{suffix}", app=f"ex_app_{suffix}", admin=f"ex_admin_{suffix}")
    superuser = create_engine(url)
    owner = create_engine(url.set(username=roles.owner))
    app = create_engine(url.set(username=roles.app))
    admin = create_engine(url.set(username=roles.admin))
    try:
        with use_roles(roles):
            # 1. Once, as a superuser: what `sa-patterns roles --url <superuser URL>` runs.
            with superuser.begin() as conn:
                for statement in role_statements(roles, "public", url.database):
                    conn.execute(text(statement))
            # 2. The migrations, as the owner: `alembic upgrade head` runs the same statements
            #    (tables, triggers, RLS and policies, composite keys, grants).
            with owner.begin() as conn:
                sa_patterns.create_all(conn, Base.metadata)
        work(app, admin, owner, superuser)
    finally:
        for engine in (owner, app, admin):
            engine.dispose()
        with superuser.begin() as conn:
            conn.execute(text(f"ALTER SCHEMA public OWNER TO {quote(url.username or 'postgres')}"))
            for role in (roles.app, roles.admin, roles.owner):
                conn.execute(text(f"DROP OWNED BY {quote(role)}; DROP ROLE {quote(role)}"))
        superuser.dispose()


def work(app, admin, owner, superuser) -> None:  # type: ignore[no-untyped-def]
    # 3. The application connects as the app role; strict: a role that skips RLS is refused.
    Session = sa_patterns.install(sessionmaker(app), wall="strict")
    for tenant, name in ((1, "Acme"), (2, "Globex")):
        with sa_patterns.tenant_scope(tenant), Session.begin() as s:
            s.add(Invoice(account=Account(name=name), total=100 * tenant))

    with sa_patterns.tenant_scope(1), Session() as s:
        # the ORM filter, and under it the database: raw SQL sees tenant 1's rows only
        assert [i.total for i in s.scalars(select(Invoice))] == [100]
        assert s.scalars(text("SELECT name FROM accounts")).all() == ["Acme"]
        # the audit log: tenant 1's entries only, and the app role may not erase them
        assert set(s.scalars(text("SELECT tenant_id FROM audit_log"))) == {"1"}
        try:
            s.execute(text("DELETE FROM audit_log"))
            raise AssertionError("unreachable")
        except MissingGrant:  # names the GRANT it lacks (and the log is append-only anyway)
            s.rollback()

    # A reference across tenants is refused by the database itself (as the superuser here,
    # who skips RLS: the composite key still holds).
    with superuser.connect() as conn:
        try:
            conn.execute(text("INSERT INTO invoices (tenant_id, account_id, total) "
                              "SELECT 2, id, 0 FROM accounts WHERE name = 'Acme'"))
            raise AssertionError("unreachable")
        except IntegrityError:
            conn.rollback()

    # install() refuses a connection on which the database wall is down.
    try:
        with sa_patterns.install(sessionmaker(superuser), wall="strict")() as s:
            s.execute(text("SELECT 1"))
        raise AssertionError("unreachable")
    except DatabaseWallDown:
        pass

    # 4. An operator logs in as the admin role: every tenant, inside all_tenants() only.
    Admin = sa_patterns.install(sessionmaker(admin), wall="strict")
    with sa_patterns.all_tenants(), Admin() as s:
        assert sorted(a.name for a in s.scalars(select(Account))) == ["Acme", "Globex"]

    # 5. A backfill in a migration: as the owner, with app.all_tenants on for its transaction.
    with owner.begin() as conn:
        conn.execute(text("SELECT set_config('app.all_tenants', 'on', true)"))
        assert conn.execute(text("UPDATE invoices SET total = total + 1")).rowcount == 2
