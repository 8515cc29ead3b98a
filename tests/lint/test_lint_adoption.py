"""The toolkit's own adoption migration, linted: ``Searchable``, ``TenantMixin`` and
``soft_unique`` added to a populated table, written by ``alembic revision --autogenerate`` in an
environment from ``sa-patterns init`` with the post-write hook configured.

The findings asserted here are today's truth, the work list of issue 24's online operations:
when autogenerate writes online operations, they turn into advice and this test changes with it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import URL, create_engine, text

from sa_patterns.cli import main

V1 = '''
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str]
    slug: Mapped[str] = mapped_column(String(100))
'''

V2 = '''
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sa_patterns import SoftDeleteMixin, TenantMixin, soft_unique
from sa_patterns.search import Searchable


class Base(DeclarativeBase):
    pass


class Note(SoftDeleteMixin, TenantMixin, Searchable, Base):
    __tablename__ = "notes"
    __searchable__ = {"title": "A", "body": "B"}
    __table_args__ = (soft_unique("slug"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str]
    slug: Mapped[str] = mapped_column(String(100))
'''

HOOK = """
[post_write_hooks]
hooks = sa_patterns_lint
sa_patterns_lint.type = sa_patterns_lint
"""



@pytest.fixture
def schema_url(pg_url: URL) -> Iterator[URL]:
    schema = f"adopt_{secrets.token_hex(4)}"
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield pg_url.update_query_dict({"options": f"-csearch_path={schema}"})
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def run(cwd: Path, url: URL, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False)}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, env=env, check=False)


def test_adopting_patterns_on_a_populated_table(tmp_path: Path, schema_url: URL, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "adopt_v1.py").write_text(V1)
    (tmp_path / "adopt_v2.py").write_text(V2)
    monkeypatch.chdir(tmp_path)
    assert main(["init", "migrations", "--metadata", "adopt_v1:Base"]) == 0
    ini = tmp_path / "alembic.ini"
    ini.write_text(ini.read_text() + HOOK)
    # no register() call: the env.py that init writes imports sa_patterns.alembic, which does it

    done = run(tmp_path, schema_url, "alembic", "revision", "--autogenerate", "-m", "notes")
    assert done.returncode == 0, done.stderr
    # the hook ran on the new revision: a table created in it is nobody's yet, nothing blocks
    assert "sa_patterns_lint: 0 blocking" in done.stdout
    assert run(tmp_path, schema_url, "alembic", "upgrade", "head").returncode == 0
    engine = create_engine(schema_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO notes (title, body, slug) SELECT 't' || g, 'b' || g, 's' || g FROM generate_series(1, 20000) g"))
        conn.execute(text("ANALYZE notes"))
    engine.dispose()

    ini.write_text(ini.read_text().replace("adopt_v1:Base", "adopt_v2:Base"))
    done = run(tmp_path, schema_url, "alembic", "revision", "--autogenerate", "-m", "adopt")
    assert done.returncode == 0, done.stderr  # findings never fail the write
    adopt = next((tmp_path / "migrations" / "versions").glob("*_adopt.py"))
    assert "BLOCKING adding-field-with-default on notes" in done.stdout
    assert f"migrations/versions/{adopt.name}:" in done.stdout
    assert "sa_patterns_lint: 11 blocking" in done.stdout

    url = schema_url.render_as_string(hide_password=False)
    done = run(tmp_path, schema_url, "sa_patterns.cli", "lint-migrations", "--url", url, "--format", "json")
    assert done.returncode == 1, done.stderr
    findings = json.loads(done.stdout)["findings"]
    mine = [f for f in findings if f["path"] == str(adopt) and f["severity"] == "blocking"]
    assert Counter((f["rule"], f["table"]) for f in mine) == {
        # no lock_timeout anywhere in the revision
        ("require-lock-timeout", "notes"): 1,
        # tenant_id BIGINT NOT NULL, no default: fails on the 20,000 rows
        ("adding-required-field", "notes"): 1,
        # Searchable: the stored generated column rewrites the table under ACCESS EXCLUSIVE
        ("adding-field-with-default", "notes"): 1,
        # GIN, tenant_id and the soft_unique partial unique index, none CONCURRENTLY
        ("require-concurrent-index-creation", "notes"): 3,
        # ENABLE + FORCE ROW LEVEL SECURITY, and three policies: brief ACCESS EXCLUSIVE locks
        ("row-security-lock", "notes"): 2,
        ("policy-lock", "notes"): 3,
    }
    indexes = {f["sql"].split(" ON ")[0] for f in mine if f["rule"] == "require-concurrent-index-creation"}
    assert indexes == {
        "CREATE INDEX ix_notes_search_vector", "CREATE INDEX ix_notes_tenant_id",
        "CREATE UNIQUE INDEX uq_notes_slug_live",
    }
    rewrite = next(f for f in mine if f["rule"] == "adding-field-with-default")
    assert "GENERATED ALWAYS AS" in rewrite["sql"] and rewrite["why"].startswith("20,000 rows")
    assert rewrite["op"].startswith("op.add_column('notes', sa.Column('search_vector'")
    policy = next(f for f in mine if f["rule"] == "policy-lock")
    assert policy["source"] == "sa_patterns" and policy["op"].startswith("op.create_entity(sa_patterns.schema.Policy(")
    # the first revision created the table: whatever it does to it is advice
    assert not [f for f in findings if f["path"] != str(adopt) and f["severity"] == "blocking"]


def test_the_hook_never_fails_the_write(tmp_path: Path, schema_url: URL, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "adopt_v1.py").write_text(V1)
    monkeypatch.chdir(tmp_path)
    assert main(["init", "migrations", "--metadata", "adopt_v1:Base"]) == 0
    ini = tmp_path / "alembic.ini"
    ini.write_text(ini.read_text() + HOOK + "sa_patterns_lint.config = elsewhere.ini\n")
    # no register() call: the env.py that init writes imports sa_patterns.alembic, which does it
    done = run(tmp_path, schema_url, "alembic", "revision", "--autogenerate", "-m", "notes")
    assert done.returncode == 0, done.stderr
    assert "sa_patterns_lint: " in done.stdout and "was not linted: no Alembic configuration at elsewhere.ini" in done.stdout
    assert len(list((tmp_path / "migrations" / "versions").glob("*_notes.py"))) == 1
