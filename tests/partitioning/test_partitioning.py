"""Declarative partitioning: partitioned tables, maintenance, retention, Alembic round trip."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Connection, DateTime, Engine, String, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sa_patterns.cli.init import init
from sa_patterns.errors import ConfigurationError
from sa_patterns.partitioning import (
    Partitioned,
    hash_partition,
    list_partition,
    maintain,
    range_partition,
)
from sa_patterns.schema import create_all


class Base(DeclarativeBase):
    pass


class Event(Partitioned, Base):
    __tablename__ = "events"
    __partition_by__ = range_partition("created_at", interval="month", premake=2, retention=3)
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    name: Mapped[str]


class Customer(Partitioned, Base):
    __tablename__ = "customers"
    __partition_by__ = list_partition("region", {"eu": ["de", "fr"], "us": ["us"]})
    id: Mapped[int] = mapped_column(primary_key=True)
    region: Mapped[str] = mapped_column(String(8), primary_key=True)


class Shard(Partitioned, Base):
    __tablename__ = "shards"
    __partition_by__ = hash_partition("id", modulus=4)
    id: Mapped[int] = mapped_column(primary_key=True)


def partitions(conn: Connection, parent: str) -> list[str]:
    rows = conn.execute(
        text("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:p) ORDER BY 1"),
        {"p": parent},
    )
    return [r[0] for r in rows]


def test_tables_are_partitioned_with_partitions_ready(connection: Connection) -> None:
    create_all(connection, Base.metadata)
    strategy = dict(
        connection.execute(
            text("SELECT c.relname, p.partstrat FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid")
        ).all()
    )
    assert {k: strategy[k] for k in ("events", "customers", "shards")} == {"events": "r", "customers": "l", "shards": "h"}
    now = dt.datetime.now(dt.timezone.utc)
    month = dt.datetime(now.year, now.month, 1)
    expected = []
    for i in range(3):
        y, m = divmod(month.month - 1 + i, 12)
        expected.append(f"events_p{month.year + y}{m + 1:02d}")
    assert partitions(connection, "events") == expected
    assert partitions(connection, "customers") == ["customers_default", "customers_eu", "customers_us"]
    assert partitions(connection, "shards") == ["shards_h0", "shards_h1", "shards_h2", "shards_h3"]
    # rows land in the right partition
    connection.execute(text("INSERT INTO events (id, created_at, name) VALUES (1, now(), 'x')"))
    connection.execute(text("INSERT INTO customers (id, region) VALUES (1, 'fr'), (2, 'jp')"))
    where = dict(connection.execute(text("SELECT region, tableoid::regclass::text FROM customers")).all())
    assert where == {"fr": "customers_eu", "jp": "customers_default"}
    # a row beyond the premade range is refused by PostgreSQL (hence maintenance)
    connection.execute(text("SAVEPOINT s"))
    with pytest.raises(Exception, match="no partition"):
        connection.execute(text("INSERT INTO events (id, created_at, name) VALUES (2, now() + interval '2 years', 'x')"))
    connection.execute(text("ROLLBACK TO SAVEPOINT s"))


def test_maintenance_is_idempotent_and_applies_retention(connection: Connection) -> None:
    create_all(connection, Base.metadata)
    before = partitions(connection, "events")
    ran = maintain(connection, Base.metadata)
    assert sorted(ran) == ["customers_maintain_partitions", "events_maintain_partitions", "shards_maintain_partitions"]
    assert partitions(connection, "events") == before  # second run: no-op
    # an old partition (6 months back) beyond the 3-month retention is dropped; a recent one stays
    connection.execute(text("CREATE TABLE events_p200001 PARTITION OF events FOR VALUES FROM ('2000-01-01 00:00+00') TO ('2000-02-01 00:00+00')"))
    connection.execute(text("INSERT INTO events (id, created_at, name) VALUES (9, '2000-01-15', 'old')"))
    maintain(connection, Base.metadata)
    assert "events_p200001" not in partitions(connection, "events")
    assert connection.execute(text("SELECT count(*) FROM events WHERE name = 'old'")).scalar() == 0
    assert partitions(connection, "events") == before


def test_primary_key_must_include_partition_key() -> None:
    class Other(DeclarativeBase):
        pass

    with pytest.raises(ConfigurationError, match="must include the partition key"):

        class Bad(Partitioned, Other):
            __tablename__ = "bad"
            __partition_by__ = range_partition("created_at")
            id: Mapped[int] = mapped_column(primary_key=True)
            created_at: Mapped[dt.datetime]


def test_bad_specs_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        range_partition("x", interval="fortnight")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        hash_partition("x", modulus=1)
    with pytest.raises(ConfigurationError):
        list_partition("x", {})


def test_alembic_round_trip(tmp_path: Path, pg_url: URL, db_schema: str) -> None:
    schema = f"{db_schema}_alembic"
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
    url = pg_url.update_query_dict({"options": f"-csearch_path={schema}"})
    cfg = Config(str(init(tmp_path / "migrations", metadata="unused:unused")))
    cfg.attributes["target_metadata"] = Base.metadata
    cfg.attributes["configure_logger"] = False
    cfg.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    try:
        command.revision(cfg, message="partitions", autogenerate=True)
        script = next((tmp_path / "migrations" / "versions").glob("*.py")).read_text()
        assert "postgresql_partition_by='RANGE (created_at)'" in script
        assert "PartitionFunction(" in script
        command.upgrade(cfg, "head")
        eng: Engine = create_engine(url)
        with eng.connect() as conn:
            assert len(partitions(conn, "events")) == 3
        command.check(cfg)
        command.downgrade(cfg, "base")
        with eng.connect() as conn:
            left = conn.execute(text("SELECT string_agg(relname, ',') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = :s AND relname NOT IN ('alembic_version', 'alembic_version_pkc')"), {"s": schema}).scalar()
            fns = conn.execute(text("SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE nspname = :s"), {"s": schema}).scalar()
        eng.dispose()
        assert (left, fns) == (None, 0)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def test_cli_maintain_is_a_noop_the_second_time(pg_url: URL, db_schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    from sa_patterns.cli import main

    schema = f"{db_schema}_cli"
    eng = create_engine(pg_url.update_query_dict({"options": f"-csearch_path={schema}"}))
    with eng.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
        create_all(conn, Base.metadata)
        conn.execute(text("DROP TABLE events_p" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m")))
    url = pg_url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    try:
        assert main(["partitions", "maintain", "--metadata", f"{__name__}:Base", "--url", url]) == 0
        assert "maintained 3" in capsys.readouterr().out
        with eng.connect() as conn:
            first = partitions(conn, "events")
        assert len(first) == 3  # the dropped current month is back
        assert main(["partitions", "maintain", "--metadata", f"{__name__}:Base", "--url", url]) == 0
        with eng.connect() as conn:
            assert partitions(conn, "events") == first
    finally:
        with eng.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        eng.dispose()


def test_cron_schedule_sql_quotes_everything() -> None:
    from sa_patterns.partitioning import cron_schedule_sql

    sql = cron_schedule_sql(Base.metadata, "0 3 * * *")
    assert "SELECT cron.schedule('events_maintain_partitions', '0 3 * * *', 'SELECT events_maintain_partitions()')" in sql
