"""Everyday helpers: batch upserts, keyset pagination, integrity errors, retried transactions,
the N+1 guard, query logging and typed JSON, on the demo's migrated tables."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, selectinload

from ...errors import ConflictError, InvalidCursor, NPlusOneDetected
from ...integrity import translate
from ...nplusone import nplusone_guard
from ...pagination import paginate
from ...querylog import log_queries
from ...transactions import transaction
from ...upsert import insert_many
from ..models.helpers import CustomerPrefs, HelperCustomer, HelperOrder
from ..runner import DemoContext

TITLE = "Everyday helpers: upserts, keyset pages, integrity errors, retries, N+1, typed JSON"

KEY = "demo-cursor-key"  # production: SA_PATTERNS_CURSOR_KEY


def _batch(ctx: DemoContext) -> None:
    start = dt.datetime(2025, 1, 1)
    with ctx.Session.begin() as s:
        customers = insert_many(s, HelperCustomer, [
            {"email": f"c{i}@example.com", "name": f"Customer {i}", "prefs": CustomerPrefs()}
            for i in range(50)
        ])
        insert_many(s, HelperOrder, [
            {"customer_id": customers[i % 50].id, "total_cents": 100 + i,
             "created_at": start + dt.timedelta(minutes=i // 3)}
            for i in range(5000)
        ], returning=False)
        feed = [{"email": "c1@example.com", "name": "Renamed"},
                {"email": "new@example.com", "name": "Newcomer"}]
        upserted = insert_many(s, HelperCustomer, feed, on_conflict="update", conflict=["email"])
        ctx.show("insert_many", "50 customers + 5,000 orders in chunked INSERT … RETURNING")
        ctx.show("upsert by email", [(c.email, c.name) for c in upserted])
    with ctx.engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM helper_customers")).scalar()
        renamed = conn.execute(text("SELECT name FROM helper_customers WHERE email = 'c1@example.com'")).scalar()
    ctx.check(n == 51 and renamed == "Renamed", "ON CONFLICT (email) DO UPDATE: 1 updated, 1 inserted")


def _pages(ctx: DemoContext) -> None:
    order: list[Any] = [HelperOrder.created_at.desc(), HelperOrder.id.desc()]
    with ctx.Session() as s:
        page = paginate(s, select(HelperOrder), order_by=order, limit=500, key=KEY)
        seen, pages = [o.id for o in page.items], 1
        cursor = page.next_cursor
        ctx.show("first cursor", f"{(cursor or '')[:48]}…")
        while page.has_more:
            page = paginate(s, select(HelperOrder), order_by=order, after=page.next_cursor,
                            limit=500, key=KEY)
            seen += [o.id for o in page.items]
            pages += 1
        expected = s.scalars(select(HelperOrder.id).order_by(*order)).all()
        ctx.show("pages of 500", pages)
        ctx.check(seen == list(expected), "keyset pages return every order once, in order")
        assert cursor is not None
        forged = cursor[:-4] + ("AAAA" if not cursor.endswith("AAAA") else "BBBB")
        try:
            paginate(s, select(HelperOrder), order_by=order, after=forged, key=KEY)
            refused = False
        except InvalidCursor as exc:
            refused = True
            ctx.show("forged cursor", str(exc)[:90] + "…")
        ctx.check(refused, "a tampered cursor is refused before any SQL runs")
        plan = "\n".join(r[0] for r in s.execute(text(
            "EXPLAIN SELECT * FROM helper_orders WHERE (created_at, id) < ('2025-01-01 10:00', 1000) "
            "ORDER BY created_at DESC, id DESC LIMIT 501")))
        ctx.check("helper_orders_created_id" in plan, "the keyset condition is an index scan")


def _integrity(ctx: DemoContext) -> None:
    with ctx.Session() as s:
        try:
            with translate(s):
                s.add(HelperCustomer(email="c2@example.com", name="Duplicate"))
                s.flush()
            err = None
        except ConflictError as exc:
            s.rollback()
            err = exc
        ctx.show("duplicate e-mail", err)
        ctx.check(err is not None and err.columns == ("email",)
                  and err.constraint == "helper_customers_email_key",
                  "unique violation → ConflictError with constraint and columns (by SQLSTATE 23505)")


def _retry(ctx: DemoContext) -> None:
    runs: list[int] = []

    @transaction(ctx.Session, isolation_level="SERIALIZABLE", retries=3, base_delay=0.001)
    def bump(session: Session) -> int:
        runs.append(1)
        total = session.scalar(select(HelperOrder.total_cents).where(HelperOrder.id == 1))
        assert total is not None
        if len(runs) == 1:  # another request commits in between
            with ctx.engine.begin() as other:
                other.execute(text("UPDATE helper_orders SET total_cents = total_cents + 1000 WHERE id = 1"))
        session.execute(text("UPDATE helper_orders SET total_cents = :t WHERE id = 1"), {"t": total + 1})
        return total + 1

    result = bump()
    ctx.show("transaction runs", f"{len(runs)} (first aborted with SQLSTATE 40001)")
    ctx.check(len(runs) == 2 and result == 100 + 1000 + 1,
              "serialization failure re-ran the whole unit; the concurrent write was kept")


def _nplusone(ctx: DemoContext) -> None:
    with ctx.Session() as s:
        try:
            with nplusone_guard(s):
                for customer in s.scalars(select(HelperCustomer).limit(10)):
                    len(customer.orders)
            caught = None
        except NPlusOneDetected as exc:
            caught = exc
        ctx.show("N+1 guard", str(caught)[:100] + "…")
        ctx.check(caught is not None and "HelperCustomer.orders" in str(caught),
                  "lazy loads in a loop are caught and the relationship named")
        with nplusone_guard(s, max_statements=2) as counter:
            s.scalars(select(HelperCustomer).options(selectinload(HelperCustomer.orders))).all()
        ctx.check(counter.count == 2, "selectinload: 2 statements for all customers and orders")


def _querylog(ctx: DemoContext) -> None:
    logging.getLogger("sa_patterns.queries").setLevel(logging.ERROR)  # keep the demo output quiet
    with log_queries(ctx.engine, slow_ms=0, explain=True) as log, ctx.Session() as s:
        s.execute(select(func.sum(HelperOrder.total_cents)).where(HelperOrder.customer_id == 3))
    lines = log.report(top=1).splitlines()
    ctx.show("slow-query report", "\n    " + "\n    ".join(lines[:5]))
    ctx.check(any("actual time" in line for line in lines), "EXPLAIN (ANALYZE, BUFFERS) captured")


def _typed_json(ctx: DemoContext) -> None:
    with ctx.Session.begin() as s:
        customer = s.scalars(select(HelperCustomer).where(HelperCustomer.email == "c5@example.com")).one()
        assert customer.prefs is not None
        customer.prefs.tags.append("vip")  # in place: no assignment
        customer.prefs.newsletter = True
    with ctx.engine.connect() as conn:
        doc = conn.execute(text("SELECT prefs FROM helper_customers WHERE email = 'c5@example.com'")).scalar()
    ctx.show("prefs jsonb", doc)
    ctx.check(doc == {"newsletter": True, "language": "en", "tags": ["vip"]},
              "TypedJSON: in-place changes to the dataclass were saved as jsonb")


def run(ctx: DemoContext) -> None:
    _batch(ctx)
    _pages(ctx)
    _integrity(ctx)
    _retry(ctx)
    _nplusone(ctx)
    _querylog(ctx)
    _typed_json(ctx)
