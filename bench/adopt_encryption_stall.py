"""``python -m bench.adopt_encryption_stall [--rows 1000000]``: the longest stall of a writer while
a populated text column becomes ``EncryptedString`` with a blind index, by the naive transaction
(the values encrypted in Python and written back in one transaction, then the plaintext column
dropped and the ciphertext renamed into its place) vs ``op.encrypt_column``.

The cases of ``python -m bench.adoption`` for encryption (this module alone runs them); the
writer updates another column of single rows and inserts rows.
"""

from __future__ import annotations

import random
import sys

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    bindparam,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

import sa_patterns.alembic  # noqa: F401  (registers op.encrypt_column)
from bench.adoption import Case
from bench.adoption import main as adoption_main
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


def write(conn: Connection, rng: random.Random, rows: int) -> None:
    """Half single-row updates of another column, half inserts (the old code: plaintext email)."""
    if rng.random() < 0.5:
        conn.execute(text("UPDATE customers SET touched = touched + 1 WHERE id = :i"), {"i": rng.randint(1, rows)})
    else:
        conn.execute(text("INSERT INTO customers (touched) VALUES (1)"))


# the writer's statements are not prepared: the swap changes the column's type under them
_ENGINE = {"connect_args": {"prepare_threshold": None}}
CASES = [
    Case("encryption", "naive transaction", build, naive, write, online=False, engine_options=_ENGINE),
    Case("encryption", "op.encrypt_column", build, online, write, online=True, engine_options=_ENGINE),
]

if __name__ == "__main__":
    raise SystemExit(adoption_main(["--only", "encryption", *sys.argv[1:]]))
