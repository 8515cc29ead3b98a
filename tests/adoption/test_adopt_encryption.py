"""A plaintext column of a populated ``Audited`` + ``Versioned`` table becomes ``EncryptedString``
with a blind index, with ``op.encrypt_column`` as autogenerate writes it (nothing edited).

During ``alembic upgrade head`` a writer inserts and updates the column, first as the old
application (plaintext) then as the new one (the rolling deploy), and two readers (old model and
new model) read it, each statement under ``lock_timeout = 200ms``: none fails. Afterwards every
ciphertext decrypts to the value last written, the blind index finds each row, and no plaintext
is left in the table, its history or the audit log (raw SQL over every column); a second
autogenerate is empty; the linter finds nothing blocking; an interrupted run resumes; the
downgrade decrypts. Migrations run in a subprocess as the owner role, as a deployment runs them.
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
from typing import Any

import pytest
from sqlalchemy import (
    URL,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

import sa_patterns.alembic  # noqa: F401  (registers op.encrypt_column)
from sa_patterns.cli.init import template_dir
from sa_patterns.encryption import EncryptedString, Keyring

N_ROWS = 3000
KEY, INDEX_KEY = bytes(range(32)), bytes(range(32, 64))

KEYS = f'''
from sa_patterns.encryption import Keyring

KEYRING = Keyring({{"k1": bytes.fromhex("{KEY.hex()}")}}, index_keys={{"i1": bytes.fromhex("{INDEX_KEY.hex()}")}})
'''

MODELS = '''
from sqlalchemy import String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sa_patterns import Audited, EncryptedString, Versioned
from keys import KEYRING


class Base(DeclarativeBase):
    pass


class Customer(Audited, Versioned, Base):
    __tablename__ = "ae_customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column({email_type})
    note: Mapped[str] = mapped_column(String(50), server_default="")
'''
ENCRYPTED = 'EncryptedString(KEYRING, blind_index=True, normalize="lower")'

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

KEYRING = Keyring({"k1": KEY}, index_keys={"i1": INDEX_KEY})
OLD = Table("ae_customers", MetaData(), Column("id", Integer, primary_key=True), Column("email", Text),
            Column("note", String(50)))
NEW = Table("ae_customers", MetaData(), Column("id", Integer, primary_key=True),
            Column("email", EncryptedString(KEYRING, blind_index=True, normalize="lower")), Column("note", String(50)))
# what the writers' and readers' engines need during an adoption that changes a column's type
NO_PREPARE = {"prepare_threshold": None}


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return MetaData()  # the role model, nothing built: the migrations build


class Project:
    """A migration directory (alembic.ini, env.py, models.py, keys.py) run by subprocesses."""

    def __init__(self, root: Path, url: URL) -> None:
        self.root, self.url = root, url
        (root / "migrations" / "versions").mkdir(parents=True)
        (root / "migrations" / "env.py").write_text(ENV)
        (root / "migrations" / "script.py.mako").write_text((template_dir() / "script.py.mako").read_text())
        (root / "alembic.ini").write_text("[alembic]\nscript_location = migrations\nprepend_sys_path = .\n")
        (root / "keys.py").write_text(KEYS)
        self.models(encrypted=False)

    def models(self, *, encrypted: bool) -> None:
        (self.root / "models.py").write_text(MODELS.format(email_type=ENCRYPTED if encrypted else "Text"))

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

    def adopt(self, **options: object) -> Path:
        """The revision autogenerate writes once the model's column is encrypted (options such
        as batch_size added to its call, as a user tunes it)."""
        self.models(encrypted=True)
        path = self.revision("encrypt")
        if options:
            script = path.read_text()
            extra = "".join(f", {k}={v!r}" for k, v in options.items())
            call = script.split("op.encrypt_column(")[1].split("\n")[0]
            script = script.replace(call, call[:-1] + extra + ")", 1)
            path.write_text(script)
        return path


@pytest.fixture
def project(tmp_path: Path, owner_engine: Engine, db_schema: str, superuser_engine: Engine) -> Iterator[Project]:
    """The table before the adoption: rows, each with its history, and audit entries (100 rows
    had their email changed)."""
    url = owner_engine.url.update_query_dict({"options": f"-csearch_path={db_schema}"})
    proj = Project(tmp_path, url)
    proj.revision("base")
    proj.ok("alembic", "upgrade", "head")
    with owner_engine.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path = "{db_schema}"'))
        conn.execute(text(
            "INSERT INTO ae_customers (id, email) SELECT g, 'User' || g || '@example.com' "
            "FROM generate_series(1, :n) g"), {"n": N_ROWS})
        conn.execute(text("UPDATE ae_customers SET email = 'user' || id || '@example.com' WHERE id <= 100"))
        conn.execute(text("SELECT setval(pg_get_serial_sequence('ae_customers', 'id'), :n)"), {"n": N_ROWS})
        conn.execute(text("ANALYZE ae_customers"))
    yield proj
    with superuser_engine.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path = "{db_schema}"'))
        for table in ("ae_customers", "ae_customers_history", "audit_log", "alembic_version", "sa_patterns_backfill"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE"))
        conn.execute(text("DROP FUNCTION IF EXISTS ae_customers_email_sa_mark() CASCADE"))


def expected_initial() -> dict[int, str]:
    return {i: (f"user{i}@example.com" if i <= 100 else f"User{i}@example.com") for i in range(1, N_ROWS + 1)}


class Writer(threading.Thread):
    """The application writing: inserts and email updates, one short transaction each under
    lock_timeout 200ms; as the old application (plaintext) until ``deployed`` is set, then as
    the new one (EncryptedString). Keeps every error and the value each row was last given."""

    def __init__(self, url: URL) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(url, connect_args=NO_PREPARE)
        self.stop, self.started, self.deployed = threading.Event(), threading.Event(), threading.Event()
        self.errors: list[BaseException] = []
        self.values = expected_initial()
        self.writes = {"old": 0, "new": 0}
        self.longest = 0.0

    def run(self) -> None:
        rng = random.Random(24)
        n = 0
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                model = "new" if self.deployed.is_set() else "old"
                table = NEW if model == "new" else OLD
                n += 1
                email = f"W{model}{n}@example.com"
                t0 = time.perf_counter()
                try:
                    with conn.begin():
                        conn.execute(text("SET LOCAL lock_timeout = '200ms'"))
                        if rng.random() < 0.4:
                            new_id = conn.execute(insert(table).values(email=email, note=model)
                                                  .returning(table.c.id)).scalar_one()
                        else:
                            new_id = rng.randint(1, N_ROWS)
                            conn.execute(update(table).where(table.c.id == new_id).values(email=email))
                    self.values[new_id] = email
                    self.writes[model] += 1
                except Exception as exc:  # every failure is a finding
                    self.errors.append(exc)
                self.longest = max(self.longest, time.perf_counter() - t0)
                self.started.set()
                time.sleep(0.002)
        self.engine.dispose()


class Reader(threading.Thread):
    """The old or the new application reading rows (and, new, looking one up by email)."""

    def __init__(self, url: URL, table: Table, deployed: threading.Event | None = None) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(url, connect_args=NO_PREPARE)
        self.table, self.stop, self.deployed = table, threading.Event(), deployed
        self.errors: list[BaseException] = []
        self.wrong: list[object] = []
        self.reads = 0

    def run(self) -> None:
        rng = random.Random(7)
        t = self.table
        if self.deployed is not None:  # the new application runs once the fill has begun
            self.deployed.wait()
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                try:
                    with conn.begin():
                        conn.execute(text("SET LOCAL lock_timeout = '200ms'"))
                        rows = conn.execute(select(t.c.id, t.c.email).where(t.c.id.between(
                            start := rng.randint(1, N_ROWS - 20), start + 20))).all()
                        if t is NEW:  # every value reads as plaintext, whichever form it is stored in
                            self.wrong += [r for r in rows if not r.email.endswith("@example.com")]
                            conn.execute(select(t.c.id).where(t.c.email == f"user{rng.randint(1, 100)}@example.com")).all()
                    self.reads += 1
                except Exception as exc:
                    self.errors.append(exc)
                time.sleep(0.002)
        self.engine.dispose()


def plaintext_left(conn: object, needle: str = "@example.com") -> dict[str, int]:
    """Rows of the table, its history and the audit log whose any column (as text; a jsonb's
    strings, a bytea's hex) holds a known plaintext or its bytes."""
    hexed = needle.encode().hex()
    found = {}
    for table in ("ae_customers", "ae_customers_history", "audit_log"):
        found[table] = conn.execute(text(  # type: ignore[attr-defined]
            f"SELECT count(*) FROM {table} t WHERE strpos(lower(t::text), :n) > 0 OR strpos(t::text, :h) > 0"),
            {"n": needle, "h": hexed}).scalar_one()
    return found


def test_encrypting_with_a_writer_and_readers_leaves_no_plaintext_and_fails_no_statement(
    project: Project, owner_engine: Engine, db_schema: str
) -> None:
    path = project.adopt(batch_size=200, lock_timeout='100ms', quiet_for=1.0)
    script = path.read_text()
    upgrade, downgrade = script.split("def upgrade() -> None:")[1].split("def downgrade() -> None:")
    ops = [line.strip() for line in upgrade.splitlines() if line.strip().startswith("op.")]
    assert ops[0] == (
        "op.encrypt_column('ae_customers', 'email', blind_index='email_bidx', normalize=('lower',), "
        "keyring='keys:KEYRING', history_table='ae_customers_history', audit_log='audit_log', "
        "nullable=False, batch_size=200, lock_timeout='100ms', quiet_for=1.0)"), ops
    # the rest is the audit and history functions replaced (the history copies email_bidx)
    assert [line.split("(")[0] for line in ops[1:]] == ["op.replace_entity"] * (len(ops) - 1), ops
    assert "op.decrypt_column('ae_customers', 'email'" in downgrade

    url = project.url
    writer = Writer(url)
    old_reader, new_reader = Reader(url, OLD), Reader(url, NEW, writer.deployed)
    for thread in (writer, old_reader, new_reader):
        thread.start()
    assert writer.started.wait(10)

    def deploy_when_the_fill_runs() -> None:  # the new application rolls out during the fill
        with owner_engine.connect() as conn:
            conn.execute(text(f'SET search_path = "{db_schema}"'))
            while not writer.stop.is_set():
                conn.rollback()
                if conn.execute(text("SELECT to_regclass('sa_patterns_backfill') IS NOT NULL")).scalar() and \
                        conn.execute(text("SELECT coalesce(max(rows_done), 0) FROM sa_patterns_backfill")).scalar() >= 1000:
                    break
                time.sleep(0.01)
        writer.deployed.set()

    deployer = threading.Thread(target=deploy_when_the_fill_runs, daemon=True)
    deployer.start()
    try:
        out = project.ok("alembic", "upgrade", "head")
    finally:
        for thread in (writer, old_reader, new_reader):
            thread.stop.set()
        for thread in (writer, old_reader, new_reader, deployer):
            thread.join(10)
    assert writer.errors == [] and old_reader.errors == [] and new_reader.errors == [], (
        writer.errors[:2], old_reader.errors[:2], new_reader.errors[:2])
    assert new_reader.wrong == []
    assert writer.writes["old"] > 20 and writer.writes["new"] > 20, (writer.writes, out)
    assert old_reader.reads > 20 and new_reader.reads > 20
    print(f"\n{writer.writes} writes, longest {writer.longest * 1000:.0f} ms; reads {old_reader.reads}/{new_reader.reads}")

    with owner_engine.connect() as conn:
        conn.execute(text(f'SET search_path = "{db_schema}"'))
        # the catalog: bytea, NOT NULL, the envelope check validated, no trigger or staging column left
        assert conn.execute(text(
            "SELECT format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
            "WHERE attrelid = 'ae_customers'::regclass AND attname = 'email'")).one() == ("bytea", True)
        assert conn.execute(text(
            "SELECT conname, convalidated FROM pg_constraint WHERE conrelid = 'ae_customers'::regclass "
            "AND contype = 'c'")).all() == [("ck_ae_customers_email_sealed", True)]
        assert conn.scalar(text(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'ae_customers'::regclass AND tgname LIKE '%sa_mark'")) == 0
        assert conn.scalar(text(
            "SELECT count(*) FROM pg_attribute WHERE attrelid IN ('ae_customers'::regclass, "
            "'ae_customers_history'::regclass) AND attname LIKE '%sa_enc' AND NOT attisdropped")) == 0
        assert conn.scalar(text(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'ae_customers_history'::regclass AND attname = 'email'")) == "bytea"
        assert conn.scalar(text("SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_ae_customers_email_bidx'::regclass"))
        assert conn.scalar(text("SELECT to_regclass('sa_patterns_backfill')")) is None

        # every ciphertext decrypts to the value last written; the blind index finds each row
        stored = dict(conn.execute(select(NEW.c.id, NEW.c.email)).all())
        assert stored == writer.values
        for row_id, email in random.Random(3).sample(sorted(stored.items()), 300):
            assert conn.execute(select(NEW.c.id).where(NEW.c.email == email.upper())).scalars().all() == [row_id]
        # the history's copies decrypt with the column's binding; every version has a value
        history_type = EncryptedString(KEYRING, bind_to="ae_customers.email")
        history = Table("ae_customers_history", MetaData(), Column("id", Integer), Column("version", Integer),
                        Column("email", history_type))
        versions = conn.execute(select(history.c.id, history.c.email).where(history.c.id <= 100,
                                                                            history.c.version == 1)).all()
        assert sorted(versions) == [(i, f"User{i}@example.com") for i in range(1, 101)]
        # the audit log: every entry's email is an envelope (the form new entries have)
        emails = conn.execute(text(
            "SELECT e FROM audit_log, LATERAL (VALUES (old_row ->> 'email'), (new_row ->> 'email')) v(e) "
            "WHERE e IS NOT NULL")).scalars().all()
        assert len(emails) > N_ROWS + 100 and all(e.startswith("\\x01") for e in emails)
        assert {history_type.opened_text(e) for e in emails} >= {f"user{i}@example.com" for i in range(1, 101)}
        # the log's append-only guard, lifted for the migration's backend only, is back for everyone
        with pytest.raises(DBAPIError, match="audit_log is append-only: UPDATE is refused"):
            conn.execute(text("UPDATE audit_log SET actor_id = actor_id"))
        conn.rollback()
        conn.execute(text(f'SET search_path = "{db_schema}"'))
        # and no plaintext anywhere
        assert plaintext_left(conn) == {"ae_customers": 0, "ae_customers_history": 0, "audit_log": 0}
        # a plaintext written afterwards by a leftover of the old application is refused, never
        # stored: typed as text by SQLAlchemy, or as a literal PostgreSQL would read as bytea
        with pytest.raises(DBAPIError, match="column \"email\" is of type bytea"):
            conn.execute(insert(OLD).values(email="late@example.com"))
        conn.rollback()
        with pytest.raises(IntegrityError, match="ck_ae_customers_email_sealed"):
            conn.execute(text("INSERT INTO ae_customers (email) VALUES ('late@example.com')"))
        conn.rollback()

    # a second autogenerate finds nothing: the table is what the model declares
    assert "No new upgrade operations detected" in project.ok("alembic", "check")

    # the linter: nothing blocking in the revision autogenerate wrote
    done = project.run("sa_patterns.cli", "lint-migrations", "--url", url.render_as_string(hide_password=False),
                       "--format", "json")
    assert done.returncode in (0, 1), done.stdout + done.stderr
    findings = [f for f in json.loads(done.stdout)["findings"] if f["path"] == str(path)]
    assert [f for f in findings if f["severity"] == "blocking"] == [], "\n".join(
        f"{f['severity']} {f['rule']} {f['line']} {f['sql'][:70]} {f['why']}" for f in findings)

    # the downgrade decrypts the table and the history (the audit log keeps its envelopes)
    project.ok("alembic", "downgrade", "-1")
    with owner_engine.connect() as conn:
        conn.execute(text(f'SET search_path = "{db_schema}"'))
        assert dict(conn.execute(select(OLD.c.id, OLD.c.email)).all()) == writer.values
        assert conn.execute(text(
            "SELECT format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
            "WHERE attrelid = 'ae_customers'::regclass AND attname = 'email'")).one() == ("text", True)
        assert conn.scalar(text(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'ae_customers'::regclass "
            "AND attname = 'email_bidx' AND NOT attisdropped")) == 0
        left = plaintext_left(conn)
        assert left["audit_log"] == 0 and left["ae_customers"] == N_ROWS + sum(
            1 for i in writer.values if i > N_ROWS)


def test_an_interrupted_encryption_resumes_where_it_stopped(project: Project, superuser_engine: Engine,
                                                           owner_engine: Engine, db_schema: str) -> None:
    project.adopt(batch_size=100)
    with superuser_engine.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path = "{db_schema}"'))
        conn.execute(text(
            "CREATE FUNCTION ae_stop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN "
            "IF to_jsonb(NEW) ->> 'email_sa_enc' IS NOT NULL THEN RAISE EXCEPTION 'interrupted'; END IF; "
            "RETURN NEW; END$$"))
        conn.execute(text(
            "CREATE TRIGGER ae_stop BEFORE UPDATE ON ae_customers FOR EACH ROW "
            "WHEN (NEW.id = 1550) EXECUTE FUNCTION ae_stop()"))
    done = project.run("alembic", "upgrade", "head")
    assert done.returncode != 0 and "interrupted" in done.stderr
    with superuser_engine.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path = "{db_schema}"'))
        assert conn.scalar(text(
            "SELECT rows_done FROM sa_patterns_backfill WHERE name = 'ae_customers.email.encrypt'")) == 1500
        assert conn.scalar(text("SELECT count(*) FROM ae_customers WHERE email_sa_enc IS NOT NULL")) == 1500
        assert conn.scalar(text("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                                "WHERE attrelid = 'ae_customers'::regclass AND attname = 'email'")) == "text"
        conn.execute(text("DROP TRIGGER ae_stop ON ae_customers"))
        conn.execute(text("DROP FUNCTION ae_stop()"))
        # the rows already done are not encrypted again: their envelopes stay as they are
        before = dict(conn.execute(text("SELECT id, email_sa_enc FROM ae_customers WHERE id <= 1500")).all())
    project.ok("alembic", "upgrade", "head")
    with owner_engine.connect() as conn:
        conn.execute(text(f'SET search_path = "{db_schema}"'))
        after = dict(conn.execute(text("SELECT id, email FROM ae_customers WHERE id <= 1500")).all())
        assert after == before
        assert dict(conn.execute(select(NEW.c.id, NEW.c.email)).all()) == expected_initial()
        assert plaintext_left(conn) == {"ae_customers": 0, "ae_customers_history": 0, "audit_log": 0}


def test_offline_sql_renders_every_step(project: Project) -> None:
    project.adopt()
    sql = project.ok("alembic", "upgrade", "head", "--sql")
    for expected in (
        "ALTER TABLE ae_customers ADD COLUMN IF NOT EXISTS email_sa_enc bytea",
        "CREATE OR REPLACE TRIGGER ae_customers_email_sa_mark",
        "-- sa_patterns: encrypt ae_customers.email into email_sa_enc with the keyring",
        "-- sa_patterns: encrypt ae_customers_history.email into email_sa_enc with the keyring",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_ae_customers_email_bidx ON ae_customers (email_bidx)",
        "LOCK TABLE ae_customers, ae_customers_history IN ACCESS EXCLUSIVE MODE",
        "ALTER TABLE ae_customers RENAME COLUMN email_sa_enc TO email",
        "ALTER TABLE ae_customers VALIDATE CONSTRAINT ck_ae_customers_email_sealed",
        "ALTER TABLE ae_customers ALTER COLUMN email SET NOT NULL",
        "-- sa_patterns: audit_log entries of ae_customers",
    ):
        assert expected in sql, expected


def test_before_the_swap_the_new_type_reads_a_text_column_and_refuses_forged_envelopes(
    owner_engine: Engine, db_schema: str
) -> None:
    """What the new application reads while the column is still text: the old application's
    plaintext as it is, its own writes (a bytea parameter stored as ``\\x``-hex text) decrypted,
    and a hex string that is no envelope of this column (forged, or another column's) as the
    plaintext it is, never decrypted into something else."""
    other = EncryptedString(KEYRING)
    Table("ae_other", MetaData(), Column("email", other))
    with owner_engine.begin() as conn:
        conn.execute(text(f'SET LOCAL search_path = "{db_schema}"'))
        conn.execute(text("CREATE TABLE ae_customers (id int PRIMARY KEY, email text, email_bidx bytea, note text)"))
        try:
            conn.execute(insert(OLD).values(id=1, email="old@example.com"))
            conn.execute(insert(NEW).values(id=2, email="new@example.com"))
            forged = "\\x" + other.seal(b"moved@example.com").hex()
            conn.execute(insert(OLD).values(id=3, email=forged))
            stored = dict(conn.execute(select(OLD.c.id, OLD.c.email)).all())
            assert stored[1] == "old@example.com" and stored[2].startswith("\\x01026b31")  # no plaintext
            assert dict(conn.execute(select(NEW.c.id, NEW.c.email)).all()) == {
                1: "old@example.com", 2: "new@example.com", 3: forged}
            # the new application's blind index works on its own writes already
            assert conn.execute(select(NEW.c.id).where(NEW.c.email == "new@example.com")).scalars().all() == [2]
        finally:
            conn.execute(text("DROP TABLE ae_customers"))


def test_a_keyring_without_an_importable_name_stops_autogenerate_with_the_fix(project: Project) -> None:
    (project.root / "models.py").write_text(MODELS.format(
        email_type=ENCRYPTED.replace("KEYRING", "lambda: KEYRING")))
    done = project.run("alembic", "revision", "--autogenerate", "-m", "encrypt")
    assert done.returncode != 0
    assert "has no importable name" in done.stderr and "keyring='package.module:NAME'" in done.stderr


def test_a_batch_holds_the_rows_it_read_so_a_write_meanwhile_is_not_lost(owner_engine: Engine, db_schema: str) -> None:
    """The conversion reads its rows ``FOR NO KEY UPDATE``: a row that matched only after the
    batch's own locking select (a write committed in between cleared its ciphertext) is locked
    when read, so the old code's next write waits for the batch, and its trigger then marks the
    row to do again, instead of the batch writing the ciphertext of the value it read over it
    (a lost write, seen once in a fresh-clone CI run)."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    from sa_patterns.alembic.adopt_encryption import EncryptColumnOp, _Steps

    table = f'"{db_schema}".ae_race'
    with owner_engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (id int PRIMARY KEY, email text, email_sa_enc bytea)"))
        conn.execute(text(f"INSERT INTO {table} (id, email) VALUES (1, 'a@example.com')"))
    try:
        with owner_engine.connect() as conn:
            steps = _Steps(Operations(MigrationContext.configure(conn)),
                           EncryptColumnOp("ae_race", "email", schema=db_schema, keyring=KEYRING), True)
            live = Table("ae_race", MetaData(), schema=db_schema, autoload_with=conn)
            conn.commit()
            encrypt = steps.convert

            def write_meanwhile(rows: Any, bidx: str | None) -> Any:
                # the old code writes the row between the batch's read and its UPDATE
                with owner_engine.connect() as writer:
                    writer.execute(text("SET lock_timeout = '200ms'"))
                    with pytest.raises(DBAPIError, match="lock timeout"):
                        writer.execute(text(f"UPDATE {table} SET email = 'b@example.com' WHERE id = 1"))
                return encrypt(rows, bidx)

            steps.convert = write_meanwhile  # type: ignore[method-assign]
            with conn.begin():
                assert steps.convert_rows(conn, live, live.c.email_sa_enc.is_(None)) == 1
    finally:
        with owner_engine.begin() as conn:
            conn.execute(text(f"DROP TABLE {table}"))
