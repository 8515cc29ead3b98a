"""``python -m bench.instructions``: the audit triggers' server cost in CPU instructions, counted by
callgrind, repeatable where wall time on a shared machine is not.

Wall-clock ratios (``python -m bench --only audit``) move by a third from one run to the next on
a noisy 2-core machine. Instructions do not depend on what else runs. This script builds a scratch
cluster with the machine's PostgreSQL server binaries, creates the audit benchmark's variants
(plain table, trigger mechanism only, hand-written floor, ``Audited`` into a PK-only log and into
the default log, a row-level trigger doing ``Audited``'s work per row, postgresql-audit), a constant entry of the log's full shape and the same table
``Versioned``, then runs PostgreSQL in single-user mode under ``valgrind --tool=callgrind`` on a
``DO`` loop of single-row statements: the count for 1,100 statements minus the count for 100,
divided by 1,000, is one statement's cost without start-up. Each statement's transaction is
rolled back and its tables vacuumed first, so every run starts from the same pages. A last table
prices one small jsonb value, the unit of an entry's cost in bulk work.

Needs ``valgrind`` and PostgreSQL server binaries (``--pg-bin``, else the newest
``/usr/lib/postgresql/*/bin``). As root it runs them as ``postgres`` through ``runuser``.
Writes the section "audit_instructions" of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

import sa_patterns
from bench.bench_audit import article_with_pk_only_log
from bench.harness import Row, Section, Table

# The log row Audited writes, with constant values: the mechanism plus the width of a real entry
# (key, old and new values, changed columns, context), without pairing rows or building values.
# Between it and "Audited, log with its primary key only" is the trigger's own work.
WideArticle = article_with_pk_only_log("wide")


_WIDE_DDL = """
CREATE FUNCTION wide.audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  sa_table text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
  sa_actor text := nullif(current_setting('app.actor_id', true), '');
  sa_request jsonb := nullif(current_setting('app.request', true), '')::jsonb;
  sa_xid bigint := pg_current_xact_id()::text::bigint;
  sa_at timestamptz := clock_timestamp();
BEGIN
  INSERT INTO wide.audit_log (table_name, operation, primary_key, old_row, new_row,
    changed_columns, actor_id, request, transaction_id, tenant_id, recorded_at)
  SELECT sa_table, 'UPDATE', '{"id": 1}', '{"price": 1}', '{"price": 2}', '["price"]',
         sa_actor, sa_request, sa_xid, NULL, sa_at
  FROM sa_new;
  RETURN NULL;
END $$;
CREATE TRIGGER upd AFTER UPDATE ON wide.article REFERENCING NEW TABLE AS sa_new
  FOR EACH STATEMENT EXECUTE FUNCTION wide.audit();
"""


ROWS = 2_000
LOW, HIGH = 100, 1_100
# name -> (table, its log tables): vacuumed before every run
VARIANTS = {
    "plain SQLAlchemy": ("plain.article", []),
    "trigger mechanism only (constant row)": ("minimal.article", ["minimal.audit_log"]),
    "constant entry, the log's full shape (UPDATE only)": ("wide.article", ["wide.audit_log"]),
    "hand-written trigger (floor)": ("floor.article", ["floor.audit_log"]),
    "Audited, log with its primary key only": ("pkonly.article", ["pkonly.audit_log"]),
    "row-level trigger, Audited's work per row (PK-only log)": ("rowlevel.article", ["rowlevel.audit_log"]),
    "sa_patterns Audited": ("sap.article", ["public.audit_log"]),
    "postgresql-audit": ("public.article_pga", ["pga.activity", "pga.transaction"]),
    "sa_patterns Versioned (history table, no log)": ("ver.article", ["ver.article_history"]),
}
#: variants with an UPDATE trigger only: left out of the INSERT and DELETE tables
UPDATE_ONLY = {"constant entry, the log's full shape (UPDATE only)"}
#: one small jsonb value built per row, as the trigger builds an entry's key and values
VALUES = {
    "its JSON text alone (concatenation)": "'{\"price\":' || g::text || '}'",
    "the text cast to json (validated, kept as text)": "('{\"price\":' || g::text || '}')::json",
    "the text cast to jsonb (what Audited does)": "('{\"price\":' || g::text || '}')::jsonb",
    "jsonb_build_object('price', g)": "jsonb_build_object('price', g)",
}
STATEMENTS = {
    "single-row INSERT": "INSERT INTO {t} (id, title, body, price) "
    "VALUES (100000 + i, 'title', repeat('body text ', 20), i)",
    "single-row UPDATE of one column": "UPDATE {t} SET price = price + 1 WHERE id = 1 + (i % 2000)",
    "single-row DELETE": "DELETE FROM {t} WHERE id = 1 + i",
}


def _pg_bin(given: str | None) -> Path:
    if given:
        return Path(given)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not found:
        raise SystemExit("no PostgreSQL server binaries: pass --pg-bin DIR (initdb, pg_ctl, postgres)")
    return found[-1]


def _as_server_user(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _build(bin_dir: Path, data: Path, work: Path) -> None:
    """A scratch cluster with the benchmark's variants and 2,000 rows in each table."""
    from bench import bench_audit

    subprocess.run(_as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                                    "-A", "trust", "--no-sync"]), check=True, capture_output=True)
    port = _free_port()
    ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(work / "server.log")]
    subprocess.run(_as_server_user([*ctl, "-o", f"-p {port} -k {work} -c fsync=off", "start"]),
                   check=True, capture_output=True)
    try:
        engine = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres")
        with engine.begin() as conn:
            bench_audit.create_variants(conn)
            conn.execute(sa.text("CREATE SCHEMA wide"))
            sa_patterns.create_all(conn, WideArticle.metadata)
            conn.exec_driver_sql(_WIDE_DDL)
        bench_audit._setup_pga(engine)
        with engine.begin() as conn:
            for table, _logs in VARIANTS.values():
                conn.execute(sa.text(
                    f"INSERT INTO {table} (id, title, body, price) SELECT g, 'title ' || g, "
                    "repeat('body text ', 20), g FROM generate_series(1, :n) g"), {"n": ROWS})
        engine.dispose()
    finally:
        subprocess.run(_as_server_user([*ctl, "stop"]), check=True, capture_output=True)


def _instructions(bin_dir: Path, data: Path, work: Path, script: str) -> int:
    """Instructions of one single-user session running ``script`` (statements separated by a
    blank line: ``postgres --single -j``)."""
    out = work / "callgrind.out"
    with tempfile.TemporaryFile("w+") as stdin:
        stdin.write(script)
        stdin.seek(0)
        done = subprocess.run(
            _as_server_user(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                             str(bin_dir / "postgres"), "--single", "-j", "-D", str(data), "postgres"]),
            stdin=stdin, capture_output=True, text=True, check=True,
        )
    if "ERROR:" in done.stdout + done.stderr:
        raise RuntimeError((done.stdout + done.stderr)[-2000:])
    match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
    if match is None:
        raise RuntimeError("callgrind wrote no total")
    return int(match.group(1))


def _script(table: str, logs: list[str], body: str) -> str:
    vacuum = "".join(f"VACUUM {t};\n\n" for t in (table, *logs))
    return f"{vacuum}BEGIN;\n{body}\nROLLBACK;\n"


def _per_unit(run: Callable[[str], int], script: Callable[[int], str], low: int, high: int) -> float:
    """Instructions per unit of work: ``script(high)`` minus ``script(low)``, so that start-up
    and set-up cancel out."""
    return (run(script(high)) - run(script(low))) / (high - low)


def _per_statement(run: Callable[[str], int], table: str, logs: list[str], statement: str) -> float:
    def loop(n: int) -> str:
        body = f"DO $$ BEGIN FOR i IN 1..{n} LOOP {statement.format(t=table)}; END LOOP; END $$;"
        return _script(table, logs, body)

    return _per_unit(run, loop, LOW, HIGH)


def _per_bulk(run: Callable[[str], int], table: str, logs: list[str]) -> float:
    def statements(n: int) -> str:
        return _script(table, logs, "\n".join(f"UPDATE {table} SET price = price + 1;" for _ in range(n)))

    return _per_unit(run, statements, 1, 3)


def _per_value(run: Callable[[str], int], expr: str) -> float:
    """Instructions per row of ``SELECT expr FROM generate_series(...)``."""

    def query(n: int) -> str:
        return f"SELECT count(v) FROM (SELECT {expr} AS v FROM generate_series(1, {n}) g OFFSET 0) s;\n"

    return _per_unit(run, query, ROWS, 10 * ROWS)


def measure(bin_dir: Path, reps: int) -> Section:
    section = Section("audit_instructions", "Audit triggers: server instructions per statement (callgrind)")
    work = Path(tempfile.mkdtemp(prefix="sap_instructions_"))
    os.chmod(work, 0o777)  # the server user writes its socket and callgrind's file here
    data = work / "data"
    try:
        _build(bin_dir, data, work)

        def run(script: str) -> int:
            return _instructions(bin_dir, data, work, script)

        cases: dict[str, Callable[[str, list[str]], float]] = {
            title: (lambda t, logs, st=statement: _per_statement(run, t, logs, st))
            for title, statement in STATEMENTS.items()
        }
        cases[f"UPDATE of all {ROWS:,} rows"] = lambda t, logs: _per_bulk(run, t, logs)
        for title, case in cases.items():
            samples = {
                name: [case(table, logs) for _ in range(reps)]
                for name, (table, logs) in VARIANTS.items()
                if "UPDATE" in title or name not in UPDATE_ONLY
            }
            base = statistics.median(samples["plain SQLAlchemy"])
            rows = [
                Row(name, statistics.median(v), min(v), max(v), statistics.median(v) / base, unit="instr")
                for name, v in samples.items()
            ]
            section.tables.append(Table(title, rows, "plain SQLAlchemy"))
            print(f"[instructions] {title}", file=sys.stderr, flush=True)
        values = {name: [_per_value(run, expr) for _ in range(reps)] for name, expr in VALUES.items()}
        text_alone = statistics.median(next(iter(values.values())))
        section.tables.append(Table(
            'one small jsonb value, {"price": n}, built per row (ratio: against its text alone)',
            [Row(name, statistics.median(v), min(v), max(v), statistics.median(v) / text_alone, unit="instr")
             for name, v in values.items()],
        ))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    section.notes = [
        f"Instructions executed by the PostgreSQL backend per statement (median of {reps} counts; "
        f"{HIGH:,} statements minus {LOW:,} in one DO block, the table holding {ROWS:,} rows), "
        "ratio against the plain table. The client is out of the loop: this is the database's "
        "share of the ORM phases' wall time, and the part a trigger can change.",
        "'plain SQLAlchemy' is the table without a trigger (the same statements as the ORM sends); "
        "the other variants are those of the audit section above.",
        "'constant entry, the log's full shape' (UPDATE only) writes, per updated row, an entry as "
        "wide as Audited's (key, old and new values, changed columns, context) with constant "
        "values into a log with only its primary key: the mechanism plus the entry's width. "
        "Between it and 'Audited, log with its primary key only' is the trigger's own work: "
        "pairing old and new rows, comparing them and building the entry's four jsonb values.",
        "The last table is the price of one such value: an entry of a one-column UPDATE holds "
        "four (key, old values, new values, changed columns).",
    ]
    return section


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions")
    parser.add_argument("--pg-bin", help="directory of initdb, pg_ctl and postgres")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    section = measure(_pg_bin(args.pg_bin), args.reps)
    from bench.__main__ import _record, _update

    _update(section.name, section.markdown())
    _record(section, f"{datetime.date.today()}, callgrind, {args.reps} repetitions")
    print(section.markdown(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
