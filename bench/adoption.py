"""``python -m bench.adoption [--rows 1000000] [--reps 1] [--only tenancy search ...]``: every
pattern adopted on a populated table while a writer runs, the naive in-transaction migration
beside the toolkit's online one; rewrites the "adoption" section of ``bench/RESULTS.md`` (and of
``bench/results.json``).

Each ``bench/adopt_<pattern>_stall.py`` gives its ``CASES``: how to build the populated table, the
migration (naive, then online), and one write of the old application. A writer thread (its own
connection, one short transaction every ~5 ms, each under ``lock_timeout = 5s``) runs for as long
as the migration does; its longest write and its failures are what a user's traffic would feel.
Each case gets a fresh table on a scratch database of ``DATABASE_URL``'s server (the machine's
own when unset). Not part of ``python -m bench`` (stalls, not ratios; about 20 minutes at 1M rows).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text

#: the write the old application keeps doing: (connection in a transaction, rng, rows at start)
Write = Callable[[Connection, random.Random, int], None]

PATTERNS = ("soft_delete", "tenancy", "search", "encryption", "history", "views")


@dataclass(frozen=True, eq=False)
class Case:
    pattern: str
    label: str
    build: Callable[[Engine, int], None]
    migrate: Callable[[Engine], None]
    write: Write
    online: bool
    engine_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Stall:
    total: float
    longest: float
    writes: int
    failed: int


def measure(engine: Engine, rows: int, migrate: Callable[[Engine], None], write: Write) -> Stall:
    """Run ``migrate`` while a writer does ``write`` every ~5 ms; what the writer felt."""
    stop = threading.Event()
    seen = {"writes": 0, "failed": 0, "longest": 0.0}

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
                    seen["failed"] += 1
                seen["longest"] = max(seen["longest"], time.perf_counter() - t0)
                seen["writes"] += 1
                time.sleep(0.005)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    migrate(engine)
    total = time.perf_counter() - t0
    stop.set()
    thread.join()
    return Stall(total, float(seen["longest"]), int(seen["writes"]), int(seen["failed"]))


def cases(patterns: tuple[str, ...] = PATTERNS) -> list[Case]:
    found: list[Case] = []
    for pattern in patterns:
        found += importlib.import_module(f"bench.adopt_{pattern}_stall").CASES
    return found


def run_cases(url: Any, chosen: list[Case], rows: int, reps: int, echo: bool = True) -> dict[Case, list[Stall]]:
    results: dict[Case, list[Stall]] = {case: [] for case in chosen}
    for _ in range(reps):
        for case in chosen:
            engine = create_engine(url, **dict(case.engine_options))
            try:
                case.build(engine, rows)
                stall = measure(engine, rows, case.migrate, case.write)
            finally:
                engine.dispose()
            results[case].append(stall)
            if echo:
                print(f"{case.pattern:10} {case.label:32} {rows:>9,} rows: migration {stall.total:6.1f} s, "
                      f"longest write {stall.longest * 1000:6.0f} ms, {stall.writes} writes, "
                      f"{stall.failed} failed", flush=True)
    return results


def section(results: dict[Case, list[Stall]], rows: int) -> Any:
    """The figures as ``bench/results.json`` keeps them (medians in seconds), for the docs."""
    from bench.harness import Row, Section, Table

    def row(case: Case, values: list[float], unit: str = "s") -> Row:
        return Row(f"{case.pattern} {case.label}", statistics.median(values), min(values), max(values), unit=unit)

    return Section("adoption", f"Adopting a pattern on a populated table ({rows:,} rows, a writer throughout)", [
        Table("longest blocked write", [row(c, [s.longest for s in st]) for c, st in results.items()]),
        Table("migration time", [row(c, [s.total for s in st], "seconds") for c, st in results.items()]),
        Table("failed writes", [row(c, [float(s.failed) for s in st], "failed") for c, st in results.items()]),
    ])


def footnote(rows: int, reps: int) -> str:
    runs = "one run" if reps == 1 else f"median of {reps} runs (min – max)"
    return (
        f"_Run {datetime.date.today()}, {runs}: `python -m bench.adoption --rows {rows} --reps {reps}`. Each "
        "case is the naive in-transaction migration or the one autogenerate writes, while a writer runs "
        "one short transaction every ~5 ms (single-row updates and inserts, as the old application "
        "does), each under `lock_timeout = 5s`: a failed write waited past it. Target (issue 24): the "
        "longest blocked write ≤ 1 s for every online adoption._\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.adoption", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--only", nargs="*", choices=PATTERNS)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md as it is")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.__main__ import _record, _update
    from sa_patterns.database import scratch_database, server

    srv = server()
    try:
        with scratch_database(srv.url, prefix="sap_adopt_bench") as url:
            results = run_cases(url, cases(tuple(args.only or PATTERNS)), args.rows, args.reps)
    finally:
        if srv.stop is not None:
            srv.stop()
    body = section(results, args.rows).markdown() + "\n" + footnote(args.rows, args.reps)
    print(body)
    if not args.no_write and not args.only:
        _update("adoption", body)
        _record(section(results, args.rows), f"Run {datetime.date.today()}, {args.reps} run(s) of each case")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
