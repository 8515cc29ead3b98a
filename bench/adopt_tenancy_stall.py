"""``tenant_id`` added to a populated table and filled from each row's parent, by the naive
transaction (ADD COLUMN, one UPDATE, SET NOT NULL, CREATE INDEX) vs ``op.add_tenant_column``: the
cases of ``python -m bench.adoption`` for tenancy (``python -m bench.adopt_tenancy_stall [--rows
N]`` runs them alone). The writer updates single rows and inserts rows without a tenant as the
old code does.
"""

from __future__ import annotations

import random
import sys

from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Connection, Engine, text

import sa_patterns.alembic  # noqa: F401  (registers op.add_tenant_column)
from bench.adoption import Case
from bench.adoption import main as adoption_main
from sa_patterns.tenancy.adopt import tenant_from

PARENTS = 1000


def build(engine: Engine, rows: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS tasks, projects, sa_patterns_backfill"))
        conn.execute(text("CREATE TABLE projects (id int PRIMARY KEY, tenant_id bigint NOT NULL)"))
        conn.execute(text(
            "CREATE TABLE tasks (id bigserial PRIMARY KEY, project_id int NOT NULL, title text, "
            "touched int NOT NULL DEFAULT 0)"))
        conn.execute(text("INSERT INTO projects SELECT g, 1 + g % 50 FROM generate_series(1, :n) g"), {"n": PARENTS})
        conn.execute(text(
            "INSERT INTO tasks (project_id, title) SELECT 1 + g % :p, 't' || g FROM generate_series(1, :n) g"),
            {"n": rows, "p": PARENTS})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE tasks"))


def naive(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE tasks ADD COLUMN tenant_id bigint"))
        conn.execute(text("UPDATE tasks t SET tenant_id = p.tenant_id FROM projects p WHERE p.id = t.project_id"))
        conn.execute(text("ALTER TABLE tasks ALTER COLUMN tenant_id SET NOT NULL"))
        conn.execute(text("CREATE INDEX ix_tasks_tenant_id ON tasks (tenant_id)"))


def online(engine: Engine) -> None:
    with engine.connect() as conn:
        op = Operations(MigrationContext.configure(conn))
        op.add_tenant_column("tasks", source=tenant_from("projects", on="project_id"), keep_trigger=True)
        op.drop_tenant_fill("tasks")  # as the revision's last operation
        conn.commit()


def write(conn: Connection, rng: random.Random, rows: int) -> None:
    """Half single-row updates, half inserts without a tenant as the old code does (skipped once
    the column is NOT NULL and the fill trigger gone: the new code sets the tenant)."""
    if rng.random() < 0.5:
        conn.execute(text("UPDATE tasks SET touched = touched + 1 WHERE id = :i"), {"i": rng.randint(1, rows)})
    else:
        conn.execute(text(
            "INSERT INTO tasks (project_id, title) SELECT :p, 'w' WHERE NOT EXISTS ("
            "SELECT FROM pg_attribute WHERE attrelid = 'tasks'::regclass "
            "AND attname = 'tenant_id' AND attnotnull AND NOT EXISTS ("
            "SELECT FROM pg_trigger WHERE tgname = 'tasks_tenant_id_fill'))"),
            {"p": rng.randint(1, PARENTS)})


CASES = [
    Case("tenancy", "naive transaction", build, naive, write, online=False),
    Case("tenancy", "op.add_tenant_column", build, online, write, online=True),
]

if __name__ == "__main__":
    raise SystemExit(adoption_main(["--only", "tenancy", *sys.argv[1:]]))
