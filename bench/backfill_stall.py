"""``python -m bench.backfill_stall [--rows 200000] [--batch-size 1000]``: the longest stall of a
single-row writer while a table is backfilled by one ``UPDATE`` vs by
:func:`sa_patterns.backfill.run_backfill`.

A writer thread updates a random row (its own transaction each, one every ~2 ms) for as long as
the backfill runs; each write's latency is recorded. Each case gets a freshly built table on a
scratch database of ``DATABASE_URL``'s server. Not part of ``python -m bench`` (it measures
stalls, not throughput ratios); the figures go into the report of issue 24.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time
from collections.abc import Callable

from sqlalchemy import BigInteger, Column, Engine, Integer, MetaData, Table, create_engine, text

from sa_patterns.backfill import Backfill, run_backfill
from sa_patterns.database import normalise_url, scratch_database

metadata = MetaData()
bench = Table(
    "bf_bench",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("val", Integer, nullable=False),
    Column("filled", Integer),
    Column("touched", Integer, nullable=False, server_default="0"),
)
FILL = Backfill("bf_bench_fill", bench, values={"filled": bench.c.val * 2}, where=bench.c.filled.is_(None))


def build(engine: Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bf_bench, sa_patterns_backfill"))
        metadata.create_all(conn)
        conn.execute(text("INSERT INTO bf_bench (id, val) SELECT g, g % 997 FROM generate_series(1, :n) g"), {"n": rows})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE bf_bench"))


def measure(engine: Engine, rows: int, work: Callable[[], None]) -> dict[str, float]:
    latencies: list[float] = []
    stop = threading.Event()

    def writer() -> None:
        rng = random.Random(1)
        with engine.connect() as conn:
            while not stop.is_set():
                t0 = time.perf_counter()
                with conn.begin():
                    conn.execute(text("UPDATE bf_bench SET touched = touched + 1 WHERE id = :id"), {"id": rng.randint(1, rows)})
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.002)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(0.5)  # the writer's steady state before the backfill
    before = len(latencies)
    t0 = time.perf_counter()
    work()
    total = time.perf_counter() - t0
    stop.set()
    thread.join()
    during = latencies[before:]
    with engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM bf_bench WHERE filled IS DISTINCT FROM val * 2")).scalar_one()
    assert left == 0, f"{left} rows not backfilled"
    return {
        "seconds": total,
        "writes": len(during),
        "longest_stall_ms": max(during) * 1000,
        "p99_ms": statistics.quantiles(during, n=100)[98] * 1000 if len(during) > 100 else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    server = normalise_url(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    with scratch_database(server, prefix="sap_bench_backfill") as url:
        engine = create_engine(url, pool_size=4)
        try:
            results = {}
            build(engine, args.rows)

            def one_update() -> None:
                with engine.begin() as conn:
                    conn.execute(text("UPDATE bf_bench SET filled = val * 2 WHERE filled IS NULL"))

            results["one UPDATE"] = measure(engine, args.rows, one_update)
            build(engine, args.rows)
            results[f"run_backfill (batch {args.batch_size})"] = measure(
                engine, args.rows, lambda: run_backfill(engine, FILL, batch_size=args.batch_size) and None
            )
        finally:
            engine.dispose()
    print(f"{args.rows:,} rows; a writer updating one random row every ~2 ms")
    print(f"{'':32} {'total s':>8} {'writes':>7} {'longest stall ms':>17} {'p99 ms':>8}")
    for name, r in results.items():
        print(f"{name:32} {r['seconds']:8.2f} {r['writes']:7.0f} {r['longest_stall_ms']:17.1f} {r['p99_ms']:8.1f}")


if __name__ == "__main__":
    main()
