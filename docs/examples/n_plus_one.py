"""The N+1 guard: a lazy load in a loop is caught and named; selectinload passes."""

from sqlalchemy import URL, ForeignKey, String, create_engine, select
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    mapped_column,
    relationship,
    selectinload,
    sessionmaker,
)

from sa_patterns import NPlusOneDetected, count_queries, nplusone_guard


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    orders: Mapped[list["Order"]] = relationship(back_populates="customer")


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    customer: Mapped[Customer] = relationship(back_populates="orders")


def main(url: URL) -> None:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    Session = sessionmaker(engine)
    with Session.begin() as session:
        session.add_all([Customer(name=f"c{i}", orders=[Order(), Order()]) for i in range(20)])

    with Session() as session:
        try:
            with nplusone_guard(session):
                for customer in session.scalars(select(Customer)):
                    len(customer.orders)  # one query per customer
        except NPlusOneDetected as exc:
            print(exc)  # N+1: Customer.orders was lazy-loaded 20 times ...
            assert "Customer.orders" in str(exc)
        else:
            raise AssertionError("N+1 not detected")

    with Session() as session, nplusone_guard(session, max_statements=2) as counter:
        customers = session.scalars(select(Customer).options(selectinload(Customer.orders))).all()
        assert sum(len(c.orders) for c in customers) == 40
    assert counter.count == 2

    with Session() as session, count_queries(session) as q:
        session.get(Customer, 1)
    assert q.count == 1
    engine.dispose()
