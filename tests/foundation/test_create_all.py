"""``sa_patterns.create_all()`` behaves like ``metadata.create_all()``: a second call is a no-op
(it used to fail with ``DuplicateObject`` on a trigger), and a call on a partly built schema puts
back what is missing. Built from the demo's models, which use every pattern."""

from __future__ import annotations

from sqlalchemy import Connection, create_engine, text

import sa_patterns
from sa_patterns.database import Server, scratch_database
from sa_patterns.demo.models import Base

OBJECTS = """
SELECT 'trigger', tgrelid::regclass::text || '.' || tgname FROM pg_trigger WHERE NOT tgisinternal
UNION ALL SELECT 'policy', tablename || '.' || policyname FROM pg_policies WHERE schemaname = 'public'
UNION ALL SELECT 'function', p.oid::regprocedure::text FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'
UNION ALL SELECT 'relation', relname FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'
ORDER BY 1, 2
"""


def objects(conn: Connection) -> list[tuple[str, str]]:
    return [(kind, name) for kind, name in conn.execute(text(OBJECTS))]


def test_create_all_twice_is_a_no_op_and_completes_a_partial_schema(pg_server: Server) -> None:
    with scratch_database(pg_server.url, prefix="sap_create_all") as url:
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                sa_patterns.create_all(conn, Base.metadata)
                first = objects(conn)
            assert ("trigger", "au_invoices.au_invoices_audit_ins") in first
            with engine.begin() as conn:
                sa_patterns.create_all(conn, Base.metadata)  # DuplicateObject before the fix
                assert objects(conn) == first
                conn.execute(text("DROP TRIGGER au_invoices_audit_ins ON au_invoices"))
                conn.execute(text("DROP POLICY tn_workspaces_tenant_isolation ON tn_workspaces"))
            with engine.begin() as conn:
                sa_patterns.create_all(conn, Base.metadata)
                assert objects(conn) == first
        finally:
            engine.dispose()
