"""Tenancy: the ORM filters every statement to the tenant in scope, fails closed without one,
and row-level security filters raw SQL for a role that cannot bypass it."""

from __future__ import annotations

import os

from sqlalchemy import func, join, select, text
from sqlalchemy.exc import IntegrityError, InvalidRequestError
from sqlalchemy.orm import joinedload, sessionmaker

import sa_patterns

from ...schema import quote
from ...testing.rls import rls_problems
from ..models.tenancy import TnBoard, TnWorkspace
from ..runner import DemoContext

TITLE = "Tenancy: scoped ORM, fail closed, row-level security as the second wall"


def run(ctx: DemoContext) -> None:
    for tenant_id, workspaces in ((1, ("acme-hq", "acme-lab")), (2, ("globex",))):
        with sa_patterns.tenant_scope(tenant_id), ctx.Session.begin() as s:
            for name in workspaces:
                s.add(TnWorkspace(name=name, boards=[TnBoard(title=f"{name} roadmap")]))

    with sa_patterns.tenant_scope(1), ctx.Session() as s:
        names = list(s.scalars(select(TnWorkspace.name).order_by(TnWorkspace.id)))
        boards = s.scalar(select(func.count()).select_from(TnBoard))
        globex_id = s.scalar(
            select(TnWorkspace.id).where(TnWorkspace.name == "globex")
            .execution_options(all_tenants=True))
        other = s.get(TnWorkspace, globex_id)
    ctx.show("tenant 1 sees workspaces", names)
    ctx.check(names == ["acme-hq", "acme-lab"] and boards == 2, "ORM reads are scoped to tenant 1")
    ctx.check(other is None, "session.get() of tenant 2's workspace returns None under tenant 1")

    # Paths SQLAlchemy's loader criteria do not reach on their own: eager joins, refreshes of
    # objects loaded under another tenant, and tables inside an explicit join.
    with ctx.Session() as s:
        with sa_patterns.tenant_scope(2):
            theirs = s.get(TnWorkspace, globex_id)
        with sa_patterns.tenant_scope(1):
            eager = s.scalars(select(TnWorkspace).options(joinedload(TnWorkspace.boards))).unique().all()
            counted = s.scalar(select(func.count()).select_from(
                join(TnWorkspace, TnBoard, TnWorkspace.id == TnBoard.workspace_id)))
            try:
                s.refresh(theirs)
                refreshed = True
            except InvalidRequestError:
                refreshed = False
    ctx.show("tenant 1: joinedload, count over join(), refresh of tenant 2's object",
             [sorted(b.title for w in eager for b in w.boards), counted, refreshed])
    ctx.check(counted == 2 and len(eager) == 2 and not refreshed,
              "joined eager loads, explicit joins and refreshes are scoped to the tenant in force")

    with sa_patterns.tenant_scope(1), ctx.Session() as s:
        then = sa_patterns.as_of(TnBoard, s.scalar(text("SELECT clock_timestamp()")))
        past = list(s.scalars(select(then.c.title).order_by(then.c.id)))
    ctx.show("as_of(TnBoard, now) under tenant 1", past)
    ctx.check(past == ["acme-hq roadmap", "acme-lab roadmap"],
              "a Versioned tenant model's history is scoped too: as_of() shows tenant 1's boards only")

    try:
        with ctx.Session() as s:
            s.scalars(select(TnWorkspace)).all()
        failed_closed = False
    except sa_patterns.TenantRequired as exc:
        failed_closed = True
        ctx.show("no tenant in scope", str(exc).split(".")[0])
    ctx.check(failed_closed, "a query with no tenant raises TenantRequired")

    try:
        with sa_patterns.tenant_scope(1), ctx.Session.begin() as s:
            s.add(TnWorkspace(name="sneaky", tenant_id=2))
        violated = False
    except sa_patterns.TenantViolation:
        violated = True
    ctx.check(violated, "an INSERT for another tenant raises TenantViolation")

    try:
        with sa_patterns.tenant_scope(1), ctx.Session.begin() as s:
            s.add(TnBoard(workspace_id=globex_id, title="cross-tenant link"))
        linked = True
    except IntegrityError:
        linked = False
    ctx.check(not linked, "the composite (tenant_id, id) foreign key refuses a cross-tenant link")

    # The demo connects as a superuser, which RLS never applies to: show the second wall with a
    # throw-away NOSUPERUSER NOBYPASSRLS role for one transaction (SET LOCAL ROLE).
    role = f"sap_demo_tenancy_{os.getpid()}"
    with ctx.engine.begin() as conn:
        if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first() is None:
            conn.execute(text(f"CREATE ROLE {quote(role)} NOLOGIN NOSUPERUSER NOBYPASSRLS"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA {quote(conn.scalar(text('SELECT current_schema()')))} TO {quote(role)}"))
        conn.execute(text(f"GRANT SELECT ON tn_workspaces, tn_boards_history TO {quote(role)}"))
        problems = rls_problems(conn, TnWorkspace.metadata, role=role)
    try:
        seen: dict[str, list[str]] = {}
        versions: dict[str, int] = {}
        for tenant in ("1", "2", ""):
            with ctx.engine.begin() as conn:
                conn.execute(text(f"SET LOCAL ROLE {quote(role)}"))
                conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": tenant})
                seen[tenant or "none"] = list(conn.scalars(
                    text("SELECT name FROM tn_workspaces ORDER BY id")))
                versions[tenant or "none"] = conn.scalar(text("SELECT count(*) FROM tn_boards_history"))
    finally:
        with ctx.engine.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {quote(role)}"))
            conn.execute(text(f"DROP ROLE IF EXISTS {quote(role)}"))
    ctx.show("raw SQL as the app role, per app.tenant_id", seen)
    ctx.check(seen == {"1": ["acme-hq", "acme-lab"], "2": ["globex"], "none": []},
              "RLS filters raw SQL; no tenant set means no rows")
    ctx.show("board versions visible to raw SQL as the app role", versions)
    ctx.check(versions == {"1": 2, "2": 1, "none": 0},
              "the history table has the same row-level security as the boards")
    ctx.show("rls_problems() for the app role on the demo's tenant tables", problems or "none")
    ctx.check(problems == [], "RLS is enabled, FORCEd and has a policy on every tenant table")

    # The demo itself connects as the server's superuser, which skips every policy: a production
    # install(wall="strict") refuses exactly that connection, naming the fix.
    refused = ""
    try:
        strict = sa_patterns.install(sessionmaker(ctx.engine), wall="strict")
        with strict() as s:
            s.execute(text("SELECT 1"))
    except sa_patterns.DatabaseWallDown as exc:
        refused = str(exc).split(":", 2)[1].strip()
    ctx.show("install(wall='strict') on the demo's superuser connection", refused or "accepted")
    ctx.check(bool(refused), "install(wall='strict') refuses a connection that skips row-level security")
