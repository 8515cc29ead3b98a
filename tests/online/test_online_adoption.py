"""Patterns adopted on a populated table while it is written to: ``alembic upgrade head`` of the
revision autogenerate writes, in an environment from ``sa-patterns init``, run as a separate
process while a writer and a reader (threads, own connections, ``lock_timeout = 200ms``) work
on the table. A statement of theirs that waited longer than 200 ms fails, so "no error" means
"never blocked long".

Also: a revision whose lock wait times out is retried once the lock is free, and the error
after the last attempt names the table and who holds it; a unique index over live duplicates
is refused before anything is applied; an INVALID index left by an interrupted build is rebuilt.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, Connection, Engine, create_engine, text

from sa_patterns.cli import main

V1 = '''
from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(100))


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(BigInteger)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    title: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100))
'''

# the tables already have tenant_id: TenantMixin adds its index, the composite key to projects
# (and the index under it), the policies; SoftDeleteMixin its columns; soft_unique its index
V2 = '''
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sa_patterns import SoftDeleteMixin, TenantMixin, soft_unique


class Base(DeclarativeBase):
    pass


class Project(TenantMixin, Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Task(SoftDeleteMixin, TenantMixin, Base):
    __tablename__ = "tasks"
    __table_args__ = (soft_unique("slug"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    title: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100))
'''

TASKS = 3000
INDEXES = {"ix_tasks_tenant_id", "ix_projects_tenant_id", "uq_tasks_slug_live", "tasks_project_id_tenant_id"}


@dataclass
class Project:
    root: Path
    url: URL
    engine: Engine
    schema: str

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "alembic", *args], capture_output=True, text=True,
                              cwd=self.root, env=self.env(), check=False)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "alembic", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=self.root, env=self.env())

    def env(self) -> dict[str, str]:
        return {**os.environ, "DATABASE_URL": self.url.render_as_string(hide_password=False)}

    def models(self, module: str) -> None:
        ini = self.root / "alembic.ini"
        ini.write_text(ini.read_text().replace("online_v1:Base", module).replace("online_v2:Base", module))

    def ini(self, key: str, value: str) -> None:
        ini = self.root / "alembic.ini"
        ini.write_text(ini.read_text().replace(f"{key} = ", f"{key} = {value}\n# was: ", 1))

    def scalar(self, sql: str, **params: object) -> object:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()


@pytest.fixture
def project(tmp_path: Path, pg_url: URL, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """Version 1 migrated and populated: 30 projects, 3,000 tasks over 3 tenants; version 2's
    revision written by autogenerate, not applied."""
    schema = f"online_{secrets.token_hex(4)}"
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = pg_url.update_query_dict({"options": f"-csearch_path={schema}"})
    engine = create_engine(url)
    (tmp_path / "online_v1.py").write_text(V1)
    (tmp_path / "online_v2.py").write_text(V2)
    monkeypatch.chdir(tmp_path)
    assert main(["init", "migrations", "--metadata", "online_v1:Base"]) == 0
    p = Project(tmp_path, url, engine, schema)
    for step in (("revision", "--autogenerate", "-m", "v1"), ("upgrade", "head")):
        done = p.run(*step)
        assert done.returncode == 0, done.stderr
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO projects (id, tenant_id, name) SELECT g, 1 + g % 3, 'p' || g FROM generate_series(1, 30) g"))
        conn.execute(text(
            "INSERT INTO tasks (tenant_id, project_id, title, slug) "
            "SELECT 1 + p % 3, p, 't' || g, 's' || g FROM generate_series(1, :n) g, LATERAL (SELECT 1 + g % 30 AS p) x"
        ), {"n": TASKS})
        conn.execute(text("ANALYZE tasks"))
    p.models("online_v2:Base")
    done = p.run("revision", "--autogenerate", "-m", "adopt")
    assert done.returncode == 0, done.stderr
    try:
        yield p
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@dataclass
class Traffic:
    """A writer (single-row UPDATEs and INSERTs) and a reader, each on its own connection with
    ``lock_timeout = 200ms``, until stopped; every error kept."""

    engine: Engine
    token: str = field(default_factory=lambda: secrets.token_hex(3))
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    inserted: list[int] = field(default_factory=list)
    updates: int = 0
    reads: int = 0

    def _connect(self) -> Connection:
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("SET lock_timeout = '200ms'"))
        return conn

    def writer(self) -> None:
        rng = random.Random(24)
        with self._connect() as conn:
            n = 0
            while not self.stop.is_set() or n < 20:
                n += 1
                try:
                    conn.execute(text("UPDATE tasks SET title = title || '.' WHERE id = :id"), {"id": rng.randint(1, TASKS)})
                    self.updates += 1
                    new = conn.execute(text(
                        "INSERT INTO tasks (tenant_id, project_id, title, slug) VALUES (2, 1, 'new', :s) RETURNING id"
                    ), {"s": f"new-{self.token}-{n}"}).scalar_one()
                    self.inserted.append(new)
                except Exception as exc:  # kept and asserted on: every failure is a finding
                    self.errors.append(f"writer: {exc}")

    def reader(self) -> None:
        with self._connect() as conn:
            while not self.stop.is_set():
                try:
                    conn.execute(text("SELECT count(*) FROM tasks WHERE tenant_id = 2")).scalar_one()
                    self.reads += 1
                except Exception as exc:
                    self.errors.append(f"reader: {exc}")

    def __enter__(self) -> Traffic:
        self.threads = [threading.Thread(target=self.writer), threading.Thread(target=self.reader)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def _catalog(p: Project) -> dict[str, list[tuple[Any, ...]]]:
    """What the adoption leaves in the database, read from the catalog."""
    with p.engine.connect() as conn:

        def rows(sql: str) -> list[tuple[Any, ...]]:
            return sorted(tuple(r) for r in conn.execute(text(sql), {"s": p.schema}))

        return {
            "indexes": rows("SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s AND NOT i.indisprimary"),
            "constraints": rows("SELECT conname, convalidated FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                                "WHERE n.nspname = :s AND contype IN ('f', 'u', 'c')"),
            "columns": rows("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = :s"),
            "policies": rows("SELECT tablename, policyname FROM pg_policies WHERE schemaname = :s"),
            "rls": rows("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = :s AND c.relrowsecurity"),
        }


def test_adoption_under_traffic(project: Project) -> None:
    p = project
    adopt = next((p.root / "migrations" / "versions").glob("*_adopt.py")).read_text()
    assert "op.create_index_concurrently('uq_tasks_slug_live'" in adopt
    assert "not_valid=True" in adopt and "op.validate_constraint('tasks_project_id_tenant_fkey', 'tasks')" in adopt
    # the parent's UNIQUE (tenant_id, id) the composite key needs: its index built CONCURRENTLY
    # first, then attached as the constraint
    assert adopt.index("op.create_index_concurrently('projects_tenant_id_id_key'") < adopt.index(
        "op.add_unique_using_index('projects_tenant_id_id_key', 'projects')") < adopt.index("not_valid=True")
    # the linter, without table sizes (every scan counts): nothing blocks, either way
    lint = subprocess.run([sys.executable, "-m", "sa_patterns.cli", "lint-migrations", "--downgrade", "--format", "json"],
                          capture_output=True, text=True, cwd=p.root, env=p.env(), check=False)
    findings = json.loads(lint.stdout)["findings"]
    blocking = [(f["rule"], f["table"], f["direction"]) for f in findings
                if f["severity"] == "blocking" and f["path"].endswith("_adopt.py")]
    assert blocking == [], lint.stdout
    before = _catalog(p)
    # an earlier run interrupted while building ix_tasks_tenant_id left it INVALID (a unique
    # build over duplicate tenant ids fails the same way)
    with p.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn, \
            pytest.raises(Exception, match="could not create unique index"):
        conn.execute(text("CREATE UNIQUE INDEX CONCURRENTLY ix_tasks_tenant_id ON tasks (tenant_id)"))
    assert p.scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_tasks_tenant_id'::regclass") is False

    with Traffic(p.engine) as traffic:
        done = p.run("upgrade", "head")
    assert done.returncode == 0, done.stderr
    assert traffic.errors == []
    assert traffic.updates >= 20 and traffic.reads > 0
    # nothing lost: every row the writer inserted is there, once
    assert p.scalar("SELECT count(*) FROM tasks WHERE id = ANY(:ids)", ids=traffic.inserted) == len(traffic.inserted)
    assert p.scalar("SELECT count(*) FROM tasks") == TASKS + len(traffic.inserted)

    after = _catalog(p)
    indexes = dict(after["indexes"])
    assert set(indexes) >= INDEXES and all(indexes[name] for name in INDEXES)  # valid, rebuilt
    assert p.scalar("SELECT indisunique FROM pg_index WHERE indexrelid = 'ix_tasks_tenant_id'::regclass") is False
    assert ("tasks_project_id_tenant_fkey", True) in after["constraints"]
    assert ("projects_tenant_id_id_key", True) in after["constraints"] and indexes["projects_tenant_id_id_key"]
    # the partial unique index holds: a second live row with a slug is refused
    with p.engine.connect() as conn, pytest.raises(Exception, match="uq_tasks_slug_live"):
        conn.execute(text("INSERT INTO tasks (tenant_id, project_id, title, slug) VALUES (2, 1, 'x', :s)"),
                     {"s": f"new-{traffic.token}-1"})

    # a second autogenerate finds nothing to do
    check = p.run("check")
    assert check.returncode == 0, check.stdout + check.stderr

    with Traffic(p.engine) as traffic:
        done = p.run("downgrade", "-1")
    assert done.returncode == 0, done.stderr
    assert traffic.errors == []
    after_down = _catalog(p)
    assert after_down == before


def test_a_lock_wait_is_retried_once_the_lock_is_free(project: Project) -> None:
    p = project
    p.ini("sa_patterns.lock_timeout", "300ms")
    p.ini("sa_patterns.lock_retries", "20")
    holder = p.engine.connect()
    holder.execute(text("SELECT count(*) FROM tasks")).scalar_one()  # ACCESS SHARE, kept until rollback
    migration = p.popen("upgrade", "head")
    assert migration.stdout is not None
    output: list[str] = []
    try:
        for line in migration.stdout:
            output.append(line)
            if "retrying" in line:
                break
        # the revision timed out on the held lock and rolled back: nothing of it is there
        assert p.scalar("SELECT count(*) FROM information_schema.columns WHERE table_schema = :s "
                        "AND column_name = 'deleted_at'", s=p.schema) == 0
    finally:
        holder.rollback()
        holder.close()
    rest, _ = migration.communicate()
    output.append(rest)
    log = "".join(output)
    assert migration.returncode == 0, log
    assert "lock_timeout (300ms) on tasks, projects, attempt 1 of 21: retrying" in log
    assert p.scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = 'uq_tasks_slug_live'::regclass") is True
    assert p.run("check").returncode == 0


def test_the_last_timeout_names_the_table_and_the_holder(project: Project) -> None:
    p = project
    p.ini("sa_patterns.lock_timeout", "100ms")
    p.ini("sa_patterns.lock_retries", "1")
    with p.engine.connect() as holder:
        holder.execute(text("SET application_name = 'online-test-holder'"))
        holder.execute(text("SELECT count(*) FROM tasks")).scalar_one()
        done = p.run("upgrade", "head")
        holder.rollback()
    assert done.returncode != 0
    assert "LockTimeoutError" in done.stderr
    assert "migration step on tasks, projects waited longer than lock_timeout=100ms after 2 attempts" in done.stderr
    assert "online-test-holder" in done.stderr and "AccessShareLock" in done.stderr
    # nothing applied, the revision can simply be run again
    assert p.scalar("SELECT count(*) FROM information_schema.columns WHERE table_schema = :s "
                    "AND column_name = 'deleted_at'", s=p.schema) == 0
    assert p.run("upgrade", "head").returncode == 0


def test_live_duplicates_are_refused_before_anything_is_applied(project: Project) -> None:
    p = project
    with p.engine.begin() as conn:
        # task g is in project 1 + g % 30 of tenant 1 + project % 3
        conn.execute(text("UPDATE tasks SET slug = 'dup-a' WHERE id IN (10, 40, 70)"))  # tenant 3
        conn.execute(text("UPDATE tasks SET slug = 'dup-b' WHERE id IN (20, 50)"))  # tenant 1
        # same slug in another tenant: not a duplicate of the (tenant_id, slug) key
        conn.execute(text("UPDATE tasks SET slug = 'shared' WHERE id IN (1, 2)"))
    before = _catalog(p)
    done = p.run("upgrade", "head")
    assert done.returncode != 0
    assert "DuplicateKeysError" in done.stderr
    assert "unique index uq_tasks_slug_live on tasks cannot be built" in done.stderr
    assert "(3, 'dup-a') ×3" in done.stderr and "(1, 'dup-b') ×2" in done.stderr and "shared" not in done.stderr
    assert _catalog(p) == before  # nothing of the revision
    with p.engine.begin() as conn:
        conn.execute(text("UPDATE tasks SET slug = 'fixed-' || id WHERE slug LIKE 'dup-%'"))
    done = p.run("upgrade", "head")
    assert done.returncode == 0, done.stderr
    assert p.scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = 'uq_tasks_slug_live'::regclass") is True


HANDMADE = '''
from alembic import op
import sqlalchemy as sa

revision = "handmade01"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("note", sa.Text()))
    with op.get_context().autocommit_block():  # commits the column: the revision is half done
        op.execute("SELECT 1")
    op.add_column("projects", sa.Column("note", sa.Text()))


def downgrade() -> None:
    pass
'''


def test_a_half_committed_revision_is_not_replayed(project: Project) -> None:
    """A lock timeout after a revision's own autocommit block: replaying it would add the first
    column again, so the error says so at once instead of retrying."""
    p = project
    versions = p.root / "migrations" / "versions"
    v1 = next(versions.glob("*_v1.py")).name.split("_")[0]
    next(versions.glob("*_adopt.py")).unlink()
    (versions / "handmade01_half.py").write_text(HANDMADE.format(down=v1))
    p.ini("sa_patterns.lock_timeout", "100ms")
    with p.engine.connect() as holder:
        holder.execute(text("SELECT count(*) FROM projects")).scalar_one()
        done = p.run("upgrade", "head")
        holder.rollback()
    assert done.returncode != 0
    assert "migration step on projects waited longer than lock_timeout=100ms and cannot be retried" in done.stderr
    assert "retrying" not in done.stderr
    assert p.scalar("SELECT count(*) FROM information_schema.columns WHERE table_schema = :s "
                    "AND table_name = 'tasks' AND column_name = 'note'", s=p.schema) == 1
