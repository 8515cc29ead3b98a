"""``Versioned`` and ``Audited`` added to a populated table: the revision autogenerate writes (the
history table, the audit log, their triggers, then ``op.backfill_versions``) runs while a writer
inserts and updates rows and a reader reads them, each statement under ``lock_timeout = 200ms``.
None of their statements fails; afterwards every row has exactly one version 1 and one current
version equal to it (raw SQL), the audit log holds every write from the triggers' commit on and
none before, a second autogenerate is empty, and the linter finds nothing blocking. An
interrupted backfill resumes where it stopped.

The helpers here (:class:`AlembicProject`, :class:`Load`) serve the views and partitioning
adoption tests too.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, Connection, Engine, MetaData, create_engine, text

import sa_patterns.alembic  # noqa: F401  (registers op.backfill_versions)
from sa_patterns.cli.init import template_dir

N_ROWS = 3000

ENV = '''
import os

from alembic import context
from sqlalchemy import create_engine, pool

import sa_patterns.alembic
from models import Base

# as the template of `sa-patterns init` does: lock_timeout (2s) for the revisions, retried
if context.is_offline_mode():
    context.configure(url=os.environ["DATABASE_URL"], target_metadata=Base.metadata, literal_binds=True,
                      transaction_per_migration=True, **sa_patterns.alembic.configure_kwargs())
    sa_patterns.alembic.run_migrations()
else:
    engine = create_engine(os.environ["DATABASE_URL"], poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, transaction_per_migration=True,
                          **sa_patterns.alembic.configure_kwargs())
        sa_patterns.alembic.run_migrations()
'''

MODELS = '''
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sa_patterns import Audited, Versioned


class Base(DeclarativeBase):
    pass


class Task({bases}Base):
    __tablename__ = "ah_tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    touched: Mapped[int] = mapped_column(server_default="0")
'''


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return MetaData()  # nothing built by the plugin: the migrations build


class AlembicProject:
    """A migration directory (alembic.ini, env.py, models.py) run by subprocesses as the owner."""

    def __init__(self, root: Path, url: URL, models: str) -> None:
        self.root, self.url = root, url
        (root / "migrations" / "versions").mkdir(parents=True)
        (root / "migrations" / "env.py").write_text(ENV)
        (root / "migrations" / "script.py.mako").write_text((template_dir() / "script.py.mako").read_text())
        (root / "alembic.ini").write_text("[alembic]\nscript_location = migrations\nprepend_sys_path = .\n")
        self.models(models)

    def models(self, source: str) -> None:
        (self.root / "models.py").write_text(source)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DATABASE_URL": self.url.render_as_string(hide_password=False)}
        return subprocess.run(
            [sys.executable, "-m", *args], capture_output=True, text=True, cwd=self.root, env=env, check=False
        )

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    def revision(self, name: str) -> Path:
        self.ok("alembic", "revision", "--autogenerate", "-m", name)
        return next((self.root / "migrations" / "versions").glob(f"*_{name}.py"))

    def upgrade_ops(self, path: Path) -> list[str]:
        """The ``op.`` calls of the revision's upgrade, in order."""
        body = path.read_text().split("def upgrade() -> None:")[1].split("def downgrade() -> None:")[0]
        return [line.strip() for line in body.splitlines() if line.strip().startswith("op.")]

    def blocking_findings(self, path: Path) -> list[dict[str, Any]]:
        """The linter's blocking findings in ``path`` (table sizes from the live database)."""
        url = self.url.render_as_string(hide_password=False)
        done = self.run("sa_patterns.cli", "lint-migrations", "--url", url, "--format", "json")
        assert done.returncode in (0, 1), done.stdout + done.stderr  # 2: the lint could not run
        findings = [f for f in json.loads(done.stdout)["findings"] if f["path"] == str(path)]
        return [f for f in findings if f["severity"] == "blocking"]


class Load(threading.Thread):
    """One client of the application: ``work(conn, rng)`` in a short transaction under
    ``lock_timeout = 200ms``, again and again until stopped; every error is kept."""

    def __init__(self, url: URL, work: Callable[[Connection, random.Random], None], seed: int = 24) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(url)
        self.work, self.seed = work, seed
        self.stop, self.started = threading.Event(), threading.Event()
        self.errors: list[BaseException] = []
        self.done = 0
        self.longest = 0.0

    def run(self) -> None:
        rng = random.Random(self.seed)
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                try:
                    with conn.begin():
                        conn.execute(text("SET LOCAL lock_timeout = '200ms'"))
                        self.work(conn, rng)
                except Exception as exc:  # every failure is a finding
                    self.errors.append(exc)
                self.longest = max(self.longest, time.perf_counter() - t0)
                self.done += 1
                self.started.set()
                time.sleep(0.002)
        self.engine.dispose()

    def finish(self, linger: float = 0.3) -> None:
        """Stop after ``linger`` more seconds of work (writes after the migration's end)."""
        time.sleep(linger)
        self.stop.set()
        self.join(10)


def project_url(owner_engine: Engine, db_schema: str) -> URL:
    return owner_engine.url.update_query_dict({"options": f"-csearch_path={db_schema}"})


@pytest.fixture
def project(tmp_path: Path, owner_engine: Engine, db_schema: str, superuser_engine: Engine) -> Iterator[AlembicProject]:
    """``ah_tasks`` with rows, before it is Versioned and Audited."""
    proj = AlembicProject(tmp_path, project_url(owner_engine, db_schema), MODELS.format(bases=""))
    proj.revision("base")
    proj.ok("alembic", "upgrade", "head")
    with owner_engine.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path = "{db_schema}"'))
        conn.execute(text("INSERT INTO ah_tasks (id, title) SELECT g, 't' || g FROM generate_series(1, :n) g"),
                     {"n": N_ROWS})
        conn.execute(text("ANALYZE ah_tasks"))
    yield proj
    with superuser_engine.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path = "{db_schema}"'))
        for table in ("ah_tasks", "ah_tasks_history", "audit_log", "alembic_version", "sa_patterns_backfill"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE"))
        for function in ("ah_tasks_history", "ah_tasks_audit", "audit_log_append_only", "ah_stop"):
            conn.execute(text(f"DROP FUNCTION IF EXISTS {function}() CASCADE"))


class Writes:
    """The writer's work: inserts new tasks and updates random ones (the update changes the
    title, so it opens a version); each write's transaction id, operation and key are kept."""

    def __init__(self) -> None:
        self.log: list[tuple[int, str, int]] = []
        self.next_id = N_ROWS + 1

    def __call__(self, conn: Connection, rng: random.Random) -> None:
        if rng.random() < 0.4:
            key, op = self.next_id, "INSERT"
            conn.execute(text("INSERT INTO ah_tasks (id, title) VALUES (:id, 'w')"), {"id": key})
            self.next_id += 1
        else:
            key, op = rng.randint(1, N_ROWS), "UPDATE"
            conn.execute(text("UPDATE ah_tasks SET title = title || '+', touched = touched + 1 WHERE id = :id"),
                         {"id": key})
        xid = conn.execute(text("SELECT pg_current_xact_id()::text::bigint")).scalar_one()
        self.log.append((xid, op, key))


def read(conn: Connection, rng: random.Random) -> None:
    conn.execute(text("SELECT count(*), max(title) FROM ah_tasks WHERE id > :lo"), {"lo": rng.randint(0, N_ROWS)})


def test_versioned_and_audited_adoption_blocks_nobody_and_versions_every_row(
    project: AlembicProject, superuser_engine: Engine, db_schema: str
) -> None:
    project.models(MODELS.format(bases="Versioned, Audited, "))
    path = project.revision("adopt")
    upgrade = project.upgrade_ops(path)
    # the backfill last, after the triggers it relies on
    assert upgrade[-1] == "op.backfill_versions('ah_tasks')", upgrade
    triggers = [i for i, line in enumerate(upgrade) if "sa_patterns.schema.Trigger(" in line]
    assert triggers and max(triggers) < len(upgrade) - 1
    assert "op.forget_versions_backfill('ah_tasks')" in path.read_text().split("def downgrade() -> None:")[1]

    writes = Writes()
    writer, reader = Load(project.url, writes), Load(project.url, read, seed=7)
    for load in (writer, reader):
        load.start()
        assert load.started.wait(10)
    try:
        project.ok("alembic", "upgrade", "head")
    finally:
        writer.finish()
        reader.finish(0)
    assert writer.errors == [] and reader.errors == [], (writer.errors + reader.errors)[:3]
    print(f"\nwriter: {writer.done} writes, longest {writer.longest * 1000:.0f} ms; reader: {reader.done} reads")

    with superuser_engine.connect() as conn:
        conn.execute(text(f'SET search_path = "{db_schema}"'))
        rows = conn.scalar(text("SELECT count(*) FROM ah_tasks"))
        assert rows == N_ROWS + sum(op == "INSERT" for _, op, _ in writes.log)
        # exactly one version 1 per row (the key forbids two), one current version equal to the row
        assert conn.scalar(text(
            "SELECT count(*) FROM ah_tasks t WHERE NOT EXISTS "
            "(SELECT FROM ah_tasks_history h WHERE h.id = t.id AND h.version = 1)")) == 0
        assert conn.scalar(text(
            "SELECT count(*) FROM ah_tasks t WHERE (SELECT count(*) FROM ah_tasks_history h "
            "WHERE h.id = t.id AND h.valid_to IS NULL) <> 1")) == 0
        assert conn.scalar(text(
            "SELECT count(*) FROM ah_tasks t JOIN ah_tasks_history h ON h.id = t.id AND h.valid_to IS NULL "
            "WHERE h.title IS DISTINCT FROM t.title")) == 0
        assert conn.scalar(text(
            "SELECT count(*) FROM (SELECT id FROM ah_tasks_history GROUP BY id "
            "HAVING max(version) <> count(*)) gaps")) == 0
        # the audit log: nothing before the triggers' commit, every write after it
        logged = {(xid, op, key) for xid, op, key in conn.execute(text(
            "SELECT transaction_id, operation, (primary_key ->> 'id')::int FROM audit_log "
            "WHERE table_name = :t"), {"t": f"{db_schema}.ah_tasks"})}
        assert conn.scalar(text("SELECT count(*) FROM audit_log")) == len(logged)
        assert to_regclass(conn, "sa_patterns_backfill") is None  # the record forgotten
    audited = [entry in logged for entry in writes.log]
    first = audited.index(True)
    assert all(audited[first:]) and not any(audited[:first]), audited
    assert len(logged) == len(writes.log) - first

    assert "No new upgrade operations detected" in project.ok("alembic", "check")
    assert project.blocking_findings(path) == []

    project.ok("alembic", "downgrade", "-1")
    with superuser_engine.connect() as conn:
        conn.execute(text(f'SET search_path = "{db_schema}"'))
        assert to_regclass(conn, "ah_tasks_history") is None and to_regclass(conn, "audit_log") is None
        assert conn.scalar(text(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'ah_tasks'::regclass AND NOT tgisinternal")) == 0
        assert conn.scalar(text("SELECT count(*) FROM ah_tasks")) == rows


def to_regclass(conn: Connection, name: str) -> Any:
    return conn.scalar(text("SELECT to_regclass(:n)"), {"n": name})


def test_the_revision_offline_renders_the_backfill_as_a_comment(project: AlembicProject) -> None:
    project.models(MODELS.format(bases="Versioned, "))
    project.revision("adopt")
    sql = project.ok("alembic", "upgrade", "base:head", "--sql")
    backfill = sql.index("-- sa_patterns: version 1 for every row of ah_tasks without a current version")
    assert sql.index("CREATE TRIGGER ah_tasks_history_ins") < backfill


def test_an_interrupted_backfill_stops_clearly_and_resumes_where_it_stopped(
    project: AlembicProject, superuser_engine: Engine, owner_engine: Engine, db_schema: str
) -> None:
    project.models(MODELS.format(bases="Versioned, "))
    path = project.revision("adopt")
    path.write_text(path.read_text().replace("op.backfill_versions('ah_tasks')",
                                             "op.backfill_versions('ah_tasks', batch_size=100)"))
    with superuser_engine.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path = "{db_schema}"'))
        conn.execute(text(
            "CREATE FUNCTION ah_stop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN "
            "IF EXISTS (SELECT FROM sa_new WHERE id = 1550) AND to_regclass('ah_stopped') IS NULL "
            "THEN RAISE EXCEPTION 'interrupted'; END IF; RETURN NULL; END$$"))
    # the history table exists only once the revision runs: stop its 16th batch from inside it
    script = path.read_text().replace(
        "    op.backfill_versions(",
        "    op.execute('CREATE TRIGGER ah_stop AFTER INSERT ON ah_tasks_history REFERENCING NEW TABLE AS sa_new "
        "FOR EACH STATEMENT EXECUTE FUNCTION ah_stop()')\n    op.backfill_versions(")
    path.write_text(script)
    done = project.run("alembic", "upgrade", "head")
    assert done.returncode != 0
    assert "BackfillError" in done.stderr and "interrupted" in done.stderr
    assert "versioning.backfill(engine, Model)" in done.stderr and "alembic stamp" in done.stderr
    with superuser_engine.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path = "{db_schema}"'))
        assert conn.scalar(text(
            "SELECT rows_done FROM sa_patterns_backfill WHERE name = 'ah_tasks.version_one'")) == 1500
        assert conn.scalar(text("SELECT count(*) FROM ah_tasks_history")) == 1500
        conn.execute(text("CREATE TABLE ah_stopped ()"))
    try:
        # the way the error gives: finish the backfill (it resumes), then stamp
        finish = (
            "import os, sqlalchemy as sa\nfrom models import Task\nfrom sa_patterns import versioning\n"
            "print(versioning.backfill(sa.create_engine(os.environ['DATABASE_URL']), Task))"
        )
        env = {**os.environ, "DATABASE_URL": project.url.render_as_string(hide_password=False)}
        resumed = subprocess.run([sys.executable, "-c", finish], capture_output=True, text=True, cwd=project.root,
                                 env=env, check=True)
        assert resumed.stdout.split() == [str(N_ROWS - 1500)]  # this run's rows: from 1,500 on
        project.ok("alembic", "stamp", "head")
    finally:
        with superuser_engine.begin() as conn:
            conn.execute(text(f'SET LOCAL search_path = "{db_schema}"'))
            conn.execute(text("DROP TABLE ah_stopped"))
    with superuser_engine.connect() as conn:
        conn.execute(text(f'SET search_path = "{db_schema}"'))
        assert conn.scalar(text("SELECT count(*) FROM ah_tasks_history WHERE version = 1")) == N_ROWS
