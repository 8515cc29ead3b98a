"""Views and materialized views: models over a select(), migrated, refreshed in order."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

from rich.markup import escape
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import selectinload

import sa_patterns

from ...errors import ReadOnlyError
from ..models.views import (
    ViewsCustomer,
    ViewsCustomerTotals,
    ViewsDailySales,
    ViewsMonthlySales,
    ViewsOrder,
)
from ..runner import DemoContext

TITLE = "Views and materialized views: ORM models over a select(), refreshed in pg_depend order"


def run(ctx: DemoContext) -> None:
    with ctx.engine.connect() as conn:
        kinds: dict[str, str] = {name: kind for name, kind in conn.execute(text(
            "SELECT relname, relkind FROM pg_class WHERE relname IN "
            "('views_customer_totals', 'views_daily_sales', 'views_monthly_sales')"
        ))}
        viewdef = conn.execute(text("SELECT pg_get_viewdef('views_customer_totals'::regclass, true)")).scalar_one()
    ctx.show("created by the migration (relkind)", kinds)
    ctx.check(
        kinds == {"views_customer_totals": "v", "views_daily_sales": "m", "views_monthly_sales": "m"},
        "autogenerate created one view and two materialized views, not tables",
    )
    ctx.show("pg_get_viewdef (what autogenerate compares)", " ".join(viewdef.split()))

    day = dt.date(2026, 3, 1)
    with ctx.Session.begin() as s:
        s.add_all([ViewsCustomer(id=1, name="ada"), ViewsCustomer(id=2, name="bob")])
        s.flush()
        s.add_all([
            ViewsOrder(customer_id=1, amount=Decimal("120.00"), placed_on=day),
            ViewsOrder(customer_id=1, amount=Decimal("30.00"), placed_on=day + dt.timedelta(days=1)),
            ViewsOrder(customer_id=2, amount=Decimal("15.50"), placed_on=day + dt.timedelta(days=1)),
        ])
    with ctx.Session() as s:
        customers = s.scalars(select(ViewsCustomer).options(selectinload(ViewsCustomer.totals)).order_by(ViewsCustomer.id)).all()
        shown = {c.name: (c.totals.orders, str(c.totals.total)) for c in customers if c.totals}
        ctx.show("Customer.totals (relationship to the view)", shown)
        ctx.check(shown == {"ada": (2, "150.00"), "bob": (1, "15.50")}, "the view is queried and joined like a model")
        stale = s.scalars(select(ViewsDailySales)).all()
        ctx.check(stale == [], "the materialized views hold nothing until refreshed")
        try:
            s.add(ViewsCustomerTotals(customer_id=2, orders=0, total=Decimal(0)))
            s.flush()
            ctx.check(False, "writing to a view is refused")
        except ReadOnlyError as exc:
            ctx.show("session.add(ViewsCustomerTotals(...)); flush()", escape(f"ReadOnlyError: {exc}"))
            ctx.check(True, "ORM writes to a view are refused with a clear error")
            s.rollback()

    with ctx.Session.begin() as s:
        order = sa_patterns.refresh_all(s, concurrently=True)
    ctx.show("refresh_all(concurrently=True)", order)
    ctx.check(
        [n.rsplit(".", 1)[-1] for n in order if n.rsplit(".", 1)[-1].startswith("views_")]
        == ["views_daily_sales", "views_monthly_sales"],
        "refreshed daily before monthly: the order comes from pg_depend",
    )
    with ctx.Session() as s:
        monthly = s.scalars(select(ViewsMonthlySales.revenue)).all()
    ctx.show("monthly revenue after one refresh_all", [str(m) for m in monthly])
    ctx.check(monthly == [Decimal("165.50")], "the monthly view saw the freshly refreshed daily view")

    # Who blocks whom: a refresh held open in A, a reader in B with a 1 s lock_timeout.
    for concurrently in (True, False):
        with ctx.Session() as a, ctx.engine.connect() as b:
            ViewsDailySales.refresh(a, concurrently=concurrently)  # transaction A stays open
            b.execute(text("SET lock_timeout = '1s'"))
            started = time.perf_counter()
            try:
                rows = b.execute(text("SELECT count(*) FROM views_daily_sales")).scalar_one()
                outcome = f"read {rows} rows"
            except OperationalError:
                outcome = "blocked until lock_timeout"
            waited = (time.perf_counter() - started) * 1000
            b.rollback()
            a.rollback()
        label = "REFRESH ... CONCURRENTLY" if concurrently else "plain REFRESH"
        ctx.show(f"reader during an open {label}", f"{outcome} after {waited:.0f} ms")
        if concurrently:
            ctx.check(outcome.startswith("read"), "readers are not blocked by a concurrent refresh")
        else:
            ctx.check(outcome.startswith("blocked"), "a plain refresh locks readers out until commit")
