"""Doctor's schema-health checks against a real database: each finds its problem, and a
healthy schema (or one with none of the toolkit's objects) is reported without crashing."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    text,
)
from sqlalchemy.dialects.postgresql import TSVECTOR

from sa_patterns import health
from sa_patterns.partitioning import partition_table, range_partition
from sa_patterns.schema import Function, create_all, register


@dataclass
class Ctx:
    connection: Connection
    metadata: MetaData


def models(*, healthy: bool) -> MetaData:
    md = MetaData()
    Table("parents", md, Column("id", Integer, primary_key=True))
    Table(
        "children", md, Column("id", Integer, primary_key=True),
        Column("parent_id", ForeignKey("parents.id"), index=healthy),
    )
    docs = Table("docs", md, Column("id", Integer, primary_key=True), Column("vec", TSVECTOR))
    if healthy:
        Index("docs_vec", docs.c.vec, postgresql_using="gin")
    logs = Table(
        "logs", md, Column("id", Integer, primary_key=True),
        Column("at", DateTime(timezone=True), primary_key=True),
    )
    partition_table(logs, range_partition("at", premake=1 if healthy else 0))
    register(md, Function(None, "answer", returns="int", language="sql", body="SELECT 42"))
    return md


def test_each_check_finds_its_problem(connection: Connection) -> None:
    md = models(healthy=False)
    create_all(connection, md)
    connection.execute(text("DROP FUNCTION answer()"))  # an object the models need, missing
    connection.execute(text("CREATE INDEX parents_broken ON parents (id)"))
    connection.execute(text("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'parents_broken'::regclass"))
    ctx = Ctx(connection, md)
    assert health.check_foreign_key_indexes(ctx) == [
        "children: foreign key children_parent_id_fkey (parent_id) has no supporting index; "
        "add Index(..., 'parent_id') (or index=True on the column)."
    ]
    assert [p.split(":")[0] for p in health.check_tsvector_indexes(ctx)] == ["docs.vec"]
    assert health.check_invalid_indexes(ctx)[0].startswith("parents: index parents_broken is INVALID")
    assert health.check_toolkit_objects(ctx) == ["missing: function answer; run the migrations (alembic upgrade head)."]
    partitions = health.check_partitions(ctx)
    assert len(partitions) == 1 and "logs: no partition for the next month" in partitions[0]


def test_a_healthy_schema_has_no_findings(connection: Connection) -> None:
    md = models(healthy=True)
    create_all(connection, md)
    ctx = Ctx(connection, md)
    for check in (
        health.check_foreign_key_indexes, health.check_tsvector_indexes, health.check_invalid_indexes,
        health.check_toolkit_objects, health.check_partitions,
    ):
        assert check(ctx) == [], check.__name__


def test_an_empty_database_reports_instead_of_crashing(connection: Connection) -> None:
    ctx = Ctx(connection, models(healthy=True))  # nothing created at all
    assert health.check_foreign_key_indexes(ctx) == []
    assert health.check_partitions(ctx) == []
    missing = health.check_toolkit_objects(ctx)
    assert any("function answer" in m for m in missing) and any("logs_maintain_partitions" in m for m in missing)


def test_next_period_arithmetic() -> None:
    assert health._next_period(dt.datetime(2026, 12, 15), "month") == dt.datetime(2027, 1, 1)
    assert health._next_period(dt.datetime(2026, 11, 22), "month") == dt.datetime(2026, 12, 1)
    assert health._next_period(dt.datetime(2026, 11, 22, 13), "day") == dt.datetime(2026, 11, 23)
    assert health._next_period(dt.datetime(2026, 11, 22), "week") == dt.datetime(2026, 11, 23)
    assert health._next_period(dt.datetime(2026, 11, 22), "year") == dt.datetime(2027, 1, 1)
