"""``TenantMixin`` added to a populated table with ``op.add_tenant_column``: for each source kind
(a constant, a column, a parent), ``alembic upgrade head`` runs while a writer inserts rows
without a tenant (the old code) and updates others, each statement under ``lock_timeout =
200ms``. No writer statement fails, every row ends with its tenant (raw SQL), NOT NULL and the
policies hold, a second autogenerate is empty, and the linter finds nothing blocking in the
revision. An interrupted fill resumes; rows whose parent is missing stop the migration, named.

The revision is the one autogenerate writes, with its ``add_column`` + ``create_index`` of
``tenant_id`` replaced by ``op.add_tenant_column`` (what docs/adopting.md tells the user to do).
Migrations run in a subprocess as the owner role, as a deployment runs them. The writer is a
job of the old code that works across tenants as the owner (``app.all_tenants``): its writes
are allowed before and after the policies, so any failure is the migration's doing.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import URL, Engine, MetaData, create_engine, text
from sqlalchemy.exc import IntegrityError

import sa_patterns.alembic  # noqa: F401  (registers op.add_tenant_column)
from sa_patterns.cli.init import template_dir

N_NOTES = 3000
N_PROJECTS = 20

MODELS = '''
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sa_patterns import TenantMixin
from sa_patterns.tenancy.adopt import adopt_tenants, tenant_from


class Base(DeclarativeBase):
    pass


class Project(TenantMixin, Base):
    __tablename__ = "ad_projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


{decorator}
class Note({bases}Base):
    __tablename__ = "ad_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    org_id: Mapped[int]
    project_id: Mapped[int]{fk}
    touched: Mapped[int] = mapped_column(server_default="0")
'''

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

SOURCES = {
    "constant": ("tenant_constant(7)", "tenant_id IS DISTINCT FROM 7"),
    "column": ('tenant_column("org_id")', "tenant_id IS DISTINCT FROM org_id"),
    "join": (
        'tenant_from("ad_projects", on="project_id")',
        "tenant_id IS DISTINCT FROM (SELECT p.tenant_id FROM ad_projects p WHERE p.id = project_id)",
    ),
}
SOURCES["join_fk"] = SOURCES["join"]
# the model decorated with @adopt_tenants: autogenerate writes the operation itself
SOURCES["autogenerate"] = SOURCES["join"]


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return MetaData()  # the role model, nothing built: the migrations build


class Project:
    """A migration directory (alembic.ini, env.py, models.py) run by subprocesses as the owner."""

    def __init__(self, root: Path, url: URL, fk: bool = False) -> None:
        self.root, self.url, self.fk, self.decorator = root, url, fk, ""
        (root / "migrations" / "versions").mkdir(parents=True)
        (root / "migrations" / "env.py").write_text(ENV)
        (root / "migrations" / "script.py.mako").write_text((template_dir() / "script.py.mako").read_text())
        (root / "alembic.ini").write_text("[alembic]\nscript_location = migrations\nprepend_sys_path = .\n")
        self.models(tenant=False)

    def models(self, *, tenant: bool) -> None:
        fk = ' = mapped_column(ForeignKey("ad_projects.id"))' if self.fk else ""
        (self.root / "models.py").write_text(MODELS.format(
            bases="TenantMixin, " if tenant else "", fk=fk, decorator=self.decorator if tenant else ""))

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


def adopt_revision(project: Project, source: str, extra: str = "") -> Path:
    """The revision autogenerate writes for ``Note(TenantMixin)`` with no ``@adopt_tenants``,
    edited as the docs say: its ``source=no_existing_rows()`` replaced by where the rows'
    tenants come from, the trigger kept until ``op.drop_tenant_fill`` at the end."""
    project.models(tenant=True)
    path = project.revision("adopt")
    script = path.read_text()
    for name in ("add_tenant_column", "drop_tenant_column"):
        written = f"op.{name}('ad_notes', source=no_existing_rows())"
        assert script.count(written) == 1, script
        tail = ", keep_trigger=True" if name == "add_tenant_column" else ""
        script = script.replace(written, f"op.{name}('ad_notes', source={source}{extra}{tail})")
    assert "ix_ad_notes_tenant_id" not in script  # add_tenant_column builds it, its reverse drops it
    # the fill trigger goes last: the old code's inserts get a tenant until the policies are in
    script = script.replace(
        '\n\ndef downgrade() -> None:', '    op.drop_tenant_fill("ad_notes")\n\n\ndef downgrade() -> None:'
    )
    script = script.replace(
        "from sa_patterns.tenancy.adopt import no_existing_rows\n",
        "from sa_patterns.tenancy.adopt import tenant_column, tenant_constant, tenant_from\n",
    )
    path.write_text(script)
    return path


@pytest.fixture
def project(
    tmp_path: Path, owner_engine: Engine, db_schema: str, superuser_engine: Engine, request: pytest.FixtureRequest
) -> Iterator[Project]:
    """The tables before the adoption, with rows; ``Note.project_id`` a foreign key for the
    ``join_fk`` case (the toolkit then also expects the composite tenant reference)."""
    url = owner_engine.url.update_query_dict({"options": f"-csearch_path={db_schema}"})
    kind = request.node.callspec.params.get("kind", "") if hasattr(request.node, "callspec") else ""
    proj = Project(tmp_path, url, fk=kind in ("join_fk", "autogenerate"))
    proj.revision("base")
    proj.ok("alembic", "upgrade", "head")
    with owner_engine.begin() as conn:
        conn.execute(text("SELECT set_config('app.all_tenants', 'on', true)"))
        conn.execute(text(
            "INSERT INTO ad_projects (id, tenant_id, name) SELECT g, 1 + g % 3, 'p' || g "
            "FROM generate_series(1, :n) g"), {"n": N_PROJECTS})
        conn.execute(text(
            "INSERT INTO ad_notes (title, org_id, project_id) SELECT 'n' || g, 100 + g % 5, 1 + g % :p "
            "FROM generate_series(1, :n) g"), {"n": N_NOTES, "p": N_PROJECTS})
        conn.execute(text("ANALYZE ad_notes"))
    yield proj
    with superuser_engine.begin() as conn:
        for table in ("ad_notes", "ad_projects", "alembic_version", "sa_patterns_backfill"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE"))
        conn.execute(text("DROP FUNCTION IF EXISTS ad_notes_tenant_id_fill() CASCADE"))


class Writer(threading.Thread):
    """The old code: inserts notes without a tenant, updates random ones and reads them (by key
    and by project), one short transaction each under lock_timeout 200ms, until stopped; keeps
    every error.

    The old code retires at the cut-over, when the policies commit (from then on a write must
    carry a tenant: the new code's): each insert says so in the statement itself, which waits
    for the lock the policies hold and then sees them, so it never races that commit."""

    def __init__(self, url: URL) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(url)
        self.stop, self.started = threading.Event(), threading.Event()
        self.errors: list[BaseException] = []
        self.inserted: list[int] = []
        self.writes = self.reads = 0
        self.longest = 0.0

    def run(self) -> None:
        rng = random.Random(24)
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                try:
                    with conn.begin():
                        conn.execute(text("SET LOCAL lock_timeout = '200ms'"))
                        conn.execute(text("SELECT set_config('app.all_tenants', 'on', true)"))
                        choice = rng.random()
                        if choice < 0.25:  # a reader: one note, a project's notes
                            conn.execute(text("SELECT title FROM ad_notes WHERE id = :id"),
                                         {"id": rng.randint(1, N_NOTES)}).all()
                            conn.execute(text("SELECT id, title FROM ad_notes WHERE project_id = :p "
                                              "ORDER BY id LIMIT 20"), {"p": rng.randint(1, N_PROJECTS)}).all()
                            self.reads += 1
                        elif choice < 0.6:
                            self.inserted.extend(conn.scalars(text(
                                "INSERT INTO ad_notes (title, org_id, project_id) SELECT 'w', :o, :p "
                                "WHERE NOT EXISTS (SELECT FROM pg_policies WHERE tablename = 'ad_notes') "
                                "RETURNING id"),
                                {"o": 100 + rng.randint(0, 4), "p": rng.randint(1, N_PROJECTS)}))
                        else:
                            conn.execute(text("UPDATE ad_notes SET touched = touched + 1 WHERE id = :id"),
                                         {"id": rng.randint(1, N_NOTES)})
                except Exception as exc:  # every failure is a finding
                    self.errors.append(exc)
                self.longest = max(self.longest, time.perf_counter() - t0)
                self.writes += 1
                self.started.set()
        self.engine.dispose()


def catalog(engine: Engine) -> dict[str, object]:
    with engine.connect() as conn:
        return {
            "not_null": conn.scalar(text(
                "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'ad_notes'::regclass AND attname = 'tenant_id'")),
            "checks": conn.scalar(text(
                "SELECT count(*) FROM pg_constraint WHERE conrelid = 'ad_notes'::regclass AND contype = 'c'")),
            "triggers": conn.scalar(text(
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'ad_notes'::regclass AND NOT tgisinternal")),
            "index_valid": conn.scalar(text(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('ix_ad_notes_tenant_id')")),
            "policies": sorted(conn.scalars(text("SELECT policyname FROM pg_policies WHERE tablename = 'ad_notes'"))),
            "rls": tuple(conn.execute(text(
                "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'ad_notes'::regclass")).one()),
        }


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_adopting_with_a_writer_loses_nothing_and_blocks_nobody(
    kind: str, project: Project, superuser_engine: Engine, engine: Engine
) -> None:
    source, wrong = SOURCES[kind]
    if kind == "autogenerate":
        project.decorator = f"@adopt_tenants({source}, batch_size=200)"
        project.models(tenant=True)
        path = project.revision("adopt")
        body = path.read_text().split("def upgrade() -> None:")[1].split("def downgrade() -> None:")
        # before anything else on the table (what runs before it commits before its block;
        # a lock autogenerate takes before it is taken again after it, for a parent source)
        upgrade = [line.strip() for line in body[0].splitlines()
                   if line.strip().startswith("op.") and not line.strip().startswith("op.lock_tables(")]
        on_notes = [line for line in upgrade if "ad_notes" in line]
        assert on_notes[0].startswith("op.add_tenant_column('ad_notes', source=tenant_from('ad_projects', "
                                      "on='project_id'), batch_size=200, keep_trigger=True)"), upgrade
        # the trigger goes when the policies commit (what runs concurrently after needs none)
        entities = [i for i, line in enumerate(upgrade) if line.startswith("op.create_entity(")]
        assert upgrade.index("op.drop_tenant_fill('ad_notes')") > max(entities), upgrade
        assert "NOT NULL" not in body[0]
        assert "op.drop_tenant_column('ad_notes'" in body[1] and "ix_ad_notes_tenant_id" not in path.read_text()
    else:
        path = adopt_revision(project, source, ", batch_size=200")
    writer = Writer(project.url)
    writer.start()
    assert writer.started.wait(10)
    try:
        out = project.ok("alembic", "upgrade", "head")
    finally:
        writer.stop.set()
        writer.join(10)
    assert writer.errors == [], writer.errors[:3]
    assert writer.inserted and writer.writes > 20 and writer.reads > 5, out
    print(f"\n{kind}: {writer.writes} writes during the upgrade, longest {writer.longest * 1000:.0f} ms")

    with superuser_engine.connect() as conn:  # RLS never stops the superuser: every row
        assert conn.scalar(text("SELECT count(*) FROM ad_notes")) == N_NOTES + len(writer.inserted)
        assert conn.scalar(text(f"SELECT count(*) FROM ad_notes WHERE {wrong}")) == 0
        assert conn.scalar(text("SELECT count(*) FROM ad_notes WHERE tenant_id IS NULL")) == 0
        tenants = dict(conn.execute(text("SELECT tenant_id, count(*) FROM ad_notes GROUP BY 1")).all())
    assert catalog(superuser_engine) == {
        "not_null": True, "checks": 0, "triggers": 0, "index_valid": True, "rls": (True, True),
        "policies": ["ad_notes_tenant_admin", "ad_notes_tenant_isolation", "ad_notes_tenant_owner"],
    }
    # the wall: the app role sees its tenant's rows only, and cannot write a row of no tenant
    some = min(tenants)
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(some)})
        assert conn.scalar(text("SELECT count(*) FROM ad_notes")) == tenants[some]
    with superuser_engine.connect() as conn, pytest.raises(IntegrityError, match=r"violates not-null constraint"):
        conn.execute(text("INSERT INTO ad_notes (title, org_id, project_id) VALUES ('x', 1, 1)"))

    # a second autogenerate finds nothing: the table is what the model declares
    assert "No new upgrade operations detected" in project.ok("alembic", "check")

    # the linter: nothing blocking in the adoption revision (sizes from the live database)
    url = project.url.render_as_string(hide_password=False)
    done = project.run("sa_patterns.cli", "lint-migrations", "--url", url, "--format", "json")
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 2: the lint could not run
    findings = [f for f in json.loads(done.stdout)["findings"] if f["path"] == str(path)]
    assert [f for f in findings if f["severity"] == "blocking"] == [], "\n".join(f"{f['severity']} {f['rule']} {f['line']} {f['sql'][:70]} {f['why']}" for f in findings)

    # the downgrade: policies, then the index concurrently, then the column (no rewrite)
    project.ok("alembic", "downgrade", "-1")
    with superuser_engine.connect() as conn:
        assert conn.scalar(text(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'ad_notes'::regclass AND attname = 'tenant_id' "
            "AND NOT attisdropped")) == 0
        assert conn.scalar(text("SELECT count(*) FROM pg_policies WHERE tablename = 'ad_notes'")) == 0
    # and up again: a fresh column is filled from scratch
    project.ok("alembic", "upgrade", "head")
    with superuser_engine.connect() as conn:
        assert conn.scalar(text(f"SELECT count(*) FROM ad_notes WHERE {wrong} OR tenant_id IS NULL")) == 0


def test_an_interrupted_fill_resumes_where_it_stopped(project: Project, owner_engine: Engine, superuser_engine: Engine) -> None:
    adopt_revision(project, 'tenant_from("ad_projects", on="project_id")', ", batch_size=100")
    # a failure half way through the fill (a deploy, a crash: the same outcome)
    with superuser_engine.begin() as conn:
        conn.execute(text(
            "CREATE FUNCTION ad_stop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN "
            "IF to_jsonb(NEW) ->> 'tenant_id' IS NOT NULL THEN RAISE EXCEPTION 'interrupted'; END IF; "
            "RETURN NEW; END$$"))
        conn.execute(text(
            "CREATE TRIGGER ad_stop BEFORE UPDATE ON ad_notes FOR EACH ROW "
            "WHEN (NEW.id = 1550) EXECUTE FUNCTION ad_stop()"))
    done = project.run("alembic", "upgrade", "head")
    assert done.returncode != 0 and "interrupted" in done.stderr
    with superuser_engine.begin() as conn:
        rows_done, started = conn.execute(text(
            "SELECT rows_done, started_at FROM sa_patterns_backfill WHERE name = 'ad_notes.tenant_id'")).one()
        assert rows_done == 1500  # 15 batches committed
        assert conn.scalar(text("SELECT count(*) FROM ad_notes WHERE tenant_id IS NOT NULL")) == 1500
        conn.execute(text("DROP TRIGGER ad_stop ON ad_notes"))
        conn.execute(text("DROP FUNCTION ad_stop()"))
        # every write of the progress record is logged: a restart would write rows_done = 0
        conn.execute(text("CREATE TABLE ad_progress (rows_done bigint, started_at timestamptz)"))
        conn.execute(text(
            "CREATE FUNCTION ad_log() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$BEGIN "
            "INSERT INTO ad_progress VALUES (NEW.rows_done, NEW.started_at); RETURN NEW; END$$"))
        conn.execute(text(
            "CREATE TRIGGER ad_log AFTER UPDATE ON sa_patterns_backfill FOR EACH ROW EXECUTE FUNCTION ad_log()"))

    project.ok("alembic", "upgrade", "head")
    with superuser_engine.begin() as conn:
        logged = conn.execute(text("SELECT rows_done, started_at FROM ad_progress")).all()
        conn.execute(text("DROP TABLE ad_progress"))
        conn.execute(text("DROP FUNCTION ad_log()"))
        assert conn.scalar(text(f"SELECT count(*) FROM ad_notes WHERE {SOURCES['join'][1]}")) == 0
        # a finished adoption forgets its record (and the state table, which no model declares)
        assert conn.scalar(text("SELECT to_regclass('sa_patterns_backfill')")) is None
    # resumed: the same run, every row once, from 1,500 up to all of them (the last write is
    # the finish)
    done = [r[0] for r in logged]
    assert {r[1] for r in logged} == {started}
    assert done == sorted(done) and done[0] == 1600 and done[-1] == N_NOTES
    assert catalog(superuser_engine)["not_null"] is True


def test_rows_without_a_parent_stop_the_migration_named_before_anything_irreversible(
    project: Project, owner_engine: Engine, superuser_engine: Engine
) -> None:
    adopt_revision(project, 'tenant_from("ad_projects", on="project_id")')
    with superuser_engine.begin() as conn:
        conn.execute(text("UPDATE ad_notes SET project_id = 999 WHERE id IN (7, 70, 700, 2000)"))
    done = project.run("alembic", "upgrade", "head")
    assert done.returncode != 0
    assert "BackfillError" in done.stderr
    assert "4 row(s) have no tenant" in done.stderr and "7, 70, 700, 2000" in done.stderr
    assert "tenant_id of the ad_projects row whose id is project_id" in done.stderr
    found = catalog(superuser_engine)
    assert (found["not_null"], found["policies"], found["triggers"]) == (False, [], 1)
    with superuser_engine.connect() as conn:
        assert conn.scalar(text("SELECT version_num FROM alembic_version")) != "adopt"
        assert conn.scalar(text("SELECT count(*) FROM ad_notes WHERE tenant_id IS NULL")) == 4

    # the user gives them a parent: the trigger still in place fills their tenant; run again
    with superuser_engine.begin() as conn:
        conn.execute(text("UPDATE ad_notes SET project_id = 3 WHERE project_id = 999"))
        assert conn.scalar(text("SELECT count(*) FROM ad_notes WHERE tenant_id IS NULL")) == 0
    project.ok("alembic", "upgrade", "head")
    assert catalog(superuser_engine)["not_null"] is True
    assert "No new upgrade operations detected" in project.ok("alembic", "check")


def test_a_schema_qualified_table_with_uuid_tenants(owner_engine: Engine, db_schema: str) -> None:
    """``schema=`` and ``type_=``: the operation on a MigrationContext, as a revision runs it."""
    from uuid import UUID

    import sqlalchemy as sa
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    from sa_patterns.tenancy.adopt import tenant_constant

    tenant = UUID("00000000-0000-0000-0000-0000000000aa")
    with owner_engine.begin() as conn:
        conn.execute(text(f'CREATE TABLE "{db_schema}".ad_docs (id int PRIMARY KEY, body text)'))
        conn.execute(text(f'INSERT INTO "{db_schema}".ad_docs SELECT g, \'b\' FROM generate_series(1, 1200) g'))
    try:
        with owner_engine.connect() as conn:
            Operations(MigrationContext.configure(conn)).add_tenant_column(
                "ad_docs", tenant_constant(tenant), schema=db_schema, type_=sa.Uuid(), batch_size=500)
        with owner_engine.connect() as conn:
            assert dict(conn.execute(text(f'SELECT tenant_id, count(*) FROM "{db_schema}".ad_docs GROUP BY 1')).all()) == {
                tenant: 1200}
            assert conn.scalar(text(
                "SELECT format_type(atttypid, atttypmod) || ' ' || attnotnull FROM pg_attribute "
                f"WHERE attrelid = '\"{db_schema}\".ad_docs'::regclass AND attname = 'tenant_id'")) == "uuid true"
            assert conn.scalar(text(f"SELECT to_regclass('\"{db_schema}\".ix_ad_docs_tenant_id') IS NOT NULL"))
            assert conn.scalar(text("SELECT to_regclass('sa_patterns_backfill')")) is None
    finally:
        with owner_engine.begin() as conn:
            conn.execute(text(f'DROP TABLE "{db_schema}".ad_docs'))


def test_without_a_source_rows_stop_the_upgrade_and_an_empty_table_adopts(
    project: Project, superuser_engine: Engine
) -> None:
    """No ``@adopt_tenants``: autogenerate writes ``source=no_existing_rows()``. On the populated
    table the upgrade stops before ``NOT NULL``, naming the rows and what to write; emptied, the
    same revision adopts it, and a second autogenerate is empty."""
    project.models(tenant=True)
    path = project.revision("adopt")
    script = path.read_text()
    assert "op.add_tenant_column('ad_notes', source=no_existing_rows())" in script
    assert "NOT NULL" not in script.split("def downgrade")[0] and "drop_tenant_fill" not in script
    done = project.run("alembic", "upgrade", "head")
    assert done.returncode != 0 and "Traceback" in done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith(
        f"sa_patterns.errors.BackfillError: adopting tenant_id on ad_notes: {N_NOTES} row(s) have no tenant")
    assert "1, 2, 3, 4, 5, ..." in message and "@adopt_tenants(" in message
    found = catalog(superuser_engine)
    assert (found["not_null"], found["policies"], found["triggers"], found["checks"]) == (False, [], 0, 0)
    with superuser_engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM ad_notes WHERE tenant_id IS NULL")) == N_NOTES

    with superuser_engine.begin() as conn:  # the rows moved elsewhere (or the table was empty)
        conn.execute(text("DELETE FROM ad_notes"))
    project.ok("alembic", "upgrade", "head")
    assert catalog(superuser_engine) == {
        "not_null": True, "checks": 0, "triggers": 0, "index_valid": True, "rls": (True, True),
        "policies": ["ad_notes_tenant_admin", "ad_notes_tenant_isolation", "ad_notes_tenant_owner"],
    }
    assert "No new upgrade operations detected" in project.ok("alembic", "check")
    project.ok("alembic", "downgrade", "-1")
    assert catalog(superuser_engine)["not_null"] is None  # the column is gone
