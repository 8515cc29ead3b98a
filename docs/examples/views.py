"""Views and materialized views as models: query and join them, refresh in dependency order,
concurrently, and see ORM writes refused."""

import datetime as dt
from decimal import Decimal

from sqlalchemy import URL, Date, ForeignKey, Index, Numeric, create_engine, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

import sa_patterns
from sa_patterns import MaterializedView, View
from sa_patterns.errors import ConfigurationError, ReadOnlyError


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    totals: Mapped["CustomerTotals | None"] = relationship(viewonly=True)


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    amount: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    placed_on: Mapped[dt.date] = mapped_column(Date)


class CustomerTotals(View, Base):
    """A plain view: always current, computed on every read."""

    __tablename__ = "customer_totals"
    __select__ = select(
        Order.customer_id,
        func.count(Order.id).label("orders"),
        func.sum(Order.amount).label("total"),
    ).group_by(Order.customer_id)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    orders: Mapped[int]
    total: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    customer: Mapped[Customer] = relationship(viewonly=True)


class DailySales(MaterializedView, Base):
    """Stored rows; the unique index makes REFRESH ... CONCURRENTLY possible."""

    __tablename__ = "daily_sales"
    __table_args__ = (Index("daily_sales_day", "day", unique=True),)
    __select__ = select(
        Order.placed_on.label("day"), func.sum(Order.amount).label("revenue")
    ).group_by(Order.placed_on)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    revenue: Mapped[Decimal] = mapped_column(Numeric(12, 2))


class BestDay(MaterializedView, Base):
    """Reads DailySales: refresh_all() refreshes DailySales first (order from pg_depend)."""

    __tablename__ = "best_day"
    __table_args__ = (Index("best_day_day", "day", unique=True),)
    __select__ = select(DailySales.day, DailySales.revenue).order_by(DailySales.revenue.desc()).limit(1)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    revenue: Mapped[Decimal] = mapped_column(Numeric(12, 2))


class NoIndex(MaterializedView, Base):
    __tablename__ = "no_index"
    __select__ = select(Order.customer_id).distinct()
    customer_id: Mapped[int] = mapped_column(primary_key=True)


def main(url: URL) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)  # migrations: alembic autogenerate
    Session = sa_patterns.install(sessionmaker(engine))

    day = dt.date(2026, 5, 1)
    with Session.begin() as session:
        session.add_all([Customer(id=1, name="ada"), Customer(id=2, name="bob")])
        session.flush()
        session.add_all([
            Order(customer_id=1, amount=Decimal("40.00"), placed_on=day),
            Order(customer_id=1, amount=Decimal("60.00"), placed_on=day + dt.timedelta(days=1)),
            Order(customer_id=2, amount=Decimal("5.00"), placed_on=day + dt.timedelta(days=1)),
        ])

    with Session.begin() as session:
        # A view is queried, filtered and joined like any model.
        ada = session.scalars(select(Customer).where(Customer.name == "ada")).one()
        assert ada.totals is not None and (ada.totals.orders, ada.totals.total) == (2, Decimal("100.00"))
        big = session.scalars(select(CustomerTotals).where(CustomerTotals.total > 50)).all()
        assert [row.customer.name for row in big] == ["ada"]

        # Materialized views hold what the last refresh computed.
        assert session.scalars(select(DailySales)).all() == []
        refreshed = sa_patterns.refresh_all(session)  # dependency order, in this transaction
        names = [name.rsplit(".", 1)[-1] for name in refreshed]  # "schema.name"
        assert sorted(names) == ["best_day", "daily_sales", "no_index"]
        assert names.index("daily_sales") < names.index("best_day")
        best = session.scalars(select(BestDay)).one()
        assert (best.day, best.revenue) == (day + dt.timedelta(days=1), Decimal("65.00"))

        # Readers keep reading the old rows during a concurrent refresh.
        session.add(Order(customer_id=2, amount=Decimal("100.00"), placed_on=day))
        DailySales.refresh(session, concurrently=True)  # flushes the new order first
        assert session.get(DailySales, day).revenue == Decimal("140.00")  # type: ignore[union-attr]

        # Concurrent refresh needs a unique index: said before anything runs.
        try:
            NoIndex.refresh(session, concurrently=True)
            raise AssertionError("expected ConfigurationError")
        except ConfigurationError as exc:
            assert "needs a unique index" in str(exc)

    # Views are read-only in the ORM.
    with Session() as session:
        session.add(CustomerTotals(customer_id=2, orders=0, total=Decimal(0)))
        try:
            session.flush()
            raise AssertionError("expected ReadOnlyError")
        except ReadOnlyError as exc:
            assert "CustomerTotals maps the view customer_totals" in str(exc)

    with engine.connect() as conn:  # what the database holds
        kinds = dict(conn.execute(text(
            "SELECT relname, relkind FROM pg_class WHERE relname IN ('customer_totals', 'daily_sales')"
        )).all())
        assert kinds == {"customer_totals": "v", "daily_sales": "m"}
    engine.dispose()
