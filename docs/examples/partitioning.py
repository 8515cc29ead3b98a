"""Range partitioning by month with retention: partitions made ahead, old ones dropped."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import URL, DateTime, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sa_patterns
from sa_patterns.partitioning import Partitioned, maintain, range_partition


class Base(DeclarativeBase):
    pass


class Measurement(Partitioned, Base):
    __tablename__ = "measurements"
    __partition_by__ = range_partition("taken_at", interval="month", premake=2, retention=12)

    id: Mapped[int] = mapped_column(primary_key=True)
    # the partition key must be part of the primary key (PostgreSQL's rule)
    taken_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    value: Mapped[float]


def main(url: URL) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)  # migrations do the same via autogenerate

    with Session(engine) as s:
        s.add(Measurement(id=1, taken_at=dt.datetime.now(dt.timezone.utc), value=21.5))
        s.commit()
        where = s.execute(text("SELECT tableoid::regclass::text FROM measurements")).scalar_one()
        assert where.startswith("measurements_p")  # the row lives in this month's partition
        parts = s.execute(
            text("SELECT count(*) FROM pg_inherits WHERE inhparent = 'measurements'::regclass")
        ).scalar_one()
        assert parts == 3  # this month + 2 ahead

    with engine.begin() as conn:  # what `sa-patterns partitions maintain` runs (idempotent)
        maintain(conn, Base.metadata)
    engine.dispose()
