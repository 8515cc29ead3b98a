"""A populated table becomes range-partitioned by month without a copy: the table becomes the
partition of this month and everything before it (a validated CHECK, then one brief swap and an
ATTACH with no scan); the maintenance function makes the next months' partitions."""

import datetime as dt

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import URL, DateTime, create_engine, func, insert, select, table, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import sa_patterns.alembic  # registers op.partition_existing_table
from sa_patterns import Partitioned
from sa_patterns.partitioning import PartitionFunction, range_partition
from sa_patterns.schema import registered


class Before(DeclarativeBase):  # the table as production has it
    pass


class OldEvent(Before):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    body: Mapped[str]


class Base(DeclarativeBase):  # the model, now partitioned: its key includes the partition column
    pass


class Event(Partitioned, Base):
    __tablename__ = "events"
    __partition_by__ = range_partition("created_at", interval="month", premake=2)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True, server_default=func.now())
    body: Mapped[str]


def main(url: URL) -> None:
    engine = create_engine(url)
    Before.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO events (created_at, body) "
                          "SELECT now() - g * interval '3 hours', 'event ' || g FROM generate_series(1, 5000) g"))

    # The revision's upgrade(), as Alembic runs it: autogenerate writes op.partition_existing_table
    # first, then the maintenance function (created, then run once: the next partitions)
    with engine.connect() as conn:
        Operations(MigrationContext.configure(conn)).partition_existing_table(
            "events", "created_at", interval="month", primary_key=["id", "created_at"])
    with engine.begin() as conn:
        op = Operations(MigrationContext.configure(conn))
        for entity in registered(Base.metadata):
            if isinstance(entity, PartitionFunction):
                op.create_entity(entity)

    with engine.begin() as conn:
        partitions = conn.execute(text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'events'::regclass ORDER BY 1")).scalars().all()
        this_month = dt.datetime.now(dt.timezone.utc).strftime("events_p%Y%m")
        assert partitions[0] == this_month and len(partitions) == 3  # this month (and before), 2 ahead
        assert conn.execute(select(func.count()).select_from(table(this_month))).scalar_one() == 5000
        # writes go on: next month's row lands in its own partition
        conn.execute(insert(Event).values(
            body="next month", created_at=func.date_trunc("month", func.now()) + text("interval '1 month 1 day'")))
        assert conn.execute(text(
            "SELECT tableoid::regclass::text FROM events WHERE body = 'next month'")).scalar_one() == partitions[1]
        context = MigrationContext.configure(conn, opts={
            **sa_patterns.alembic.configure_kwargs(), "target_metadata": Base.metadata})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()
