"""A materialized view over a populated table under row-level security: the naive transaction
(the refresh policy on the table, ``CREATE MATERIALIZED VIEW ... WITH DATA`` under the policy's
ACCESS EXCLUSIVE lock, which lasts the whole population) vs what autogenerate writes (the policy
and the view ``WITH NO DATA`` in the transaction, ``op.populate_materialized_view`` after it,
under ACCESS SHARE): the cases of ``python -m bench.adoption`` for views (this module alone runs
them). The statements are those of the revision, written out.
"""

from __future__ import annotations

import random
import sys

from sqlalchemy import Connection, Engine, text

from bench.adoption import Case
from bench.adoption import main as adoption_main

VIEW = (
    "CREATE MATERIALIZED VIEW order_totals AS SELECT tenant_id, kind, count(*) AS n, sum(amount) AS total "
    "FROM orders GROUP BY tenant_id, kind"
)
POLICY = (
    "CREATE POLICY orders_refresh ON orders FOR SELECT "
    "USING (current_setting('app.refreshing', true) = 'on')"
)


def build(engine: Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP MATERIALIZED VIEW IF EXISTS order_totals"))
        conn.execute(text("DROP TABLE IF EXISTS orders"))
        conn.execute(text(
            "CREATE TABLE orders (id bigserial PRIMARY KEY, tenant_id int NOT NULL, kind text NOT NULL, "
            "amount numeric NOT NULL, touched int NOT NULL DEFAULT 0)"))
        conn.execute(text(
            "INSERT INTO orders (tenant_id, kind, amount) SELECT 1 + g % 50, 'k' || g % 20, g % 1000 "
            "FROM generate_series(1, :n) g"), {"n": rows})
        conn.execute(text("ALTER TABLE orders ENABLE ROW LEVEL SECURITY"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE orders"))


def naive(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '2s'"))
        conn.execute(text(POLICY))
        conn.execute(text(VIEW + " WITH DATA"))
        conn.execute(text("CREATE UNIQUE INDEX ON order_totals (tenant_id, kind)"))


def online(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '2s'"))
        conn.execute(text(POLICY))
        conn.execute(text(VIEW + " WITH NO DATA"))
        conn.execute(text("CREATE UNIQUE INDEX ON order_totals (tenant_id, kind)"))
    with engine.begin() as conn:  # after the commit: ACCESS SHARE on orders only
        conn.execute(text("REFRESH MATERIALIZED VIEW order_totals"))


def write(conn: Connection, rng: random.Random, rows: int) -> None:
    if rng.random() < 0.5:
        conn.execute(text("UPDATE orders SET touched = touched + 1 WHERE id = :i"), {"i": rng.randint(1, rows)})
    else:
        conn.execute(text("INSERT INTO orders (tenant_id, kind, amount) VALUES (1, 'k1', 5)"))


CASES = [
    Case("views", "naive transaction", build, naive, write, online=False),
    Case("views", "autogenerate's online revision", build, online, write, online=True),
]

if __name__ == "__main__":
    raise SystemExit(adoption_main(["--only", "views", *sys.argv[1:]]))
