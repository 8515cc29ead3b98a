"""A populated, audited table becomes range-partitioned when its model gains ``__partition_by__``:
autogenerate writes ``op.partition_existing_table`` first (no copy: the table becomes the
partition of the current period and everything before it, attached after a validated CHECK, so
without a scan), then the maintenance function, which makes the next partitions. The upgrade
runs while a writer inserts and updates rows and a reader reads them, each statement under
``lock_timeout = 200ms``: none fails, every row is kept in the partition its key belongs to, the
table keeps accepting writes in every partition, the audit triggers, grants and sequence follow
the table, a second autogenerate is empty and the linter finds nothing blocking. Rows outside
the bound stop it before anything changes; the downgrade refuses, saying why.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, MetaData, text
from test_adopt_history import AlembicProject, Load, project_url

N_ROWS = 3000

MODELS = '''
import datetime as dt

from sqlalchemy import DateTime, Index, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sa_patterns import Audited, Partitioned
from sa_patterns.partitioning import range_partition

PARTITIONED = {partitioned}


class Base(DeclarativeBase):
    pass


class Event(*([Partitioned] if PARTITIONED else []), Audited, Base):
    __tablename__ = "ap_events"
    __table_args__ = (Index("ix_ap_events_body", "body"),)
    if PARTITIONED:
        __partition_by__ = range_partition("created_at", interval="month", premake=2)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), primary_key=PARTITIONED, server_default=func.now())
    body: Mapped[str] = mapped_column(String(100))
'''


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return MetaData()  # nothing built by the plugin: the migrations build


@pytest.fixture
def project(tmp_path: Path, owner_engine: Engine, db_schema: str, superuser_engine: Engine) -> Iterator[AlembicProject]:
    proj = AlembicProject(tmp_path, project_url(owner_engine, db_schema), MODELS.format(partitioned=False))
    proj.revision("base")
    proj.ok("alembic", "upgrade", "head")
    with owner_engine.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path = "{db_schema}"'))
        conn.execute(text(
            "INSERT INTO ap_events (created_at, body) SELECT now() - g * interval '2 hours', 'e' || g "
            "FROM generate_series(1, :n) g"), {"n": N_ROWS})
        conn.execute(text("ANALYZE ap_events"))
    yield proj
    with superuser_engine.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path = "{db_schema}"'))
        for table in ("ap_events", "audit_log", "alembic_version"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE"))
        for function in ("ap_events_audit", "audit_log_append_only", "ap_events_maintain_partitions"):
            conn.execute(text(f"DROP FUNCTION IF EXISTS {function}() CASCADE"))


class Writes:
    def __init__(self) -> None:
        self.inserted = 0

    def __call__(self, conn: Connection, rng: random.Random) -> None:
        if rng.random() < 0.5:
            conn.execute(text("INSERT INTO ap_events (body) VALUES ('w')"))
            self.inserted += 1
        else:
            conn.execute(text("UPDATE ap_events SET body = body || '+' WHERE id = :id"), {"id": rng.randint(1, N_ROWS)})


def read(conn: Connection, rng: random.Random) -> None:
    conn.execute(text("SELECT count(*) FROM ap_events WHERE id > :lo"), {"lo": rng.randint(0, N_ROWS)})


def relkind(conn: Connection, name: str) -> str | None:
    return conn.scalar(text("SELECT relkind::text FROM pg_class WHERE oid = to_regclass(:n)"), {"n": name})


def test_a_populated_table_becomes_partitioned_without_blocking_its_writers(
    project: AlembicProject, superuser_engine: Engine, engine: Engine, db_schema: str
) -> None:
    project.models(MODELS.format(partitioned=True))
    path = project.revision("adopt")
    upgrade = project.upgrade_ops(path)
    assert upgrade[0] == ("op.partition_existing_table('ap_events', 'created_at', interval='month', "
                          "primary_key=['id', 'created_at'])"), upgrade
    assert any(line.startswith("op.create_entity(sa_patterns.partitioning.PartitionFunction(") for line in upgrade)
    assert "op.refuse_partition_downgrade('ap_events')" in path.read_text().split("def downgrade() -> None:")[1]

    writes = Writes()
    writer, reader = Load(project.url, writes), Load(project.url, read, seed=7)
    for load in (writer, reader):
        load.start()
        assert load.started.wait(10)
    try:
        project.ok("alembic", "upgrade", "head")
    finally:
        writer.finish()
        reader.finish(0)
    assert writer.errors == [] and reader.errors == [], [str(e)[:300] for e in (writer.errors + reader.errors)[:3]]
    assert writes.inserted
    print(f"\nwriter: {writer.done} writes, longest {writer.longest * 1000:.0f} ms; reader: {reader.done} reads")

    with superuser_engine.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path = "{db_schema}"'))
        period = conn.scalar(text("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMM')"))
        legacy = f"ap_events_p{period}"
        assert relkind(conn, "ap_events") == "p" and relkind(conn, legacy) == "r"
        # every row kept, in the old table, now the partition of this period and before
        assert conn.scalar(text("SELECT count(*) FROM ap_events")) == N_ROWS + writes.inserted
        assert conn.scalar(text(f"SELECT count(*) FROM {legacy}")) == N_ROWS + writes.inserted
        bounds = dict(conn.execute(text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c "
            "ON c.oid = i.inhrelid WHERE i.inhparent = 'ap_events'::regclass")).all())
        assert len(bounds) == 3 and bounds[legacy].startswith("FOR VALUES FROM (MINVALUE) TO (")
        # no check left, the key and index on the parent, attached on the partition
        assert conn.scalar(text(
            "SELECT count(*) FROM pg_constraint WHERE conrelid IN ('ap_events'::regclass, CAST(:l AS regclass)) "
            "AND contype = 'c'"), {"l": legacy}) == 0
        assert sorted(conn.scalars(text(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = 'ap_events'::regclass"))) == ["ap_events_pkey", "ix_ap_events_body"]
        assert conn.scalar(text(
            "SELECT count(*) FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid "
            "WHERE i.inhparent IN ('ap_events_pkey'::regclass, 'ix_ap_events_body'::regclass) "
            "AND x.indrelid = CAST(:l AS regclass) AND x.indisvalid"), {"l": legacy}) == 2
        # the sequence is the parent's now (a retention drop of the old partition keeps it)
        assert conn.scalar(text("SELECT pg_get_serial_sequence('ap_events', 'id')")) is not None
        # writes go on, in every partition: the next month's row lands in its own
        conn.execute(text("INSERT INTO ap_events (created_at, body) VALUES "
                          "(date_trunc('month', now()) + interval '1 month 1 day', 'next')"))
        assert conn.scalar(text(
            "SELECT tableoid::regclass::text FROM ap_events WHERE body = 'next'")) != legacy
        # the audit triggers moved to the parent: a write through it is logged
        assert conn.scalar(text(
            "SELECT count(*) FROM audit_log WHERE operation = 'INSERT' AND new_row ->> 'body' = 'next'")) == 1
    with engine.begin() as conn:  # the app role keeps its grants
        conn.execute(text("INSERT INTO ap_events (body) VALUES ('app')"))

    assert "No new upgrade operations detected" in project.ok("alembic", "check")
    assert project.blocking_findings(path) == []

    done = project.run("alembic", "downgrade", "-1")
    assert done.returncode != 0 and "DowngradeRefused" in done.stderr and "copy of every row" in done.stderr
    with superuser_engine.connect() as conn:
        conn.execute(text(f'SET search_path = "{db_schema}"'))
        assert relkind(conn, "ap_events") == "p"


def test_rows_past_the_current_period_stop_it_before_anything_changes(
    project: AlembicProject, superuser_engine: Engine, db_schema: str
) -> None:
    with superuser_engine.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path = "{db_schema}"'))
        conn.execute(text("INSERT INTO ap_events (created_at, body) VALUES (now() + interval '3 months', 'future')"))
    project.models(MODELS.format(partitioned=True))
    project.revision("adopt")
    done = project.run("alembic", "upgrade", "head")
    assert done.returncode != 0
    assert "1 row(s) have created_at NULL or at or after" in done.stderr and "Nothing was changed" in done.stderr
    with superuser_engine.connect() as conn:
        conn.execute(text(f'SET search_path = "{db_schema}"'))
        assert relkind(conn, "ap_events") == "r"
        assert conn.scalar(text("SELECT count(*) FROM pg_constraint WHERE conrelid = 'ap_events'::regclass "
                                "AND contype = 'c'")) == 0
        assert conn.scalar(text("SELECT count(*) FROM ap_events")) == N_ROWS + 1
