"""``python -m bench.adopt_search_stall [--rows 1000000]``: the longest stall of a writer while
``Searchable``'s ``search_vector`` is added to a populated table, by the naive transaction (the
generated column, a table rewrite, and ``CREATE INDEX`` under the same ACCESS EXCLUSIVE lock)
vs ``op.add_search_vector`` (a plain column kept by a trigger, filled in batches, then the GIN
index built ``CONCURRENTLY``), and the steady-state write cost of the two forms.

The stall cases are ``python -m bench.adoption``'s for search (its writer: inserts, updates of
the searched columns, updates of another column). The write cost compares two
tables of ``--steady-rows`` rows, one per form: 5,000 single-row UPDATE transactions of a
searched column, 5,000 of an unsearched one, and one bulk UPDATE of a searched column over the
whole table, each the median of 5 runs. Each case gets a fresh table on a scratch database of
``DATABASE_URL``'s server. Not part of ``python -m bench``; the figures go into docs/adopting.md
and the report of issue 24.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Connection, Engine, create_engine, text

import sa_patterns.alembic  # noqa: F401  (registers op.add_search_vector)
from bench.adoption import Case
from bench.adoption import main as adoption_main
from sa_patterns.database import normalise_url, scratch_database
from sa_patterns.search import search_vector_sql

WEIGHTS = (("title", "A"), ("body", "B"))
EXPRESSION = search_vector_sql(WEIGHTS, "english")
WORDS = [
    "postgres", "index", "vacuum", "lock", "tenant", "search", "vector", "trigger", "batch", "commit",
    "writer", "reader", "table", "column", "rewrite", "online", "migration", "stall", "query", "plan",
]


def build(engine: Engine, rows: int, table: str = "docs") -> None:
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {table}, sa_patterns_backfill"))
        conn.execute(text(f"DROP FUNCTION IF EXISTS {table}_search_vector()"))
        conn.execute(text(
            f"CREATE TABLE {table} (id bigserial PRIMARY KEY, title text, body text, touched int NOT NULL DEFAULT 0)"))
        # titles of 3 words, bodies of 24 (about 170 characters): a short article's summary
        conn.execute(text(
            f"INSERT INTO {table} (title, body) SELECT "
            "w[1 + g % 20] || ' ' || w[1 + (g / 20) % 20] || ' ' || g, "
            "(SELECT string_agg(w[1 + (g * 7 + i * 13) % 20], ' ') FROM generate_series(1, 24) i) "
            "FROM generate_series(1, :n) g, (SELECT CAST(:w AS text[]) AS w) v"), {"n": rows, "w": list(WORDS)})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"VACUUM ANALYZE {table}"))


def naive(engine: Engine) -> None:
    """What autogenerate wrote before: the generated column and its index, one transaction."""
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE docs ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ({EXPRESSION}) STORED"))
        conn.execute(text("CREATE INDEX ix_docs_search_vector ON docs USING gin (search_vector)"))


def online(engine: Engine) -> None:
    """What autogenerate writes now: the operation, then the index at the revision's end."""
    with engine.connect() as conn:
        op = Operations(MigrationContext.configure(conn))
        op.add_search_vector("docs", dict(WEIGHTS))
        with op.get_context().autocommit_block():
            conn.exec_driver_sql("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_docs_search_vector "
                                 "ON docs USING gin (search_vector)")


def write(conn: Connection, rng: random.Random, rows: int) -> None:
    """Inserts, updates of a searched column, updates of another column."""
    choice = rng.random()
    if choice < 0.4:
        conn.execute(text("INSERT INTO docs (title, body) VALUES (:t, :b)"),
                     {"t": f"new {rng.choice(WORDS)}", "b": " ".join(rng.choices(WORDS, k=24))})
    elif choice < 0.8:
        conn.execute(text("UPDATE docs SET title = :t WHERE id = :i"),
                     {"t": f"edited {rng.choice(WORDS)}", "i": rng.randint(1, rows)})
    else:
        conn.execute(text("UPDATE docs SET touched = touched + 1 WHERE id = :i"), {"i": rng.randint(1, rows)})


CASES = [
    Case("search", "naive transaction", build, naive, write, online=False),
    Case("search", "op.add_search_vector", build, online, write, online=True),
]


def write_cost(engine: Engine, rows: int, runs: int = 5, updates: int = 5000) -> None:
    """The steady-state cost of each form's writes, median of ``runs``."""
    build(engine, rows, "gen_docs")
    with engine.begin() as conn:
        conn.execute(text(
            f"ALTER TABLE gen_docs ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ({EXPRESSION}) STORED"))
        conn.execute(text("CREATE INDEX ON gen_docs USING gin (search_vector)"))
    build(engine, rows, "kept_docs")
    with engine.connect() as conn:
        Operations(MigrationContext.configure(conn)).add_search_vector("kept_docs", dict(WEIGHTS))
    with engine.begin() as conn:
        conn.execute(text("CREATE INDEX ON kept_docs USING gin (search_vector)"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE gen_docs, kept_docs"))

    def singles(table: str, column: str) -> float:
        rng = random.Random(2)
        ids = [rng.randint(1, rows) for _ in range(updates)]
        value = "title = title || ''" if column == "title" else "touched = touched + 1"
        with engine.connect() as conn:
            t0 = time.perf_counter()
            for i in ids:
                with conn.begin():
                    conn.execute(text(f"UPDATE {table} SET {value} WHERE id = :i"), {"i": i})
            return time.perf_counter() - t0

    def bulk(table: str) -> float:
        with engine.begin() as conn:
            t0 = time.perf_counter()
            conn.execute(text(f"UPDATE {table} SET title = title || ''"))
            return time.perf_counter() - t0

    cases: list[tuple[str, Callable[[str], float]]] = [
        (f"{updates} single-row UPDATEs of title", lambda t: singles(t, "title")),
        (f"{updates} single-row UPDATEs of touched", lambda t: singles(t, "touched")),
        (f"one UPDATE of title over {rows:,} rows", bulk),
    ]
    for name, case in cases:
        times: dict[str, list[float]] = {"gen_docs": [], "kept_docs": []}
        for _ in range(runs):  # the two forms interleaved: a shared machine's load hits both alike
            for table in times:
                times[table].append(case(table))
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.execute(text(f"VACUUM {table}"))
        found = {table: statistics.median(t) for table, t in times.items()}
        print(f"  {name:42} generated {found['gen_docs']:6.2f} s, trigger-kept {found['kept_docs']:6.2f} s: "
              f"{found['kept_docs'] / found['gen_docs']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--steady-rows", type=int, default=100_000)
    parser.add_argument("--skip-stall", action="store_true")
    parser.add_argument("--skip-steady", action="store_true")
    args = parser.parse_args()
    if not args.skip_stall:
        adoption_main(["--only", "search", "--rows", str(args.rows)])
    if not args.skip_steady:
        server = normalise_url(os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
        with scratch_database(server, prefix="sap_adopt_bench") as url:
            engine = create_engine(url)
            print(f"steady-state writes, {args.steady_rows:,} rows, median of 5:")
            write_cost(engine, args.steady_rows)
            engine.dispose()


if __name__ == "__main__":
    main()
