"""Audit log and history tables written by PostgreSQL triggers."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, text, update

import sa_patterns
from sa_patterns import as_of, audit_entries, history, revert

from ..models.audit import AuInvoice
from ..runner import DemoContext

TITLE = "Audit log and history: statement-level triggers record ORM, bulk and raw SQL writes"


def run(ctx: DemoContext) -> None:
    with sa_patterns.actor_scope("alice", request_id="req-1"), ctx.Session.begin() as s:
        s.add_all(
            AuInvoice(id=i, customer=f"customer {i}", amount=100 * i, internal_note="vip")
            for i in (1, 2, 3)
        )
    with sa_patterns.actor_scope("bob"), ctx.Session.begin() as s:
        invoice = s.get(AuInvoice, 1)
        assert invoice is not None
        invoice.amount = 150  # ORM unit of work
        s.execute(update(AuInvoice).where(AuInvoice.id > 1).values(amount=AuInvoice.amount + 5))
        s.execute(text("UPDATE au_invoices SET customer = customer"))  # changes nothing
        s.get(AuInvoice, 3).soft_delete()  # type: ignore[union-attr]
    with ctx.engine.begin() as conn:  # raw SQL, outside any actor_scope
        conn.execute(text("UPDATE au_invoices SET deleted_at = NULL, deleted_by = NULL, "
                          "delete_batch = NULL WHERE id = 3"))
    with ctx.Session() as s:  # rolled back: leaves nothing
        s.execute(text("DELETE FROM au_invoices"))
        s.rollback()

    with ctx.Session() as s:
        entries = s.execute(audit_entries(AuInvoice)).all()
        for e in entries:
            ctx.show(
                f"#{e.id} {e.operation:<11} {e.primary_key}",
                f"actor={e.actor_id} old={e.old_row if e.operation != 'INSERT' else '…'} "
                f"new={e.new_row if e.operation != 'INSERT' else '…'}",
            )
        ops = [e.operation for e in entries]
        ctx.check(ops == ["INSERT"] * 3 + ["UPDATE"] * 3 + ["SOFT_DELETE", "RESTORE"],
                  "ORM, bulk and raw SQL writes each logged once per changed row; the no-op UPDATE and the rollback left nothing")
        ctx.check(entries[3].old_row == {"amount": 100} and entries[3].changed_columns == ["amount"],
                  "an update logs only the changed columns")
        ctx.check(all("internal_note" not in (e.new_row or {}) for e in entries),
                  "__audit_exclude__ columns never reach the log")
        ctx.check((entries[0].actor_id, entries[0].request, entries[3].actor_id, entries[-1].actor_id)
                  == ("alice", {"request_id": "req-1"}, "bob", None),
                  "actor and request come from actor_scope(); raw SQL without one logs NULL")

        invoice = s.get(AuInvoice, 1)
        assert invoice is not None
        versions = history(s, invoice)
        ctx.show("history(invoice 1)", [(v.version, v.values["amount"], v.is_current) for v in versions])
        before_bob = versions[1].valid_from - timedelta(microseconds=1)
        then = as_of(AuInvoice, before_bob)
        old_total = s.scalar(select(func.sum(then.c.amount)))
        now_total = s.scalar(select(func.sum(AuInvoice.amount)))
        ctx.show("sum(amount) as_of just before bob's changes / now", f"{old_total} / {now_total}")
        ctx.check(old_total == 600, "as_of() shows the table as it was")
        revert(s, invoice, 1)
        s.commit()
        ctx.check([v.values["amount"] for v in history(s, invoice)] == [100, 150, 100],
                  "revert() is a new, audited version")

    with ctx.engine.connect() as conn:
        try:
            conn.execute(text("DELETE FROM audit_log"))
            refused = False
        except Exception as exc:  # the append-only guard
            refused = "append-only" in str(exc)
            ctx.show("DELETE FROM audit_log", str(exc).splitlines()[0])
    ctx.check(refused, "the audit log is append-only")
