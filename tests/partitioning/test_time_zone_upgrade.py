"""Existing deployments and the command line, in a session west of UTC.

A database migrated with the maintenance function of the previous release (retention parsed the
partition's suffix in the session's TimeZone, one period late west of UTC) gets a replace from
autogenerate; once applied, the function drops what is due, a second autogenerate is empty and
the live-definition check (the doctor's drift check) finds nothing. The CLI, connecting with a
client zone of UTC-8, does what the rules say and prints it. Each connection here fixes the
maintenance clock (``sa_patterns.partition_clock``) and its TimeZone in its startup options."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import (
    URL,
    BigInteger,
    Column,
    Connection,
    DateTime,
    MetaData,
    Table,
    create_engine,
    text,
)

from sa_patterns import health
from sa_patterns.cli.init import init
from sa_patterns.partitioning import PartitionFunction, partition_table, range_partition
from sa_patterns.schema import create_all, register
from sa_patterns.schema.live import drifts
from sa_patterns.schema.registry import registered

#: The body the previous release generated for ``events`` (month, premake=2, retention=3).
OLD_BODY = """DECLARE
    parent regclass := 'events'::regclass;
    nsp text := (SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = parent);
    part text;
    lo timestamp;
    hi timestamp;
    horizon timestamp;
BEGIN
    FOR i IN 0..2 LOOP
        lo := date_trunc('month', now() AT TIME ZONE 'UTC') + i * interval '1 month';
        hi := lo + interval '1 month';
        part := 'events' || '_p' || to_char(lo, 'YYYYMM');
        IF to_regclass(format('%s.%I', nsp, part)) IS NULL THEN
            EXECUTE format('CREATE TABLE %s.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)', nsp, part, parent, to_char(lo, 'YYYY-MM-DD HH24:MI:SS') || '+00', to_char(hi, 'YYYY-MM-DD HH24:MI:SS') || '+00');
        END IF;
    END LOOP;
    -- retention: drop our partitions whose whole range is older than the horizon
    horizon := date_trunc('month', now() AT TIME ZONE 'UTC') - interval '3 month';
    FOR part IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = parent AND c.relname ~ '^events_p[0-9]+$' LOOP
        lo := to_timestamp(substring(part from '_p([0-9]+)$'), 'YYYYMM') AT TIME ZONE 'UTC';
        IF lo + interval '1 month' <= horizon THEN
            EXECUTE format('ALTER TABLE %s DETACH PARTITION %s.%I', parent, nsp, part);
            EXECUTE format('DROP TABLE %s.%I', nsp, part);
        END IF;
    END LOOP;
    FOR part IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = parent AND NOT (c.relrowsecurity AND c.relforcerowsecurity) LOOP
        EXECUTE format('ALTER TABLE %s.%I ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', nsp, part);
    END LOOP;
END;"""


def events(*, old: bool = False) -> MetaData:
    md = MetaData()
    table = Table(
        "events", md,
        Column("id", BigInteger, primary_key=True),
        Column("created_at", DateTime(timezone=True), primary_key=True),
    )
    partition_table(table, range_partition("created_at", interval="month", premake=2, retention=3))
    if old:  # the previous release's definition of the same object
        register(md, PartitionFunction(schema=None, name="events_maintain_partitions", returns="void", body=OLD_BODY))
    return md


def partitions(conn: Connection) -> set[str]:
    rows = conn.execute(text("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass"))
    return {r[0] for r in rows}


def in_west(pg_url: URL, schema: str, clock: str) -> URL:
    """A session at UTC-8 whose maintenance clock is ``clock``."""
    options = f"-csearch_path={schema} -cTimeZone=America/Los_Angeles -csa_patterns.partition_clock={clock}"
    return pg_url.update_query_dict({"options": options})


@pytest.fixture
def schema(pg_url: URL, db_schema: str) -> Iterator[str]:
    name = f"{db_schema}_tz"
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"))
    try:
        yield name
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        admin.dispose()


@dataclass
class Ctx:
    connection: Connection
    metadata: MetaData


def test_an_old_deployment_gets_a_replace_that_stays_clean(tmp_path: Path, pg_url: URL, schema: str) -> None:
    url = in_west(pg_url, schema, "2024-03-01T00:00:00Z")
    cfg = Config(str(init(tmp_path / "migrations", metadata="unused:unused")))
    cfg.attributes["configure_logger"] = False
    cfg.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    eng = create_engine(url)
    try:
        # the previous release, migrated (its function knows no clock: it ran at the real now),
        # and two old partitions: November 2023, whose range ended three months before March
        # 2024, and December 2023
        cfg.attributes["target_metadata"] = events(old=True)
        command.revision(cfg, message="old", autogenerate=True, rev_id="0001")
        command.upgrade(cfg, "head")
        with eng.begin() as conn:
            assert conn.execute(text("SHOW TimeZone")).scalar_one() == "America/Los_Angeles"
            for name, start, end in (("202311", "2023-11-01", "2023-12-01"), ("202312", "2023-12-01", "2024-01-01")):
                conn.execute(text(
                    f"CREATE TABLE events_p{name} PARTITION OF events "
                    f"FOR VALUES FROM ('{start} 00:00+00') TO ('{end} 00:00+00')"
                ))
            before = partitions(conn)
            assert len(before) == 5

        # this release: autogenerate replaces the function (and the migration runs it)
        new = events()
        cfg.attributes["target_metadata"] = new
        command.revision(cfg, message="utc", autogenerate=True, rev_id="0002")
        script = (tmp_path / "migrations" / "versions").glob("0002_*.py")
        source = next(script).read_text()
        assert "op.replace_entity(" in source and "to_date(substring(part" in source and "to_timestamp(" in source
        assert "op.create_entity(" not in source and "op.drop_entity(" not in source
        command.upgrade(cfg, "head")
        with eng.begin() as conn:
            # run at the clock, 2024-03-01 00:00 UTC: March to May made, November dropped
            assert partitions(conn) == before - {"events_p202311"} | {"events_p202403", "events_p202404", "events_p202405"}
            body = conn.execute(text("SELECT prosrc FROM pg_proc WHERE oid = 'events_maintain_partitions()'::regprocedure")).scalar_one()
            assert body.strip() == next(e for e in registered(new) if e.name == "events_maintain_partitions").body  # type: ignore[attr-defined]
        command.check(cfg)  # a second autogenerate: nothing
        with eng.begin() as conn:
            assert drifts(conn, registered(new)) == []
            assert health.check_toolkit_objects(Ctx(conn, new)) == []
            assert health.check_partitions(Ctx(conn, new)) == []

        # and back: the previous definition, exactly
        command.downgrade(cfg, "0001")
        with eng.begin() as conn:
            body = conn.execute(text("SELECT prosrc FROM pg_proc WHERE oid = 'events_maintain_partitions()'::regprocedure")).scalar_one()
            assert body.strip() == OLD_BODY
        command.downgrade(cfg, "base")
    finally:
        eng.dispose()


def test_cli_in_a_client_zone_west_of_utc(pg_url: URL, schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    from sa_patterns.cli import main

    md = events()
    setup = create_engine(in_west(pg_url, schema, "2023-12-31T23:59:59.999999Z"))
    try:
        with setup.begin() as conn:
            create_all(conn, md)  # runs at the clock: December to February
            assert partitions(conn) == {"events_p202312", "events_p202401", "events_p202402"}
            for month in (8, 9):  # old months, made by hand
                conn.execute(text(
                    f"CREATE TABLE events_p20230{month} PARTITION OF events "
                    f"FOR VALUES FROM ('2023-0{month}-01 00:00+00') TO ('2023-{month + 1:02d}-01 00:00+00')"
                ))
        runs = [
            # a microsecond before 2024 (UTC): August 2023 ended three months before December
            ("2023-12-31T23:59:59.999999Z", "created: -", "dropped: events_p202308"),
            # at 2024-01-01 00:00 UTC (still 31 December in Los Angeles): January is the current
            # month, March is made and September (three months before January) dropped
            ("2024-01-01T00:00:00Z", "created: events_p202403", "dropped: events_p202309"),
            ("2024-01-01T07:59:59Z", "created: -", "dropped: -"),
        ]
        for clock, created, dropped in runs:
            url = in_west(pg_url, schema, clock).render_as_string(hide_password=False)
            assert main(["partitions", "maintain", "--metadata", f"{__name__}:CLI_MODELS", "--url", url]) == 0
            out = capsys.readouterr().out.splitlines()
            assert out == ["maintained 1 partitioned table(s): events_maintain_partitions", created, dropped], clock
        with setup.connect() as conn:
            assert partitions(conn) == {"events_p202312", "events_p202401", "events_p202402", "events_p202403"}
    finally:
        setup.dispose()


CLI_MODELS = events()
