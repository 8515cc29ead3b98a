"""Tenancy, row-level security, audit actors and soft delete through PgBouncer in transaction
mode, as a NOBYPASSRLS application role, with more concurrent clients than server connections:
zero rows of another tenant seen or written, zero audit rows with the wrong actor."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import APP_ROLE
from sqlalchemy import URL, Engine, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import sa_patterns
from sa_patterns import Audited, SoftDeleteMixin, TenantMixin


class Base(DeclarativeBase):
    pass


class Note(SoftDeleteMixin, TenantMixin, Audited, Base):
    __tablename__ = "pooled_notes"
    __rls__ = True
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]


TENANTS = 12
ROUNDS = 12


@pytest.fixture(scope="module")
def app_engine(pg_url: URL, pgbouncer_url: URL, db_schema: str) -> Iterator[Engine]:
    owner = create_engine(pg_url.update_query_dict({"options": f"-csearch_path={db_schema},public"}))
    with owner.begin() as conn:
        conn.execute(text(
            f"DO $$ BEGIN CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        ))
        sa_patterns.create_all(conn, Base.metadata)
        for grant in (
            f"GRANT USAGE ON SCHEMA {db_schema} TO {APP_ROLE}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {db_schema} TO {APP_ROLE}",
            f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {db_schema} TO {APP_ROLE}",
            # PgBouncer forwards no startup options: the search path comes from the role
            f"ALTER ROLE {APP_ROLE} IN DATABASE {pg_url.database} SET search_path = {db_schema}, public",
        ):
            conn.execute(text(grant))
    engine = create_engine(
        pgbouncer_url.set(username=APP_ROLE), pool_size=TENANTS, max_overflow=0,
        connect_args={"prepare_threshold": None},
    )
    yield engine
    engine.dispose()
    with owner.begin() as conn:
        conn.execute(text(f"ALTER ROLE {APP_ROLE} IN DATABASE {pg_url.database} RESET search_path"))
        conn.execute(text(f"DROP OWNED BY {APP_ROLE}"))
    owner.dispose()


def test_tenants_actors_and_soft_delete_hold_through_the_pooler(app_engine: Engine, pg_url: URL, db_schema: str) -> None:
    factory = sa_patterns.install(sessionmaker(app_engine))
    wrong: list[object] = []

    def client(tenant: int) -> None:
        for i in range(ROUNDS):
            with sa_patterns.tenant_scope(tenant), sa_patterns.actor_scope(f"user-{tenant}"):
                with factory.begin() as s:
                    s.add(Note(id=tenant * 1000 + i, body=f"t{tenant} #{i}"))
                with factory.begin() as s:
                    mine = s.scalars(select(Note)).all()
                    if any(n.tenant_id != tenant for n in mine) or len(mine) != i + 1 - (i // 2):
                        wrong.append(("orm", tenant, i, [(n.id, n.tenant_id) for n in mine]))
                    # raw SQL: only row-level security stands between tenants here
                    raw = s.execute(text("SELECT DISTINCT tenant_id FROM pooled_notes")).scalars().all()
                    if raw not in ([tenant], []):
                        wrong.append(("rls", tenant, i, raw))
                    if i % 2 == 1:  # soft-delete every other note: it must vanish at once
                        s.delete(s.get(Note, tenant * 1000 + i))
                        s.flush()
                        if s.get(Note, tenant * 1000 + i) is not None:
                            wrong.append(("soft", tenant, i))
            with factory.begin() as s:  # no scope: fail closed in the ORM, nothing via RLS
                if s.execute(text("SELECT count(*) FROM pooled_notes")).scalar() != 0:
                    wrong.append(("unscoped", tenant, i))

    with ThreadPoolExecutor(TENANTS) as pool:
        list(pool.map(client, range(1, TENANTS + 1)))
    assert wrong == []

    owner = create_engine(pg_url.update_query_dict({"options": f"-csearch_path={db_schema},public"}))
    with owner.connect() as conn:
        rows = conn.execute(text("SELECT tenant_id, count(*), count(deleted_at) FROM pooled_notes GROUP BY 1 ORDER BY 1")).all()
        assert rows == [(t, ROUNDS, ROUNDS // 2) for t in range(1, TENANTS + 1)]
        assert conn.execute(text("SELECT count(*) FROM pooled_notes WHERE id / 1000 <> tenant_id")).scalar() == 0
        audit = conn.execute(
            text(
                "SELECT operation, count(*), count(*) FILTER (WHERE actor_id IS DISTINCT FROM 'user-' || tenant_id) "
                "FROM audit_log WHERE table_name LIKE '%pooled_notes' GROUP BY 1 ORDER BY 1"
            )
        ).all()
    owner.dispose()
    expected = {"INSERT": TENANTS * ROUNDS, "SOFT_DELETE": TENANTS * (ROUNDS // 2)}
    assert {op: n for op, n, _ in audit} == expected
    assert all(bad == 0 for _, _, bad in audit), f"audit rows with the wrong actor: {audit}"
