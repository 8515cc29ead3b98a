"""Batched backfills on a live table: a concurrent writer never fails, no lock is held between
batches, interrupted runs (an exception, a killed ``sa-patterns backfill``) resume and do every
row exactly once, a finished run touches nothing, composite keys, lock timeouts retried.

Backfills run as the owner role (it creates the state table); the concurrent writer is the app
role, as in production. What the database holds is read back with raw SQL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from alembic.runtime.migration import MigrationContext
from backfill_app import FILL, FILL_IN_PYTHON, doubled, items, metadata, pairs
from sqlalchemy import URL, Connection, Engine, MetaData, Table, create_engine, insert, select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sa_patterns import EncryptedString, Keyring, Versioned, actor_scope, all_tenants, tenant_scope
from sa_patterns.backfill import (
    STATE_TABLE,
    Backfill,
    BackfillError,
    Batch,
    Progress,
    backfill_status,
    remaining_rows,
    run_backfill,
    run_backfill_async,
    version_one,
)
from sa_patterns.errors import ConfigurationError
from sa_patterns.testing.logins import RunRoles

HERE = Path(__file__).resolve().parent
RING = Keyring({"k1": os.urandom(32)}, index_keys={"i1": os.urandom(32)})


class EncBase(DeclarativeBase):
    pass


class Customer(EncBase):
    """A plaintext column being encrypted: ``email_plain`` → ``email`` (with its blind index)."""

    __tablename__ = "bf_customers"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    email_plain: Mapped[str | None]
    email: Mapped[str | None] = mapped_column(EncryptedString(RING, blind_index=True))


class Doc(Versioned, EncBase):
    __tablename__ = "bf_docs"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    title: Mapped[str]


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> list[MetaData]:
    return [metadata, EncBase.metadata]


def seed(owner_engine: Engine, rows: int) -> None:
    with owner_engine.begin() as conn:
        conn.execute(text("TRUNCATE bf_items, bf_pairs"))
        conn.execute(text("DROP TABLE IF EXISTS sa_patterns_backfill"))
        conn.execute(
            text("INSERT INTO bf_items (id, val) SELECT g, g % 997 FROM generate_series(1, :n) g"), {"n": rows}
        )


def counts(engine: Engine) -> dict[str, int]:
    """Rows per backfill count (``done``), and rows whose value is wrong."""
    with engine.connect() as conn:
        found = {f"done={d}": n for d, n in conn.execute(text("SELECT done, count(*) FROM bf_items GROUP BY done"))}
        found["wrong"] = conn.execute(
            text("SELECT count(*) FROM bf_items WHERE done > 0 AND filled IS DISTINCT FROM val * 2")
        ).scalar_one()
    return found


def state(engine: Engine, name: str) -> tuple[Any, ...] | None:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT last_key, rows_done, batches, finished_at IS NOT NULL FROM sa_patterns_backfill WHERE name = :n"),
            {"n": name},
        ).first()
    return None if row is None else tuple(row)


def locks_of(conn: Connection, pid: int) -> list[tuple[str, str, str | None]]:
    return [
        (r[0], r[1], r[2])
        for r in conn.execute(
            text("SELECT locktype, mode, relation::regclass::text FROM pg_locks WHERE pid = :pid"), {"pid": pid}
        )
    ]


# -- a writer during the backfill --------------------------------------------------------------


class Writer(threading.Thread):
    """Updates random single rows in short transactions (lock_timeout 500ms: a lock held longer
    makes a statement fail) until stopped; keeps every error."""

    def __init__(self, engine: Engine, rows: int) -> None:
        super().__init__(daemon=True)
        self.engine, self.rows = engine, rows
        self.stop, self.started = threading.Event(), threading.Event()
        self.errors: list[BaseException] = []
        self.writes = 0
        self.longest = 0.0

    def run(self) -> None:
        rng = random.Random(7)
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                try:
                    with conn.begin():
                        conn.execute(text("SET LOCAL lock_timeout = '500ms'"))
                        conn.execute(
                            text("UPDATE bf_items SET touched = touched + 1 WHERE id = :id"),
                            {"id": rng.randint(1, self.rows)},
                        )
                except Exception as exc:  # every failure is a finding
                    self.errors.append(exc)
                self.longest = max(self.longest, time.perf_counter() - t0)
                self.writes += 1
                self.started.set()


def test_a_writer_never_fails_and_no_lock_is_held_between_batches(
    owner_engine: Engine, engine: Engine, superuser_engine: Engine
) -> None:
    rows = 20_000
    seed(owner_engine, rows)
    writer = Writer(engine, rows)
    steps: list[Progress] = []
    held: list[list[tuple[str, str, str | None]]] = []
    writes_during: list[int] = []
    with superuser_engine.connect() as probe:

        def progress(step: Progress) -> None:
            steps.append(step)
            held.append(locks_of(probe, step.backend_pid))
            probe.rollback()
            writes_during.append(writer.writes)

        writer.start()
        assert writer.started.wait(60)
        try:
            report = run_backfill(owner_engine, FILL, batch_size=500, progress=progress)
        finally:
            writer.stop.set()
            writer.join(60)

    assert writer.errors == []
    assert writes_during[-1] > writes_during[0]  # the writer wrote while the batches ran
    assert report.finished and report.rows == rows and report.batches == rows // 500
    assert counts(engine) == {"done=1": rows, "wrong": 0}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT sum(touched) FROM bf_items")).scalar_one() == writer.writes
    # sampled between batches, from another connection: the backfill's backend held nothing
    assert len(held) == report.batches + 1 and all(h == [] for h in held), [h for h in held if h][:3]
    assert [s.rows_done for s in steps] == [i * 500 for i in range(report.batches + 1)]
    assert steps[-1].estimate == rows and steps[-1].eta == 0.0
    final = state(owner_engine, FILL.name)
    assert final is not None and final[1:] == (rows, rows // 500, True)
    assert final[0] == [str(rows)]


def test_the_locks_sampled_between_batches_are_there_during_one(
    owner_engine: Engine, superuser_engine: Engine
) -> None:
    """The sampling above can see the backfill's locks: inside a batch they are in pg_locks."""
    seed(owner_engine, 50)
    seen: list[list[tuple[str, str, str | None]]] = []
    with superuser_engine.connect() as probe:

        def action(conn: Connection, batch: Batch) -> int:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            seen.append(locks_of(probe, pid))
            probe.rollback()
            return conn.execute(items.update().where(batch.condition).values(done=items.c.done + 1)).rowcount

        run_backfill(owner_engine, Backfill("bf_sampled", items, action=action), batch_size=20)
    assert len(seen) == 3
    assert all(("relation", "RowShareLock", "bf_items") in s for s in seen), seen


# -- interrupted runs ---------------------------------------------------------------------------


def test_an_exception_after_k_batches_resumes_with_every_row_done_once(owner_engine: Engine, engine: Engine) -> None:
    seed(owner_engine, 1000)
    calls = 0

    def failing(rows: Sequence[Any]) -> list[Mapping[str, Any]]:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise RuntimeError("the batch function broke")
        return doubled(rows)

    broken = Backfill(FILL_IN_PYTHON.name, items, rows=failing, read=["val", "done"], where=items.c.filled.is_(None))
    with pytest.raises(RuntimeError, match="broke"):
        run_backfill(owner_engine, broken, batch_size=100)
    assert counts(engine) == {"done=0": 700, "done=1": 300, "wrong": 0}
    assert state(owner_engine, FILL_IN_PYTHON.name) == (["300"], 300, 3, False)

    report = run_backfill(owner_engine, FILL_IN_PYTHON, batch_size=150)
    assert report.finished and report.rows == 700 and report.rows_total == 1000 and report.batches == 5
    assert counts(engine) == {"done=1": 1000, "wrong": 0}


def _owner_url(pg_url: URL, db_roles: RunRoles, db_schema: str, app: str) -> URL:
    return db_roles.url(pg_url, db_roles.owner).update_query_dict(
        {"options": f"-csearch_path={db_schema}", "application_name": app}
    )


def _cli(url: URL, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sa_patterns.cli", "backfill", *args, "--url", url.render_as_string(hide_password=False)],
        env={**os.environ, "PYTHONPATH": str(HERE)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _backends(engine: Engine, app: str, waiting: bool = False) -> int:
    with engine.connect() as probe:
        return int(probe.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"
            + (" AND wait_event_type = 'Lock'" if waiting else "")
        ), {"a": app}).scalar_one())


def test_a_killed_cli_run_resumes_and_status_says_where_it_stands(
    owner_engine: Engine, engine: Engine, superuser_engine: Engine, pg_url: URL, db_roles: RunRoles, db_schema: str
) -> None:
    seed(owner_engine, 1000)
    app = "sap_backfill_test"
    url = _owner_url(pg_url, db_roles, db_schema, app)
    with owner_engine.connect() as hold:
        # Row 301 held: the run commits 15 batches of 20, then waits inside the 16th; killing
        # it there is killing it half way, deterministically.
        hold.execute(text("SELECT id FROM bf_items WHERE id = 301 FOR UPDATE"))
        proc = _cli(url, "backfill_app:FILL", "--batch-size", "20", "--lock-timeout", "300")
        try:
            for _ in range(600):
                if _backends(superuser_engine, app, waiting=True) or proc.poll() is not None:
                    break
                time.sleep(0.1)
            assert _backends(superuser_engine, app, waiting=True) == 1, proc.communicate()
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        hold.rollback()
    for _ in range(600):  # the killed client's backend rolls back and goes away
        if not _backends(superuser_engine, app):
            break
        time.sleep(0.1)
    assert proc.returncode == -signal.SIGKILL
    assert counts(engine) == {"done=0": 700, "done=1": 300, "wrong": 0}
    assert state(owner_engine, "bf_items_filled") == (["300"], 300, 15, False)

    status = _cli(url, "backfill_app:FILL", "--status")
    out, err = status.communicate(timeout=120)
    assert status.returncode == 0, err
    assert out.startswith("bf_items_filled: in progress, 300 rows done in 15 batches, 700 left; last key (300)")

    resumed = _cli(url, "backfill_app:FILL", "--batch-size", "100", "--resume")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert out.startswith("bf_items_filled: 700 rows in 7 batches on bf_items (0 retries")
    assert "1000 in all, finished" in out
    assert counts(engine) == {"done=1": 1000, "wrong": 0}

    status = _cli(url, "backfill_app:FILL", "--status")
    out, _ = status.communicate(timeout=120)
    assert "bf_items_filled: finished at " in out and "1000 rows in 22 batches" in out
    again = _cli(url, "backfill_app:FILL")
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0 and "already finished (1000 rows); nothing to do" in out


def test_cli_failures_are_two_lines(pg_url: URL, db_roles: RunRoles, db_schema: str, owner_engine: Engine) -> None:
    seed(owner_engine, 10)
    url = _owner_url(pg_url, db_roles, db_schema, "sap_backfill_cli")
    proc = _cli(url, "backfill_app:nothing_here")
    out, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 2, err
    assert lines[0].startswith("sa-patterns backfill: backfill 'backfill_app:nothing_here': backfill_app has no")
    proc = _cli(url, "backfill_app:items")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "is Table, not a sa_patterns.backfill.Backfill" in err
    # a composite-key callable, from the CLI
    proc = _cli(url, "backfill_app:make_pairs_fill")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.startswith("bf_pairs_done: 0 rows in 0 batches"), err


# -- idempotence, composite keys, locks ---------------------------------------------------------


def xmins(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT xmin::text FROM bf_items ORDER BY id")).scalars())


def test_a_finished_backfill_touches_nothing_again(owner_engine: Engine, engine: Engine) -> None:
    seed(owner_engine, 300)
    assert run_backfill(owner_engine, FILL, batch_size=64).rows == 300
    before = xmins(engine)
    again = run_backfill(owner_engine, FILL, batch_size=64)
    assert again.already_finished and again.rows == 0 and again.rows_total == 300
    restarted = run_backfill(owner_engine, FILL, batch_size=64, restart=True)  # where= skips them
    assert restarted.finished and restarted.rows == 0 and restarted.batches == 0
    assert xmins(engine) == before
    assert counts(engine) == {"done=1": 300, "wrong": 0}
    assert remaining_rows(owner_engine, FILL) == 0


def test_composite_keys_walk_in_order_and_resume(owner_engine: Engine) -> None:
    seed(owner_engine, 0)
    codes = ["a", "B", "b", "a b", "é", "Z", "zz", "10", "9", "", "'; DROP TABLE x; --", "ü", "ä"]
    with owner_engine.begin() as conn:
        conn.execute(insert(pairs), [{"region": r, "code": f"{c}{i}"} for r in (3, 1, 2) for c in codes for i in range(20)])
    total = 3 * len(codes) * 20
    spec = Backfill("bf_pairs", pairs, values={"done": pairs.c.done + 1})
    first = run_backfill(owner_engine, spec, batch_size=7, max_batches=3)
    assert first.rows == 21 and not first.finished
    recorded = backfill_status(owner_engine, "bf_pairs")
    assert recorded is not None and recorded.finished_at is None and len(recorded.last_key or ()) == 2
    rest = run_backfill(owner_engine, spec, batch_size=50)
    assert rest.finished and rest.rows == total - 21
    with owner_engine.connect() as conn:
        done: dict[int, int] = dict(conn.execute(text("SELECT done, count(*) FROM bf_pairs GROUP BY done")).all())
    assert done == {1: total}


def test_a_batch_that_meets_a_held_row_is_retried_then_succeeds(
    owner_engine: Engine, engine: Engine, superuser_engine: Engine, pg_url: URL, db_roles: RunRoles, db_schema: str
) -> None:
    seed(owner_engine, 200)
    app = "sap_backfill_retry"
    runner = create_engine(_owner_url(pg_url, db_roles, db_schema, app))
    result: list[Any] = []
    try:
        with engine.connect() as hold:
            hold.execute(text("SELECT id FROM bf_items WHERE id = 150 FOR UPDATE"))
            thread = threading.Thread(
                target=lambda: result.append(
                    run_backfill(runner, FILL, batch_size=40, lock_timeout=0.2, retries=1000, backoff=0.05)
                ),
                daemon=True,
            )
            thread.start()
            # each try is a transaction of its own: two transactions seen waiting on the lock
            # mean the first timed out and was retried
            waits: set[Any] = set()
            for _ in range(3000):
                with superuser_engine.connect() as probe:
                    waits.update(probe.execute(text(
                        "SELECT xact_start FROM pg_stat_activity WHERE application_name = :a "
                        "AND wait_event_type = 'Lock'"), {"a": app}).scalars())
                if len(waits) >= 2 or not thread.is_alive():
                    break
                time.sleep(0.01)
            assert len(waits) >= 2
            assert state(owner_engine, FILL.name) == (["120"], 120, 3, False)  # the earlier batches
            hold.rollback()
        thread.join(120)
    finally:
        runner.dispose()
    report = result[0]
    assert report.finished and report.retries >= 1 and report.rows == 200
    assert counts(engine) == {"done=1": 200, "wrong": 0}


def test_a_batch_that_keeps_meeting_a_held_row_gives_up_clearly(owner_engine: Engine, engine: Engine) -> None:
    seed(owner_engine, 100)
    with engine.connect() as hold:
        hold.execute(text("SELECT id FROM bf_items WHERE id = 55 FOR UPDATE"))
        with pytest.raises(BackfillError, match=r"the batch after key \['50'\] failed 3 times .*lock timeout.* 50 rows are done"):
            run_backfill(owner_engine, FILL, batch_size=10, lock_timeout=0.05, retries=2, backoff=0.01)
        hold.rollback()
    assert counts(engine) == {"done=0": 50, "done=1": 50, "wrong": 0}
    assert state(owner_engine, FILL.name) == (["50"], 50, 5, False)


# -- inside a migration, and through the model's types -----------------------------------------


def test_from_a_migration_it_runs_in_an_autocommit_block_and_commits_each_batch(
    owner_engine: Engine, engine: Engine
) -> None:
    seed(owner_engine, 500)
    visible: list[tuple[int, int]] = []

    def progress(step: Progress) -> None:  # another connection sees each batch committed
        visible.append((step.rows_done, counts(engine).get("done=1", 0)))

    with owner_engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        with ctx.begin_transaction():
            conn.execute(text("SELECT 1"))
            with pytest.raises(ConfigurationError, match="autocommit_block"):
                run_backfill(conn, FILL)
            with ctx.autocommit_block():
                report = run_backfill(conn, FILL, batch_size=100, progress=progress)
    assert report.finished and report.batches == 5
    assert visible == [(n, n) for n in range(0, 501, 100)]
    assert counts(engine) == {"done=1": 500, "wrong": 0}


def test_autogenerate_never_offers_to_drop_the_progress_table(owner_engine: Engine) -> None:
    """No model declares sa_patterns_backfill: plain autogenerate would drop it, the toolkit's
    include_object leaves it alone."""
    from alembic.autogenerate import compare_metadata

    from sa_patterns.alembic import configure_kwargs

    seed(owner_engine, 10)
    run_backfill(owner_engine, FILL)

    def dropped(opts: dict[str, Any]) -> list[str]:
        with owner_engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn, opts=opts), metadata)
        return [d[1].name for d in diffs if isinstance(d, tuple) and d[0] == "remove_table"]

    assert STATE_TABLE in dropped({})
    assert STATE_TABLE not in dropped({"include_object": configure_kwargs()["include_object"]})


def test_encrypting_a_plaintext_column_goes_through_the_models_type(owner_engine: Engine) -> None:
    with owner_engine.begin() as conn:
        conn.execute(text("TRUNCATE bf_customers"))
        conn.execute(insert(Customer), [
            {"id": i, "email_plain": None if i % 10 == 0 else f"user{i}@example.com"} for i in range(1, 201)
        ])
    table = Customer.__table__
    assert isinstance(table, Table)
    encrypt = Backfill(
        "bf_customers_email",
        Customer,
        rows=lambda rows: [{"email": r["email_plain"]} for r in rows],
        read=["email_plain"],
        where=table.c.email.is_(None) & table.c.email_plain.is_not(None),
    )
    report = run_backfill(owner_engine, encrypt, batch_size=32)
    assert report.finished and report.rows == 180
    with owner_engine.connect() as conn:
        raw = conn.execute(text("SELECT id, email_plain, email, email_bidx FROM bf_customers ORDER BY id")).all()
        decrypted = dict(conn.execute(select(Customer.id, Customer.email)).all())
        found = conn.execute(select(Customer.id).where(Customer.email == "user17@example.com")).scalar_one()
    assert found == 17  # the blind index was filled alongside
    for id_, plain, sealed, bidx in raw:
        assert decrypted[id_] == plain
        assert (sealed is None) == (plain is None) == (bidx is None)
        if plain is not None:
            assert plain.encode() not in bytes(sealed)


def test_version_one_in_batches_for_rows_from_before_versioning(owner_engine: Engine) -> None:
    with owner_engine.begin() as conn:
        conn.execute(text("TRUNCATE bf_docs, bf_docs_history"))
        conn.execute(insert(Doc), [{"id": 1, "title": "versioned already"}])
        # rows written while the trigger was off, as before Versioned was added
        conn.execute(text("ALTER TABLE bf_docs DISABLE TRIGGER bf_docs_history_ins"))
        conn.execute(text("INSERT INTO bf_docs (id, title) SELECT g, 'old ' || g FROM generate_series(2, 100) g"))
        conn.execute(text("ALTER TABLE bf_docs ENABLE TRIGGER bf_docs_history_ins"))
    fill = version_one(Doc)
    first = run_backfill(owner_engine, fill, batch_size=7, max_batches=2)
    assert first.rows == 14 and not first.finished
    rest = run_backfill(owner_engine, fill, batch_size=30)
    assert rest.finished and rest.rows == 99 - 14
    with owner_engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT d.id, count(h.*), min(h.version), bool_and(h.valid_to IS NULL), bool_and(h.title = d.title) "
            "FROM bf_docs d LEFT JOIN bf_docs_history h ON h.id = d.id GROUP BY d.id ORDER BY d.id")).all()
    assert [tuple(r) for r in rows] == [(i, 1, 1, True, True) for i in range(1, 101)]
    assert run_backfill(owner_engine, fill, restart=True).rows == 0  # idempotent from scratch too


def test_statement_timeout_stops_the_run_and_says_to_use_smaller_batches(owner_engine: Engine) -> None:
    seed(owner_engine, 30)

    def slow(conn: Connection, batch: Batch) -> int:
        conn.execute(text("SELECT pg_sleep(2)"))
        return len(batch.keys)

    with pytest.raises(BackfillError, match="exceeded statement_timeout; run it again with a smaller batch size"):
        run_backfill(owner_engine, Backfill("bf_slow", items, action=slow), statement_timeout=0.05)
    assert state(owner_engine, "bf_slow") == (None, 0, 0, False)


def test_each_batch_carries_the_scope_and_its_timeouts(owner_engine: Engine) -> None:
    """Tenant, actor and all_tenants() reach each batch as the session sends them (a forced
    row-level security policy lets the owner through inside all_tenants())."""
    seed(owner_engine, 10)
    seen: list[tuple[str, ...]] = []

    def look(conn: Connection, batch: Batch) -> int:
        seen.append(tuple(conn.execute(text(
            "SELECT coalesce(current_setting('app.tenant_id', true), ''), "
            "coalesce(current_setting('app.actor_id', true), ''), "
            "coalesce(current_setting('app.all_tenants', true), ''), current_setting('lock_timeout'), "
            "current_setting('statement_timeout')")).one()))
        return len(batch.keys)

    with tenant_scope(7), actor_scope("migrator"):
        run_backfill(owner_engine, Backfill("bf_scope_t", items, action=look), batch_size=10, lock_timeout=2)
    with all_tenants():
        run_backfill(owner_engine, Backfill("bf_scope_all", items, action=look), statement_timeout=30)
    assert seen == [("7", "migrator", "", "2s", "0"), ("", "", "on", "500ms", "30s")]
    with owner_engine.connect() as conn:  # SET LOCAL: nothing outlives the batch's transaction
        assert conn.execute(text("SELECT current_setting('lock_timeout')")).scalar_one() == "0"


def test_a_key_must_be_unique_and_not_null() -> None:
    with pytest.raises(ConfigurationError, match="must be not-null columns covering the primary key or a unique"):
        Backfill("bf_bad", items, values={"filled": 1}, key=["val"])
    with pytest.raises(ConfigurationError, match="exactly one of values=, rows=, action="):
        Backfill("bf_bad", items)
    with pytest.raises(ConfigurationError, match="bf_items has no column 'nope'"):
        Backfill("bf_bad", items, values={"nope": 1})
    assert Backfill("bf_ok", pairs, values={"done": 1}, key=["code", "region"])._plan.key == [pairs.c.code, pairs.c.region]


async def test_async_runs_batches_and_resumes(owner_engine: Engine, engine: Engine, db_schema: str) -> None:
    seed(owner_engine, 400)
    aengine = create_async_engine(owner_engine.url, connect_args={"options": f"-csearch_path={db_schema}"})
    try:
        first = await run_backfill_async(aengine, FILL, batch_size=50, max_batches=3)
        assert first.rows == 150 and not first.finished
        assert state(owner_engine, FILL.name) == (["150"], 150, 3, False)
        rest = await run_backfill_async(aengine, FILL, batch_size=100, pause=0.01)
        assert rest.finished and rest.rows == 250 and rest.rows_total == 400
    finally:
        await aengine.dispose()
    assert counts(engine) == {"done=1": 400, "wrong": 0}


def test_the_app_role_cannot_create_the_state_table_and_is_told_to_use_the_owner(
    owner_engine: Engine, engine: Engine
) -> None:
    seed(owner_engine, 10)  # drops the state table
    with pytest.raises(ConfigurationError, match="run backfills as the owner role"):
        run_backfill(engine, FILL)
    assert counts(engine) == {"done=0": 10, "wrong": 0}
