"""The request context reaches PostgreSQL once per transaction, and never outlives it."""

from __future__ import annotations

from sqlalchemy import text

import sa_patterns

from ..runner import DemoContext

TITLE = "Context: tenant and actor, transaction-local in PostgreSQL"


def run(ctx: DemoContext) -> None:
    probe = text(
        "SELECT current_setting('app.tenant_id', true), current_setting('app.actor_id', true)"
    )
    with sa_patterns.tenant_scope(42), sa_patterns.actor_scope("alice"), ctx.Session() as s:
        tenant, actor = s.execute(probe).one()
        ctx.show("inside tenant_scope(42), actor_scope('alice')", f"tenant={tenant!r} actor={actor!r}")
        s.commit()
        ctx.check(tenant == "42" and actor == "alice", "set_config reached PostgreSQL")
    with ctx.engine.connect() as conn:
        tenant, actor = conn.execute(probe).one()
    ctx.show("next transaction on a pooled connection", f"tenant={tenant!r} actor={actor!r}")
    ctx.check(not tenant and not actor, "nothing leaked into the next transaction")
