"""``python -m bench.adopt_history_stall [--rows 1000000]``: the longest stall of a writer while a
populated table is adopted, the naive transaction vs the toolkit's operation:

- ``Versioned``: the history table and its triggers, then version 1 for every row: in the
  migration's transaction by one ``INSERT ... SELECT`` (``versioning.backfill`` on a connection
  in a transaction) vs the triggers committed first and ``op.backfill_versions`` (batches of
  1,000 that commit);
- partitioning by month: a new partitioned table filled by ``INSERT ... SELECT`` and swapped in,
  in one transaction that first stops writes (``LOCK TABLE ... IN SHARE MODE``, or they would be
  lost) vs ``op.partition_existing_table`` (a validated CHECK, then one brief swap and ATTACH).

A writer thread (its own connection, one short transaction every ~5 ms, half single-row updates,
half inserts, each under ``lock_timeout = 5s``) runs for as long as the migration does; its
longest write and its failures are reported. Each case gets a fresh table on a scratch database
of ``DATABASE_URL``'s server. Not part of ``python -m bench``; the figures go into
docs/adopting.md and the report of issue 24.
"""

from __future__ import annotations

import argparse
import os
import random
import threading
import time
from collections.abc import Callable

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Engine, String, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import sa_patterns.alembic  # noqa: F401  (registers op.backfill_versions, op.partition_existing_table)
from sa_patterns import Versioned, versioning
from sa_patterns.database import normalise_url, scratch_database


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
            conn.exec_driver_sql(statement)  # type: ignore[attr-defined]


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


def write_tasks(conn: object, rng: random.Random, rows: int) -> None:
    if rng.random() < 0.5:
        conn.execute(text("UPDATE tasks SET touched = touched + 1 WHERE id = :i"), {"i": rng.randint(1, rows)})  # type: ignore[attr-defined]
    else:
        conn.execute(text("INSERT INTO tasks (title) VALUES ('w')"))  # type: ignore[attr-defined]


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


def write_events(conn: object, rng: random.Random, rows: int) -> None:
    if rng.random() < 0.5:
        conn.execute(text("UPDATE events SET touched = touched + 1 WHERE id = :i"), {"i": rng.randint(1, rows)})  # type: ignore[attr-defined]
    else:
        conn.execute(text("INSERT INTO events (body) VALUES ('w')"))  # type: ignore[attr-defined]


def measure(
    engine: Engine, rows: int, work: Callable[[Engine], None], write: Callable[[object, random.Random, int], None]
) -> dict[str, float]:
    stop = threading.Event()
    stats = {"writes": 0.0, "failed": 0.0, "longest": 0.0}

    def writer() -> None:
        rng = random.Random(1)
        with engine.connect() as conn:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    with conn.begin():
                        conn.execute(text("SET LOCAL lock_timeout = '5s'"))
                        write(conn, rng, rows)
                except Exception:  # a failed write is the finding
                    stats["failed"] += 1
                stats["longest"] = max(stats["longest"], time.perf_counter() - t0)
                stats["writes"] += 1
                time.sleep(0.005)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    work(engine)
    total = time.perf_counter() - t0
    stop.set()
    thread.join()
    return {**stats, "total": total}


CASES = (
    ("Versioned, naive", build_tasks, versioned_naive, write_tasks),
    ("op.backfill_versions", build_tasks, versioned_online, write_tasks),
    ("partition, naive copy", build_events, partition_naive, write_events),
    ("op.partition_existing_table", build_events, partition_online, write_events),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    server = normalise_url(os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    with scratch_database(server, prefix="sap_adopt_bench") as url:
        engine = create_engine(url)
        for name, build, work, write in CASES:
            build(engine, args.rows)
            found = measure(engine, args.rows, work, write)
            print(
                f"{name:28} {args.rows:>9,} rows: migration {found['total']:5.1f} s, longest write "
                f"{found['longest'] * 1000:6.0f} ms, {found['writes']:.0f} writes, {found['failed']:.0f} failed",
                flush=True,
            )
        engine.dispose()


if __name__ == "__main__":
    main()
