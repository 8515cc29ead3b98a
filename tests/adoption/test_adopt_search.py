"""``Searchable`` added to a populated table: autogenerate writes ``op.add_search_vector`` (a plain
``tsvector`` kept by the toolkit's trigger, filled in batches) instead of the generated column
(a table rewrite under ACCESS EXCLUSIVE). ``alembic upgrade head`` runs while a writer inserts
and updates the searched columns and a reader searches through an installed session, each
statement under ``lock_timeout = 200ms``: none fails, every row's vector equals its recomputation
(raw SQL, rows written meanwhile included), the GIN index is valid, a second autogenerate is
empty, the linter finds nothing blocking. Then the weights change (online), the trigger is
dropped (reported by autogenerate and the doctor), an interrupted fill resumes, and the
downgrades undo each step.

Migrations run in a subprocess as the owner role, as a deployment runs them.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import URL, Engine, MetaData, String, Text, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import sa_patterns
import sa_patterns.alembic
from sa_patterns import Searchable
from sa_patterns.cli.init import template_dir
from sa_patterns.health import check_search_vectors

N_NOTES = 3000
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]

MODELS = '''
from sqlalchemy import String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sa_patterns import Searchable, Versioned


class Base(DeclarativeBase):
    pass


class Note({bases}Base):
    __tablename__ = "as_notes"
    {searchable}
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    body: Mapped[str | None] = mapped_column(Text)
    touched: Mapped[int] = mapped_column(server_default="0")
{extra}
'''

NEW_TABLE = '''

class Page(Searchable, Base):
    __tablename__ = "as_pages"
    __searchable__ = {"title": "A"}
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
'''

ENV = '''
import os

from alembic import context
from sqlalchemy import create_engine, pool

import sa_patterns.alembic
from models import Base

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


def recomputed(weights: dict[str, str]) -> str:
    """The vector each row must hold, written by hand (not by the toolkit's generator)."""
    return " || ".join(f"setweight(to_tsvector('english', coalesce({c}, '')), '{w}')" for c, w in weights.items())


def wrong_vectors(engine: Engine, weights: dict[str, str]) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text(
            f"SELECT count(*) FROM as_notes WHERE search_vector IS DISTINCT FROM ({recomputed(weights)})")))


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return MetaData()  # nothing built: the migrations build


class Project:
    """A migration directory (alembic.ini, env.py, models.py) run by subprocesses as the owner."""

    def __init__(self, root: Path, url: URL) -> None:
        self.root, self.url, self.versioned = root, url, False
        (root / "migrations" / "versions").mkdir(parents=True)
        (root / "migrations" / "env.py").write_text(ENV)
        (root / "migrations" / "script.py.mako").write_text((template_dir() / "script.py.mako").read_text())
        (root / "alembic.ini").write_text("[alembic]\nscript_location = migrations\nprepend_sys_path = .\n")
        self.models(None)

    def models(self, weights: dict[str, str] | None, extra: str = "") -> None:
        (self.root / "models.py").write_text(MODELS.format(
            bases=("Versioned, " if self.versioned else "") + ("Searchable, " if weights else ""), extra=extra,
            searchable=f"__searchable__ = {weights!r}" if weights else ""))

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


def upgrade_body(path: Path) -> tuple[list[str], str]:
    """The upgrade's ``op.`` lines, and the downgrade's text."""
    up, down = path.read_text().split("def upgrade() -> None:")[1].split("def downgrade() -> None:")
    return [line.strip() for line in up.splitlines() if line.strip().startswith("op.")], down


@pytest.fixture
def project(
    tmp_path: Path, owner_engine: Engine, db_schema: str, superuser_engine: Engine, request: pytest.FixtureRequest
) -> Iterator[Project]:
    """``as_notes`` before ``Searchable``, with rows (some without a body); ``Versioned`` for a
    test whose name says so."""
    url = owner_engine.url.update_query_dict({"options": f"-csearch_path={db_schema}"})
    proj = Project(tmp_path, url)
    proj.versioned = "versioned" in request.node.name
    proj.models(None)
    proj.revision("base")
    proj.ok("alembic", "upgrade", "head")
    with owner_engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO as_notes (title, body) SELECT 'note ' || (CAST(:w AS text[]))[1 + g % 10] || ' ' || g, "
            "CASE WHEN g % 7 = 0 THEN NULL ELSE 'the ' || (CAST(:w AS text[]))[1 + g % 9] || ' body' END "
            "FROM generate_series(1, :n) g"), {"n": N_NOTES, "w": WORDS})
        conn.execute(text("ANALYZE as_notes"))
    yield proj
    with superuser_engine.begin() as conn:
        for table in ("as_notes", "as_notes_history", "as_pages", "alembic_version", "sa_patterns_backfill",
                      "as_progress"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE"))
        for function in ("as_notes_search_vector", "as_stop", "as_log"):
            conn.execute(text(f"DROP FUNCTION IF EXISTS {function}() CASCADE"))


class _Base(DeclarativeBase):
    pass


class Note(Searchable, _Base):
    """The new code's model, for the reader and the ORM insert (the table the migration makes)."""

    __tablename__ = "as_notes"
    __searchable__ = {"title": "A", "body": "B"}
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    body: Mapped[str | None] = mapped_column(Text)
    touched: Mapped[int] = mapped_column(server_default="0")


class Traffic(threading.Thread):
    """The application during the migration: a writer inserting notes and updating the searched
    columns of others (and an unsearched one), and a reader searching once the column exists,
    through an installed session; one short transaction each under lock_timeout 200ms, every
    error kept."""

    def __init__(self, url: URL, role: str) -> None:
        super().__init__(daemon=True)
        self.role = role
        self.engine = create_engine(url)
        self.session = sa_patterns.install(sessionmaker(self.engine), wall="off")
        self.stop, self.started = threading.Event(), threading.Event()
        self.errors: list[BaseException] = []
        self.inserted: list[int] = []
        self.count = self.searches = self.found = 0

    def write(self, rng: random.Random) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '200ms'"))
            choice = rng.random()
            if choice < 0.4:
                self.inserted.extend(conn.scalars(text(
                    "INSERT INTO as_notes (title, body) VALUES (:t, :b) RETURNING id"),
                    {"t": f"written {rng.choice(WORDS)}", "b": rng.choice([None, f"fresh {rng.choice(WORDS)}"])}))
            elif choice < 0.8:
                conn.execute(text("UPDATE as_notes SET title = :t, body = :b WHERE id = :id"), {
                    "t": f"edited {rng.choice(WORDS)}", "b": f"edited {rng.choice(WORDS)}",
                    "id": rng.randint(1, N_NOTES)})
            else:
                conn.execute(text("UPDATE as_notes SET touched = touched + 1 WHERE id = :id"),
                             {"id": rng.randint(1, N_NOTES)})

    def read(self) -> None:
        with self.session() as session, session.begin():
            session.execute(text("SET LOCAL lock_timeout = '200ms'"))
            exists = session.scalar(text(
                "SELECT count(*) FROM pg_attribute WHERE attrelid = 'as_notes'::regclass "
                "AND attname = 'search_vector' AND NOT attisdropped"))
            if exists:
                self.found += len(session.scalars(Note.search("alpha").limit(20)).all())
                self.searches += 1
            else:
                session.execute(select(Note.id, Note.title).limit(20)).all()

    def run(self) -> None:
        rng = random.Random(24)
        while not self.stop.is_set():
            try:
                self.write(rng) if self.role == "writer" else self.read()
            except Exception as exc:  # every failure is a finding
                self.errors.append(exc)
            self.count += 1
            self.started.set()
            time.sleep(0.002)
        self.engine.dispose()


def under_traffic(project: Project, *args: str) -> tuple[Traffic, Traffic]:
    writer, reader = Traffic(project.url, "writer"), Traffic(project.url, "reader")
    for t in (writer, reader):
        t.start()
        assert t.started.wait(10)
    try:
        project.ok(*args)
    finally:
        for t in (writer, reader):
            t.stop.set()
            t.join(10)
    assert writer.errors == [] and reader.errors == [], (writer.errors[:3], reader.errors[:3])
    assert writer.inserted and writer.count > 20 and reader.count > 20
    return writer, reader


def catalog(engine: Engine) -> dict[str, object]:
    with engine.connect() as conn:
        return {
            "column": conn.execute(text(
                "SELECT format_type(atttypid, atttypmod), attgenerated::text FROM pg_attribute "
                "WHERE attrelid = 'as_notes'::regclass AND attname = 'search_vector' AND NOT attisdropped")).first(),
            "triggers": sorted(conn.scalars(text(
                "SELECT tgname || ' ' || tgenabled::text FROM pg_trigger WHERE tgrelid = 'as_notes'::regclass "
                "AND NOT tgisinternal"))),
            "index_valid": conn.scalar(text(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('ix_as_notes_search_vector')")),
            "state": conn.scalar(text("SELECT to_regclass('sa_patterns_backfill') IS NOT NULL")),
        }


KEPT = {"column": ("tsvector", ""), "triggers": ["as_notes_search_vector O"], "index_valid": True, "state": False}


def blocking_findings(project: Project, path: Path) -> list[str]:
    url = project.url.render_as_string(hide_password=False)
    done = project.run("sa_patterns.cli", "lint-migrations", "--url", url, "--format", "json")
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 2: the lint could not run
    findings = [f for f in json.loads(done.stdout)["findings"] if f["path"] == str(path)]
    return [f"{f['rule']} {f['sql'][:80]}" for f in findings if f["severity"] == "blocking"]


def doctor(engine: Engine, weights: dict[str, str]) -> list[str]:
    """The doctor's search check, with the models of the day."""

    class B(DeclarativeBase):
        pass

    type("N", (Searchable, B), {
        "__tablename__": "as_notes", "__searchable__": weights, "__annotations__": {"id": Mapped[int]},
        "id": mapped_column(primary_key=True), "title": mapped_column(String(100)), "body": mapped_column(Text)})
    with engine.connect() as conn:
        return check_search_vectors(SimpleNamespace(connection=conn, metadata=B.metadata))  # type: ignore[arg-type]


def test_adopting_searchable_with_a_writer_and_a_reader_blocks_nobody(project: Project, superuser_engine: Engine) -> None:
    weights = {"title": "A", "body": "B"}
    project.models(weights)
    path = project.revision("adopt")
    upgrade, downgrade = upgrade_body(path)
    # the online operation first, the GIN index built concurrently at the end, no generated column
    assert upgrade[0] == "op.add_search_vector('as_notes', {'title': 'A', 'body': 'B'})", upgrade
    assert upgrade[-1].startswith("op.create_index_concurrently('ix_as_notes_search_vector'"), upgrade
    assert "Computed" not in path.read_text() and "GENERATED" not in path.read_text()
    assert "op.drop_search_vector('as_notes', {'title': 'A', 'body': 'B'})" in downgrade
    path.write_text(path.read_text().replace(
        "op.add_search_vector('as_notes', {'title': 'A', 'body': 'B'})",
        "op.add_search_vector('as_notes', {'title': 'A', 'body': 'B'}, batch_size=200)"))

    # offline: every step rendered, in order: column + function + trigger, the fill, the index
    sql = project.ok("alembic", "upgrade", "head", "--sql")
    steps = [sql.find(s) for s in (
        "ALTER TABLE as_notes ADD COLUMN IF NOT EXISTS search_vector tsvector",
        "CREATE OR REPLACE FUNCTION as_notes_search_vector() RETURNS trigger",
        "CREATE OR REPLACE TRIGGER as_notes_search_vector BEFORE INSERT OR UPDATE OF title, body ON as_notes",
        "-- sa_patterns: fill as_notes.search_vector where it is NULL, in batches of 200",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_as_notes_search_vector ON as_notes USING gin (search_vector)",
    )]
    assert -1 not in steps and steps == sorted(steps), (steps, sql)

    writer, reader = under_traffic(project, "alembic", "upgrade", "head")
    assert reader.searches > 0 and reader.found > 0
    print(f"\nadopt: {writer.count} writes, {reader.searches} searches during the upgrade")
    assert catalog(superuser_engine) == KEPT
    assert wrong_vectors(superuser_engine, weights) == 0
    with superuser_engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM as_notes")) == N_NOTES + len(writer.inserted)
        # the new code's insert through the ORM: the vector is there, fetched after the flush
    with sessionmaker(superuser_engine)() as session, session.begin():
        note = Note(title="orm golf", body="written by the ORM")
        session.add(note)
        session.flush()
        assert "'golf':2A" in str(note.search_vector)
        session.rollback()

    assert "No new upgrade operations detected" in project.ok("alembic", "check")
    assert doctor(superuser_engine, weights) == []
    assert blocking_findings(project, path) == []

    # the weights change later: the function replaced and the rows refilled, online
    changed = {"title": "A", "body": "C"}
    project.models(changed)
    path2 = project.revision("weights")
    upgrade, downgrade = upgrade_body(path2)
    assert upgrade == ["op.change_search_vector('as_notes', {'title': 'A', 'body': 'C'}, "
                       "previous={'title': 'A', 'body': 'B'})"], upgrade
    assert "op.change_search_vector('as_notes', {'title': 'A', 'body': 'B'}, previous={'title': 'A', 'body': 'C'})" in downgrade
    assert doctor(superuser_engine, changed) == [
        "as_notes.search_vector: the trigger as_notes_search_vector computes another expression than the "
        "model's. Autogenerate and apply a migration (it writes op.change_search_vector, which restores "
        "the trigger and refills online)."]
    under_traffic(project, "alembic", "upgrade", "head")
    assert catalog(superuser_engine) == KEPT
    assert wrong_vectors(superuser_engine, changed) == 0
    assert "No new upgrade operations detected" in project.ok("alembic", "check")
    assert blocking_findings(project, path2) == []

    # downgrades: the weights back, then the column, trigger and function gone
    project.ok("alembic", "downgrade", "-1")
    assert wrong_vectors(superuser_engine, weights) == 0
    project.ok("alembic", "downgrade", "-1")
    assert catalog(superuser_engine) == {"column": None, "triggers": [], "index_valid": None, "state": False}
    with superuser_engine.connect() as conn:
        assert conn.scalar(text("SELECT to_regprocedure('as_notes_search_vector()')")) is None
    # and up again: a fresh column filled from scratch
    project.ok("alembic", "upgrade", "head")
    assert wrong_vectors(superuser_engine, changed) == 0


def test_a_dropped_or_disabled_trigger_is_reported_and_repaired(project: Project, superuser_engine: Engine) -> None:
    weights = {"title": "A", "body": "B"}
    project.models(weights)
    project.revision("adopt")
    project.ok("alembic", "upgrade", "head")
    for broken in ("ALTER TABLE as_notes DISABLE TRIGGER as_notes_search_vector",
                   "DROP TRIGGER as_notes_search_vector ON as_notes"):
        with superuser_engine.begin() as conn:
            conn.execute(text(broken))
            conn.execute(text("INSERT INTO as_notes (title) VALUES ('lost kilo')"))
        problems = doctor(superuser_engine, weights)
        assert len(problems) == 1 and ("disabled" in problems[0] if "DISABLE" in broken else
                                       "without the trigger as_notes_search_vector" in problems[0]), problems
        done = project.run("alembic", "check")
        assert done.returncode != 0 and "change_search_vector" in done.stdout + done.stderr, done.stdout + done.stderr
    path = project.revision("repair")
    upgrade, downgrade = upgrade_body(path)
    assert upgrade == ["op.change_search_vector('as_notes', {'title': 'A', 'body': 'B'})"], upgrade
    assert "nothing to restore" in downgrade
    project.ok("alembic", "upgrade", "head")
    assert wrong_vectors(superuser_engine, weights) == 0  # the rows written meanwhile refilled
    assert catalog(superuser_engine) == KEPT
    assert doctor(superuser_engine, weights) == []
    assert "No new upgrade operations detected" in project.ok("alembic", "check")


def test_a_new_table_keeps_the_generated_column(project: Project) -> None:
    project.models(None, extra=NEW_TABLE)
    path = project.revision("pages")
    script = path.read_text()
    assert "sa.Computed(" in script and "add_search_vector" not in script, script


def test_an_interrupted_fill_resumes_where_it_stopped(project: Project, superuser_engine: Engine) -> None:
    weights = {"title": "A", "body": "B"}
    project.models(weights)
    path = project.revision("adopt")
    path.write_text(re.sub(r"op\.add_search_vector\(('as_notes', \{[^}]*\})\)", r"op.add_search_vector(\1, batch_size=100)",
                           path.read_text()))
    with superuser_engine.begin() as conn:  # a failure half way through the fill
        conn.execute(text(
            "CREATE FUNCTION as_stop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN "
            "IF NEW.search_vector IS NOT NULL THEN RAISE EXCEPTION 'interrupted'; END IF; RETURN NEW; END$$"))
        conn.execute(text("CREATE TRIGGER as_stop BEFORE UPDATE ON as_notes FOR EACH ROW "
                          "WHEN (NEW.id = 1550) EXECUTE FUNCTION as_stop()"))
    done = project.run("alembic", "upgrade", "head")
    assert done.returncode != 0 and "interrupted" in done.stderr
    with superuser_engine.begin() as conn:
        rows_done, started = conn.execute(text(
            "SELECT rows_done, started_at FROM sa_patterns_backfill WHERE name = 'as_notes.search_vector'")).one()
        assert rows_done == 1500  # 15 batches committed
        assert conn.scalar(text("SELECT count(*) FROM as_notes WHERE search_vector IS NOT NULL")) == 1500
        conn.execute(text("DROP TRIGGER as_stop ON as_notes"))
        # every write of the progress record logged: a restart would write rows_done = 0
        conn.execute(text("CREATE TABLE as_progress (rows_done bigint, started_at timestamptz)"))
        conn.execute(text(
            "CREATE FUNCTION as_log() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$BEGIN "
            "INSERT INTO as_progress VALUES (NEW.rows_done, NEW.started_at); RETURN NEW; END$$"))
        conn.execute(text(
            "CREATE TRIGGER as_log AFTER UPDATE ON sa_patterns_backfill FOR EACH ROW EXECUTE FUNCTION as_log()"))
    project.ok("alembic", "upgrade", "head")
    with superuser_engine.connect() as conn:
        logged = conn.execute(text("SELECT rows_done, started_at FROM as_progress")).all()
    done_counts = [r[0] for r in logged]
    assert {r[1] for r in logged} == {started}
    assert done_counts == sorted(done_counts) and done_counts[0] == 1600 and done_counts[-1] == N_NOTES
    assert wrong_vectors(superuser_engine, weights) == 0
    assert catalog(superuser_engine) == KEPT


def test_a_versioned_table_adopts_searchable_and_its_history_copies_the_vector(
    project: Project, superuser_engine: Engine
) -> None:
    weights = {"title": "A", "body": "B"}
    project.models(weights)
    path = project.revision("adopt")
    upgrade, _ = upgrade_body(path)
    # the source's vector, the online form: its column and trigger first; then the history's
    # copy (a plain nullable column: no rewrite) and the history function, which knows the
    # vector is derived; then the fill, which therefore opens no version
    assert upgrade[0] == "op.add_search_vector('as_notes', {'title': 'A', 'body': 'B'}, fill=False)", upgrade
    assert upgrade[1] == ("op.add_column('as_notes_history', sa.Column('search_vector', postgresql.TSVECTOR(), "
                          "nullable=True), if_not_exists=True)"), upgrade
    assert upgrade[2] == "op.replace_entity(", upgrade  # the history function (multi-line)
    assert upgrade[3] == "op.fill_search_vector('as_notes', {'title': 'A', 'body': 'B'})", upgrade
    assert "Computed" not in path.read_text()
    with superuser_engine.connect() as conn:
        before = int(conn.scalar(text("SELECT count(*) FROM as_notes_history")))
    writer, _ = under_traffic(project, "alembic", "upgrade", "head")
    assert wrong_vectors(superuser_engine, weights) == 0
    with superuser_engine.connect() as conn:  # the writer's versions only, not one per row
        assert int(conn.scalar(text("SELECT count(*) FROM as_notes_history"))) - before <= writer.count
    assert "No new upgrade operations detected" in project.ok("alembic", "check")
    with superuser_engine.begin() as conn:
        conn.execute(text("UPDATE as_notes SET title = 'versioned lima' WHERE id = 42"))
    with superuser_engine.connect() as conn:
        copied = conn.scalar(text(
            "SELECT h.search_vector = n.search_vector AND h.search_vector @@ 'lima'::tsquery FROM as_notes_history h "
            "JOIN as_notes n USING (id) WHERE id = 42 AND h.valid_to IS NULL"))
    assert copied is True

    # the vector is derived: a weights change refills every row's vector and opens no version
    # (the history function leaves derived columns out of its change test); a real edit does
    def versions() -> int:
        with superuser_engine.connect() as conn:
            return int(conn.scalar(text("SELECT count(*) FROM as_notes_history")))

    before = versions()
    project.models({"title": "B", "body": "A"})
    project.revision("reweigh")
    project.ok("alembic", "upgrade", "head")
    assert wrong_vectors(superuser_engine, {"title": "B", "body": "A"}) == 0
    assert versions() == before
    with superuser_engine.begin() as conn:
        conn.execute(text("UPDATE as_notes SET title = 'versioned mike' WHERE id = 42"))
    assert versions() == before + 1
