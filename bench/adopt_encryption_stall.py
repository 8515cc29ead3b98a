"""``python -m bench.adopt_encryption_stall [--rows 1000000]``: the longest stall of a writer while
a populated text column becomes ``EncryptedString`` with a blind index, by the naive transaction
(the values encrypted in Python and written back in one transaction, then the plaintext column
dropped and the ciphertext renamed into its place) vs ``op.encrypt_column``.

A writer thread (its own connection, one short transaction every ~5 ms, half single-row updates
of another column, half inserts, each under ``lock_timeout = 5s``) runs for as long as the
migration does; its longest write and its failures are reported. Each case gets a fresh table on
a scratch database of ``DATABASE_URL``'s server. Not part of ``python -m bench``; the figures go
into docs/adopting.md and the report of issue 24.
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
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    bindparam,
    create_engine,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

import sa_patterns.alembic  # noqa: F401  (registers op.encrypt_column)
from sa_patterns.database import normalise_url, scratch_database
from sa_patterns.encryption import EncryptedString, Keyring

KEYRING = Keyring({"k1": bytes(range(32))}, index_keys={"i1": bytes(range(32, 64))})
CHUNK = 10_000


def build(engine: Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS customers, sa_patterns_backfill"))
        conn.execute(text(
            "CREATE TABLE customers (id bigserial PRIMARY KEY, email text, touched int NOT NULL DEFAULT 0)"))
        conn.execute(text(
            "INSERT INTO customers (email) SELECT 'user' || g || '@example.com' FROM generate_series(1, :n) g"),
            {"n": rows})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE customers"))


def naive(engine: Engine) -> None:
    """What a hand-written data migration does: all of it in the revision's transaction."""
    type_ = EncryptedString(KEYRING, blind_index=True)
    Table("customers", MetaData(), Column("email", type_))
    staged = Table("customers", MetaData(), Column("id", Integer, primary_key=True),
                   Column("email_enc", LargeBinary), Column("email_bidx", LargeBinary))
    source = select(
        func.unnest(bindparam("ids", type_=ARRAY(Integer))).label("id"),
        func.unnest(bindparam("encs", type_=ARRAY(LargeBinary))).label("enc"),
        func.unnest(bindparam("bidxs", type_=ARRAY(LargeBinary))).label("bidx"),
    ).subquery()
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE customers ADD COLUMN email_enc bytea, ADD COLUMN email_bidx bytea"))
        rows = conn.execute(text("SELECT id, email FROM customers WHERE email IS NOT NULL ORDER BY id")).all()
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start:start + CHUNK]
            conn.execute(update(staged).where(staged.c.id == source.c.id).values(
                email_enc=source.c.enc, email_bidx=source.c.bidx), {
                "ids": [r.id for r in chunk],
                "encs": [type_.seal(r.email.encode()) for r in chunk],
                "bidxs": [type_.blind_index_value(r.email) for r in chunk]})
        conn.execute(text("ALTER TABLE customers DROP COLUMN email"))
        conn.execute(text("ALTER TABLE customers RENAME COLUMN email_enc TO email"))
        conn.execute(text("CREATE INDEX ix_customers_email_bidx ON customers (email_bidx)"))


def online(engine: Engine) -> None:
    with engine.connect() as conn:
        op = Operations(MigrationContext.configure(conn))
        op.encrypt_column("customers", "email", blind_index="email_bidx", keyring=KEYRING)
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
                            conn.execute(text("UPDATE customers SET touched = touched + 1 WHERE id = :i"),
                                         {"i": rng.randint(1, rows)})
                        else:
                            conn.execute(text("INSERT INTO customers (touched) VALUES (1)"))
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
        engine = create_engine(url, connect_args={"prepare_threshold": None})
        for name, work in (("naive transaction", naive), ("op.encrypt_column", online)):
            build(engine, args.rows)
            found = measure(engine, args.rows, work)
            with engine.connect() as conn:  # both end with every value encrypted
                left = conn.execute(text("SELECT count(*) FROM customers WHERE email IS NOT NULL AND "
                                         "get_byte(email, 0) <> 1")).scalar_one()
            print(
                f"{name:22} {args.rows:>9,} rows: migration {found['total']:5.1f} s, longest write "
                f"{found['longest'] * 1000:6.0f} ms, {found['writes']:.0f} writes, {found['failed']:.0f} failed, "
                f"{left} values not encrypted"
            )
        engine.dispose()


if __name__ == "__main__":
    main()
