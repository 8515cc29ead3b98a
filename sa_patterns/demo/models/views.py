"""Views: per-customer totals (a view with relationships), daily and monthly sales
(materialized views, the monthly one reading the daily one, each with a unique index)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import Date, ForeignKey, Index, Numeric, String, func, select
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ...views import MaterializedView, View
from .base import Base


class ViewsCustomer(Base):
    __tablename__ = "views_customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    totals: Mapped[ViewsCustomerTotals | None] = relationship(viewonly=True)


class ViewsOrder(Base):
    __tablename__ = "views_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("views_customers.id"))
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    placed_on: Mapped[dt.date] = mapped_column(Date)


class ViewsCustomerTotals(View, Base):
    """Always current: PostgreSQL runs the query on every read."""

    __tablename__ = "views_customer_totals"
    __select__ = select(
        ViewsOrder.customer_id,
        func.count(ViewsOrder.id).label("orders"),
        func.sum(ViewsOrder.amount).label("total"),
    ).group_by(ViewsOrder.customer_id)
    customer_id: Mapped[int] = mapped_column(ForeignKey("views_customers.id"), primary_key=True)
    orders: Mapped[int]
    total: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    customer: Mapped[ViewsCustomer] = relationship(viewonly=True)


class ViewsDailySales(MaterializedView, Base):
    """Stored rows, refreshed on demand; the unique index allows REFRESH ... CONCURRENTLY."""

    __tablename__ = "views_daily_sales"
    __table_args__ = (Index("views_daily_sales_day", "day", unique=True),)
    __select__ = select(
        ViewsOrder.placed_on.label("day"),
        func.count(ViewsOrder.id).label("orders"),
        func.sum(ViewsOrder.amount).label("revenue"),
    ).group_by(ViewsOrder.placed_on)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    orders: Mapped[int]
    revenue: Mapped[Decimal] = mapped_column(Numeric(12, 2))


class ViewsMonthlySales(MaterializedView, Base):
    """Reads the daily materialized view: refresh_all refreshes the daily one first."""

    __tablename__ = "views_monthly_sales"
    __table_args__ = (Index("views_monthly_sales_month", "month", unique=True),)
    __select__ = select(
        func.date_trunc("month", ViewsDailySales.day).label("month"),
        func.sum(ViewsDailySales.revenue).label("revenue"),
    ).group_by(func.date_trunc("month", ViewsDailySales.day))
    month: Mapped[dt.datetime] = mapped_column(primary_key=True)
    revenue: Mapped[Decimal] = mapped_column(Numeric(12, 2))
