"""``python -m bench.adopt_history_stall [--rows 1000000]``: the longest stall of a writer while a
populated table is adopted, the naive transaction vs the toolkit's operation:

- ``Versioned``: the history table and its triggers, then version 1 for every row: in the
  migration's transaction by one ``INSERT ... SELECT`` (``versioning.backfill`` on a connection
  in a transaction) vs the triggers committed first and ``op.backfill_versions`` (batches of
  1,000 that commit);
- partitioning by month: a new partitioned table filled by ``INSERT ... SELECT`` and swapped in,
  in one transaction that first stops writes (``LOCK TABLE ... IN SHARE MODE``, or they would be
  lost) vs ``op.partition_existing_table`` (a validated CHECK, then one brief swap and ATTACH).

The cases of ``python -m bench.adoption`` for history and partitioning (this module alone runs
them); the writer updates single rows and inserts rows.
"""

from __future__ import annotations

import random
import sys

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Connection, Engine, String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import sa_patterns.alembic  # noqa: F401  (registers op.backfill_versions, op.partition_existing_table)
from bench.adoption import Case
from bench.adoption import main as adoption_main
from sa_patterns import Versioned, versioning


class Base(DeclarativeBase):
    pass


class Task(Versioned, Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    touched: Mapped[int]


def build_tasks(engine: Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS tasks, tasks_history, sa_patterns_backfill CASCADE"))
        conn.execute(text("DROP FUNCTION IF EXISTS tasks_history() CASCADE"))
        conn.execute(text("CREATE TABLE tasks (id bigserial PRIMARY KEY, title varchar(100), touched int NOT NULL DEFAULT 0)"))
        conn.execute(text("INSERT INTO tasks (title) SELECT 't' || g FROM generate_series(1, :n) g"), {"n": rows})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE tasks"))


def history_ddl(conn: object) -> None:
    """What autogenerate writes before the backfill: the history table, its function, triggers."""
    history = versioning.history_table(Task)
    history.create(conn)  # type: ignore[arg-type]
    for entity in versioning.history_objects(Task.__table__, history):
        for statement in entity.create_statements():
            conn.exec_driver_sql(statement)


def versioned_naive(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '2s'"))
        history_ddl(conn)
        versioning.backfill(conn, Task)  # in the transaction: one statement


def versioned_online(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '2s'"))
        history_ddl(conn)
    with engine.connect() as conn:
        Operations(MigrationContext.configure(conn)).backfill_versions("tasks")


def write_tasks(conn: Connection, rng: random.Random, rows: int) -> None:
    if rng.random() < 0.5:
        conn.execute(text("UPDATE tasks SET touched = touched + 1 WHERE id = :i"), {"i": rng.randint(1, rows)})
    else:
        conn.execute(text("INSERT INTO tasks (title) VALUES ('w')"))


def build_events(engine: Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS events, events_new CASCADE"))
        conn.execute(text(
            "CREATE TABLE events (id bigserial, created_at timestamptz NOT NULL DEFAULT now(), body text, "
            "touched int NOT NULL DEFAULT 0, PRIMARY KEY (id, created_at))"))
        conn.execute(text(
            "INSERT INTO events (created_at, body) SELECT now() - (g % 20000) * interval '1 minute', 'e' || g "
            "FROM generate_series(1, :n) g"), {"n": rows})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE events"))


def partition_naive(engine: Engine) -> None:
    next_month = "(date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC'"
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '2s'"))
        conn.execute(text("LOCK TABLE events IN SHARE MODE"))  # a write meanwhile would be lost
        conn.execute(text("CREATE TABLE events_new (LIKE events INCLUDING ALL) PARTITION BY RANGE (created_at)"))
        bound = conn.scalar(text(f"SELECT {next_month}"))
        conn.execute(text(
            f"CREATE TABLE events_before PARTITION OF events_new FOR VALUES FROM (MINVALUE) TO ('{bound.isoformat()}')"))
        conn.execute(text("INSERT INTO events_new SELECT * FROM events"))
        conn.execute(text("ALTER SEQUENCE events_id_seq OWNED BY events_new.id"))
        conn.execute(text("ALTER TABLE events RENAME TO events_old"))
        conn.execute(text("ALTER TABLE events_new RENAME TO events"))
        conn.execute(text("DROP TABLE events_old"))


def partition_online(engine: Engine) -> None:
    with engine.connect() as conn:
        Operations(MigrationContext.configure(conn)).partition_existing_table(
            "events", "created_at", interval="month", primary_key=["id", "created_at"])


def write_events(conn: Connection, rng: random.Random, rows: int) -> None:
    if rng.random() < 0.5:
        conn.execute(text("UPDATE events SET touched = touched + 1 WHERE id = :i"), {"i": rng.randint(1, rows)})
    else:
        conn.execute(text("INSERT INTO events (body) VALUES ('w')"))


CASES = [
    Case("Versioned", "version 1 in the transaction", build_tasks, versioned_naive, write_tasks, online=False),
    Case("Versioned", "op.backfill_versions", build_tasks, versioned_online, write_tasks, online=True),
    Case("partitioning", "naive copy under LOCK ... SHARE", build_events, partition_naive, write_events, online=False),
    Case("partitioning", "op.partition_existing_table", build_events, partition_online, write_events, online=True),
]

if __name__ == "__main__":
    raise SystemExit(adoption_main(["--only", "history", *sys.argv[1:]]))
