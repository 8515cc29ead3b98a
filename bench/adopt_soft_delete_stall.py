"""``SoftDeleteMixin`` with ``soft_unique("slug")`` added to a populated table: the naive
transaction (the three columns and ``CREATE UNIQUE INDEX ... WHERE deleted_at IS NULL`` under the
same lock) vs what autogenerate writes (``op.require_unique`` first, the columns in a brief
transaction, the partial unique index ``CONCURRENTLY`` after it): the cases of
``python -m bench.adoption`` for soft delete (this module alone runs them).
"""

from __future__ import annotations

import random
import sys

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Connection, Engine, text

import sa_patterns.alembic  # noqa: F401  (registers op.require_unique, op.create_index_concurrently)
from bench.adoption import Case
from bench.adoption import main as adoption_main

LIVE = {"postgresql_where": sa.text("deleted_at IS NULL")}


def build(engine: Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS items"))
        conn.execute(text(
            "CREATE TABLE items (id bigserial PRIMARY KEY, slug text NOT NULL, title text, "
            "touched int NOT NULL DEFAULT 0)"))
        conn.execute(text("INSERT INTO items (slug, title) SELECT 's' || g, 't' || g FROM generate_series(1, :n) g"),
                     {"n": rows})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE items"))


COLUMNS = (
    "ALTER TABLE items ADD COLUMN deleted_at timestamptz, ADD COLUMN deleted_by text, "
    "ADD COLUMN delete_batch uuid"
)


def naive(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text(COLUMNS))
        conn.execute(text("CREATE UNIQUE INDEX uq_items_slug_live ON items (slug) WHERE deleted_at IS NULL"))


def online(engine: Engine) -> None:
    with engine.connect() as conn:
        op = Operations(MigrationContext.configure(conn))
        with conn.begin():
            op.require_unique("uq_items_slug_live", "items", ["slug"], new_columns=["deleted_at"], **LIVE)
            conn.execute(text("SET LOCAL lock_timeout = '2s'"))
            conn.execute(text(COLUMNS))
        with op.get_context().autocommit_block():
            op.create_index_concurrently("uq_items_slug_live", "items", ["slug"], unique=True, **LIVE)


def write(conn: Connection, rng: random.Random, rows: int) -> None:
    if rng.random() < 0.5:
        conn.execute(text("UPDATE items SET touched = touched + 1 WHERE id = :i"), {"i": rng.randint(1, rows)})
    else:
        conn.execute(text("INSERT INTO items (slug) VALUES ('w' || gen_random_uuid())"))


CASES = [
    Case("soft delete", "naive transaction", build, naive, write, online=False),
    Case("soft delete", "autogenerate's online revision", build, online, write, online=True),
]

if __name__ == "__main__":
    raise SystemExit(adoption_main(["--only", "soft_delete", *sys.argv[1:]]))
