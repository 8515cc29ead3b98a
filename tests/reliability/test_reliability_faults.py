"""Faults against the real server: a backend killed mid-statement (audited bulk update, key
rotation batch, materialized-view refresh), statement and lock timeouts, a deadlock. After
each, the data is fully before or fully after, the operation re-runs to completion, and the
caller sees a clear error."""

from __future__ import annotations

import base64
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import URL, Engine, Index, create_engine, exc, func, select, text, true
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import sa_patterns
from sa_patterns import Audited, EncryptedString, Keyring, MaterializedView
from sa_patterns.encryption import generate_key
from sa_patterns.encryption.rotation import rotate_keys
from sa_patterns.encryption.sealer import key_id_of
from sa_patterns.transactions import transaction

ROWS = 60_000
KEYS = {"k1": generate_key(), "k2": generate_key()}


def _ring(*ids: str, active: str) -> Keyring:
    return Keyring({i: base64.b64decode(KEYS[i]) for i in ids}, active=active)


class Base(DeclarativeBase):
    pass


class Ledger(Audited, Base):
    __tablename__ = "fault_ledger"
    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int]


class Secret(Base):
    __tablename__ = "fault_secrets"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[str] = mapped_column(EncryptedString(_ring("k1", active="k1")))


class Rotation(DeclarativeBase):
    """The same table seen by the deployment after the new key k2 became active."""


class RotatedSecret(Rotation):
    __tablename__ = "fault_secrets"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[str] = mapped_column(EncryptedString(_ring("k1", "k2", active="k2")))


_fifty = func.generate_series(1, 50).table_valued("g")


class Heavy(MaterializedView, Base):
    """Slow to refresh on purpose: counts every ledger row fifty times."""

    __tablename__ = "fault_heavy"
    __select__ = select(func.count().label("n")).select_from(Ledger.__table__.join(_fifty, true()))
    __table_args__ = (Index("fault_heavy_n", "n", unique=True),)
    n: Mapped[int] = mapped_column(primary_key=True)


@pytest.fixture(scope="module")
def db(pg_url: URL, db_schema: str) -> Iterator[Engine]:
    # pre-ping: a pooled connection whose backend a test killed is replaced, not reused
    engine = create_engine(pg_url.update_query_dict({"options": f"-csearch_path={db_schema},public"}), pool_pre_ping=True)
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)
    yield engine
    engine.dispose()


_HUNTER = """
import sys, time, psycopg
dsn, like = sys.argv[1], sys.argv[2]
with psycopg.connect(dsn, autocommit=True) as conn:
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE state IN ('active', 'idle in transaction') "
            "AND pid <> pg_backend_pid() AND datname = current_database() AND query ILIKE %s LIMIT 1",
            (like,),
        ).fetchone()
        if row:
            time.sleep(0.01)  # well inside the statement or the batch
            conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
            print(row[0], flush=True)
            break
        time.sleep(0.001)
"""


class kill_when_running:
    """Terminate the first other backend inside a transaction whose statement matches ``like``
    (running it, or between the statements of a batch: ``idle in transaction``). The hunter is
    a separate process, so the GIL of a CPU-busy test cannot starve it."""

    def __init__(self, engine: Engine, like: str) -> None:
        url = engine.url.set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        self.proc = subprocess.Popen([sys.executable, "-c", _HUNTER, dsn, like], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"  # polling before the victim starts

    def killed(self) -> list[int]:
        out, _ = self.proc.communicate(timeout=60)
        return [int(x) for x in out.split()]


_since = {"id": 0}


def _audit_updates(engine: Engine) -> int:
    """UPDATE entries for the ledger since the last reset (the log is append-only)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM audit_log WHERE table_name LIKE '%fault_ledger' AND operation = 'UPDATE' AND id > :since"),
                {"since": _since["id"]},
            ).scalar_one()
        )


def _reset_ledger(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE fault_ledger"))
        conn.execute(text("INSERT INTO fault_ledger (id, n) SELECT g, 0 FROM generate_series(1, :n) g"), {"n": ROWS})
        _since["id"] = conn.execute(text("SELECT coalesce(max(id), 0) FROM audit_log")).scalar_one()


def test_killed_audited_bulk_update_is_all_or_nothing(db: Engine) -> None:
    _reset_ledger(db)
    Session = sa_patterns.install(sessionmaker(db))
    hunter = kill_when_running(db, "UPDATE fault_ledger%")
    with pytest.raises(exc.OperationalError), sa_patterns.actor_scope("bulk"), Session.begin() as s:
        s.execute(text("UPDATE fault_ledger SET n = n + 1"))
    assert hunter.killed(), "the update was running when its backend was terminated"
    with db.connect() as conn:
        assert conn.execute(text("SELECT sum(n) FROM fault_ledger")).scalar() == 0
    assert _audit_updates(db) == 0, "no partial audit"
    # re-run to completion: exactly one entry per changed row, with the actor
    with sa_patterns.actor_scope("bulk"), Session.begin() as s:
        s.execute(text("UPDATE fault_ledger SET n = n + 1"))
    assert _audit_updates(db) == ROWS
    with db.connect() as conn:
        actors = conn.execute(
            text("SELECT DISTINCT actor_id FROM audit_log WHERE table_name LIKE '%fault_ledger' AND operation = 'UPDATE' AND id > :since"),
            {"since": _since["id"]},
        ).scalars().all()
    assert actors == ["bulk"]


def test_statement_timeout_leaves_no_partial_audit(db: Engine) -> None:
    _reset_ledger(db)
    with db.connect() as conn, pytest.raises(exc.OperationalError, match="statement timeout"), conn.begin():
        conn.execute(text("SET LOCAL statement_timeout = '30ms'"))
        conn.execute(text("UPDATE fault_ledger SET n = n + 1"))
    assert _audit_updates(db) == 0
    with db.connect() as conn:
        assert conn.execute(text("SELECT sum(n) FROM fault_ledger")).scalar() == 0


def test_lock_timeout_is_a_clear_error_and_writes_nothing(db: Engine) -> None:
    _reset_ledger(db)
    holder = db.connect()
    holder.begin()
    holder.execute(text("UPDATE fault_ledger SET n = n WHERE id = 1"))  # row lock, no change
    try:
        with db.connect() as conn, pytest.raises(exc.OperationalError, match="lock timeout"), conn.begin():
            conn.execute(text("SET LOCAL lock_timeout = '50ms'"))
            conn.execute(text("UPDATE fault_ledger SET n = n + 1 WHERE id IN (2, 1)"))
    finally:
        holder.rollback()
        holder.close()
    assert _audit_updates(db) == 0


def test_deadlock_victim_is_retried_whole(db: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sa_patterns.transactions")
    _reset_ledger(db)
    Session = sa_patterns.install(sessionmaker(db))
    barrier = threading.Barrier(2)
    attempts = {"a": 0, "b": 0}
    errors: list[BaseException] = []

    def writer(name: str, first: int, second: int) -> None:
        @transaction(Session, isolation_level=None, retries=3)
        def unit(s: Session) -> None:
            attempts[name] += 1
            s.execute(text("UPDATE fault_ledger SET n = n + 1 WHERE id = :i"), {"i": first})
            if attempts[name] == 1:
                barrier.wait(timeout=10)  # both hold their first row: a real deadlock follows
            s.execute(text("UPDATE fault_ledger SET n = n + 1 WHERE id = :i"), {"i": second})

        try:
            unit()
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=("a", 1, 2)), threading.Thread(target=writer, args=("b", 2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # A victim's retry may race the winner for the row it released and deadlock again: the
    # number of re-runs varies, but each one followed a 40P01 and each unit landed once.
    retries = [r.getMessage() for r in caplog.records if r.name == "sa_patterns.transactions"]
    assert retries and all(m.endswith("SQLSTATE 40P01") for m in retries), retries
    assert sum(attempts.values()) == 2 + len(retries)
    with db.connect() as conn:
        assert dict(conn.execute(text("SELECT id, n FROM fault_ledger WHERE id IN (1, 2)")).all()) == {1: 2, 2: 2}
    assert _audit_updates(db) == 4, "the victim's rolled-back attempt left no audit rows"


def test_killed_rotation_batch_loses_nothing(db: Engine) -> None:
    with Session(db) as s:
        s.execute(text("TRUNCATE fault_secrets"))
        s.add_all([Secret(id=i, value=f"secret {i}") for i in range(1, 20_001)])
        s.commit()
    hunter = kill_when_running(db, "UPDATE fault_secrets%")
    with pytest.raises(exc.OperationalError):
        rotate_keys(db, RotatedSecret, batch_size=4_000)
    assert hunter.killed()

    def key_ids() -> dict[str, int]:
        with db.connect() as conn:
            raw = conn.execute(text("SELECT value FROM fault_secrets")).scalars().all()
        counts: dict[str, int] = {}
        for value in raw:
            kid = key_id_of(bytes(value))[0]
            counts[kid] = counts.get(kid, 0) + 1
        return counts

    counts = key_ids()
    assert set(counts) <= {"k1", "k2"} and sum(counts.values()) == 20_000
    assert counts.get("k2", 0) % 4_000 == 0, "batches are whole: fully before or fully after"
    with Session(db) as s:  # every row still decrypts
        assert len([v for v in s.scalars(select(RotatedSecret.value)) if v.startswith("secret ")]) == 20_000
    report = rotate_keys(db, RotatedSecret, batch_size=4_000)  # resume
    assert key_ids() == {"k2": 20_000}
    assert report.rows == 20_000 - counts.get("k2", 0)


def test_killed_matview_refresh_keeps_the_old_contents(db: Engine) -> None:
    Session = sa_patterns.install(sessionmaker(db))
    with db.begin() as conn:
        conn.execute(text("TRUNCATE fault_ledger"))
    with Session.begin() as s:
        Heavy.refresh(s)
    _reset_ledger(db)
    hunter = kill_when_running(db, "REFRESH MATERIALIZED VIEW%")
    with pytest.raises(exc.OperationalError), Session.begin() as s:
        Heavy.refresh(s, concurrently=True)
    assert hunter.killed()
    with Session() as s:  # still readable, still the previous state
        assert s.scalars(select(Heavy.n)).all() == [0]
    with Session.begin() as s:  # re-runs to completion
        Heavy.refresh(s, concurrently=True)
    with Session() as s:
        assert s.scalars(select(Heavy.n)).all() == [ROWS * 50]
