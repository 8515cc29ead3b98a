"""Refreshes are recorded (PostgreSQL keeps no time of the last REFRESH) and the doctor reports
materialized views not refreshed within a limit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import Connection, Index, MetaData, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sa_patterns import MaterializedView, refresh_all
from sa_patterns.cli.doctor import parse_age
from sa_patterns.errors import ConfigurationError
from sa_patterns.health import check_matview_freshness
from sa_patterns.schema import create_all


class Base(DeclarativeBase):
    pass


class Reading(Base):
    __tablename__ = "hm_readings"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int]


class Totals(MaterializedView, Base):
    __tablename__ = "hm_totals"
    __select__ = select(func.count(Reading.id).label("n"))
    __table_args__ = (Index("hm_totals_n", "n", unique=True),)
    n: Mapped[int] = mapped_column(primary_key=True)


@dataclass
class Ctx:
    connection: Connection
    metadata: Any
    options: dict[str, Any] = field(default_factory=dict)


def test_refreshes_are_recorded_and_staleness_reported(connection: Connection, db_schema: str) -> None:
    create_all(connection, Base.metadata)
    ctx = Ctx(connection, Base.metadata, {"matview_max_age": 3600})
    assert check_matview_freshness(ctx) == ["materialized view hm_totals: no refresh recorded; refresh it with sa-patterns refresh."]
    assert check_matview_freshness(Ctx(connection, Base.metadata)) == []  # no limit, no check
    with Session(bind=connection, join_transaction_mode="create_savepoint") as s:
        Totals.refresh(s, concurrently=True)
        refresh_all(s)
        s.commit()
    rows = connection.execute(text("SELECT view_name, refreshed_at <= clock_timestamp() FROM sa_patterns_matview_refreshes")).all()
    assert rows == [(f"{db_schema}.hm_totals", True)]  # one key, however the view was named
    assert check_matview_freshness(ctx) == []
    connection.execute(text("UPDATE sa_patterns_matview_refreshes SET refreshed_at = now() - interval '3 hours'"))
    (problem,) = check_matview_freshness(ctx)
    assert "hm_totals was last refreshed 3.0 h ago (limit 1.0 h)" in problem


def test_a_rolled_back_refresh_records_nothing(connection: Connection) -> None:
    create_all(connection, Base.metadata)
    with Session(bind=connection, join_transaction_mode="create_savepoint") as s:
        Totals.refresh(s)
        s.rollback()
    assert connection.execute(text("SELECT count(*) FROM sa_patterns_matview_refreshes")).scalar() == 0


def test_parse_age() -> None:
    assert [parse_age(v) for v in ("90", "30m", "6h", "2d")] == [90, 1800, 21600, 172800]
    with pytest.raises(ConfigurationError, match="6h"):
        parse_age("soon")


def test_metadata_with_a_schema_keeps_its_refresh_log_beside_its_views(connection: Connection, db_schema: str) -> None:
    """MetaData(schema=...) with two materialized views: one log, in that schema, written
    there even though the schema is not on the search path."""

    class Other(DeclarativeBase):
        metadata = MetaData(schema="hm_other")

    class Src(Other):
        __tablename__ = "src"
        id: Mapped[int] = mapped_column(primary_key=True)

    class CountA(MaterializedView, Other):
        __tablename__ = "count_a"
        __select__ = select(func.count(Src.id).label("n"))
        n: Mapped[int] = mapped_column(primary_key=True)

    class CountB(MaterializedView, Other):
        __tablename__ = "count_b"
        __select__ = select(func.count(Src.id).label("n"))
        n: Mapped[int] = mapped_column(primary_key=True)

    assert [t for t in Other.metadata.tables if t.endswith("matview_refreshes")] == [
        "hm_other.sa_patterns_matview_refreshes"
    ]
    connection.execute(text("CREATE SCHEMA hm_other"))
    create_all(connection, Other.metadata)
    with Session(bind=connection, join_transaction_mode="create_savepoint") as s:
        CountB.refresh(s)
        s.commit()
    rows = connection.execute(text("SELECT view_name FROM hm_other.sa_patterns_matview_refreshes")).scalars().all()
    assert rows == ["hm_other.count_b"]
    # the doctor reads the same log: count_b is fresh, count_a never refreshed
    assert check_matview_freshness(Ctx(connection, Other.metadata, {"matview_max_age": 3600})) == [
        "materialized view hm_other.count_a: no refresh recorded; refresh it with sa-patterns refresh."
    ]
    connection.execute(text("DROP TABLE hm_other.sa_patterns_matview_refreshes"))
    # only this test's schema on the path (public may hold another test's log)
    connection.execute(text("SELECT set_config('search_path', :p, true)"), {"p": db_schema})
    (problem, _) = check_matview_freshness(Ctx(connection, Other.metadata, {"matview_max_age": 3600}))
    assert "the refresh log sa_patterns_matview_refreshes is missing" in problem
