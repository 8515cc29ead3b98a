"""``python -m bench.adopt_tenancy_stall [--rows 1000000]``: the longest stall of a writer while
``tenant_id`` is added to a populated table and filled from each row's parent, by the naive
transaction (ADD COLUMN, one UPDATE, SET NOT NULL, CREATE INDEX) vs ``op.add_tenant_column``.

A writer thread (its own connection, one short transaction every ~5 ms, half single-row updates,
half inserts without a tenant as the old code does, each under ``lock_timeout = 5s``) runs for as
long as the migration does; its longest write and its failures are reported. Each case gets a
fresh table on a scratch database of ``DATABASE_URL``'s server. Not part of ``python -m bench``;
the figures go into docs/adopting.md and the report of issue 24.
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
from sqlalchemy import Engine, create_engine, text

import sa_patterns.alembic  # noqa: F401  (registers op.add_tenant_column)
from sa_patterns.database import normalise_url, scratch_database
from sa_patterns.tenancy.adopt import tenant_from

PARENTS = 1000


def build(engine: Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS tasks, projects, sa_patterns_backfill"))
        conn.execute(text("CREATE TABLE projects (id int PRIMARY KEY, tenant_id bigint NOT NULL)"))
        conn.execute(text(
            "CREATE TABLE tasks (id bigserial PRIMARY KEY, project_id int NOT NULL, title text, "
            "touched int NOT NULL DEFAULT 0)"))
        conn.execute(text("INSERT INTO projects SELECT g, 1 + g % 50 FROM generate_series(1, :n) g"), {"n": PARENTS})
        conn.execute(text(
            "INSERT INTO tasks (project_id, title) SELECT 1 + g % :p, 't' || g FROM generate_series(1, :n) g"),
            {"n": rows, "p": PARENTS})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE tasks"))


def naive(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE tasks ADD COLUMN tenant_id bigint"))
        conn.execute(text("UPDATE tasks t SET tenant_id = p.tenant_id FROM projects p WHERE p.id = t.project_id"))
        conn.execute(text("ALTER TABLE tasks ALTER COLUMN tenant_id SET NOT NULL"))
        conn.execute(text("CREATE INDEX ix_tasks_tenant_id ON tasks (tenant_id)"))


def online(engine: Engine) -> None:
    with engine.connect() as conn:
        op = Operations(MigrationContext.configure(conn))
        op.add_tenant_column("tasks", source=tenant_from("projects", on="project_id"), keep_trigger=True)
        op.drop_tenant_fill("tasks")  # as the revision's last operation
        conn.commit()


def measure(engine: Engine, rows: int, work: Callable[[Engine], None]) -> dict[str, float]:
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
                        if rng.random() < 0.5:
                            conn.execute(text("UPDATE tasks SET touched = touched + 1 WHERE id = :i"),
                                         {"i": rng.randint(1, rows)})
                        else:  # the old code: no tenant (the statement is skipped once it exists NOT NULL)
                            conn.execute(text(
                                "INSERT INTO tasks (project_id, title) SELECT :p, 'w' WHERE NOT EXISTS ("
                                "SELECT FROM pg_attribute WHERE attrelid = 'tasks'::regclass "
                                "AND attname = 'tenant_id' AND attnotnull AND NOT EXISTS ("
                                "SELECT FROM pg_trigger WHERE tgname = 'tasks_tenant_id_fill'))"),
                                {"p": rng.randint(1, PARENTS)})
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    server = normalise_url(os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    with scratch_database(server, prefix="sap_adopt_bench") as url:
        engine = create_engine(url)
        for name, work in (("naive transaction", naive), ("op.add_tenant_column", online)):
            build(engine, args.rows)
            found = measure(engine, args.rows, work)
            print(
                f"{name:22} {args.rows:>9,} rows: migration {found['total']:5.1f} s, longest write "
                f"{found['longest'] * 1000:6.0f} ms, {found['writes']:.0f} writes, {found['failed']:.0f} failed"
            )
        engine.dispose()


if __name__ == "__main__":
    main()
