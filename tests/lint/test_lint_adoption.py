"""The toolkit's own adoption migration, linted: ``Searchable``, ``TenantMixin`` and
``soft_unique`` added to a populated table, written by ``alembic revision --autogenerate`` in an
environment from ``sa-patterns init`` with the post-write hook configured.

Nothing blocks: the brief locks run under the ``lock_timeout`` env.py sets, the indexes are built
CONCURRENTLY, ``tenant_id`` and the search vector are added by the online operations
(``op.add_tenant_column``, ``op.add_search_vector``) instead of a NOT NULL column the existing
rows lack and a generated column's rewrite.
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
    # nothing blocking: Searchable's vector is added as a trigger-kept column filled in
    # batches (op.add_search_vector), tenant_id online (op.add_tenant_column)
    assert "sa_patterns_lint: 0 blocking" in done.stdout
    # the model does not say where existing rows' tenants come from: tenant_id is added online
    # all the same, and rows without one stop the upgrade with what to write (tests/adoption)
    script = adopt.read_text()
    assert "op.add_tenant_column('notes', source=no_existing_rows())" in script
    assert "from sa_patterns.tenancy.adopt import no_existing_rows" in script
    assert "op.add_search_vector('notes', {'title': 'A', 'body': 'B'}" in script
    assert "GENERATED ALWAYS" not in script.split("def downgrade")[0]

    url = schema_url.render_as_string(hide_password=False)
    done = run(tmp_path, schema_url, "sa_patterns.cli", "lint-migrations", "--url", url, "--downgrade", "--format", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    findings = json.loads(done.stdout)["findings"]
    assert [f for f in findings if f["severity"] == "blocking"] == []
    # fixed by the online operations: env.py's SET lock_timeout makes the brief locks advice
    # (ENABLE + FORCE ROW LEVEL SECURITY, three policies, both ways) ...
    brief = Counter((f["rule"], f["direction"]) for f in findings
                    if f["path"] == str(adopt) and f["why"] == "brief, under lock_timeout")
    assert brief == {("row-security-lock", "upgrade"): 2, ("policy-lock", "upgrade"): 3,
                     ("row-security-lock", "downgrade"): 2, ("policy-lock", "downgrade"): 3,
                     # the search vector's trigger, created and dropped
                     ("trigger-lock", "upgrade"): 1, ("drop-trigger-lock", "downgrade"): 1}
    policy = next(f for f in findings if f["rule"] == "policy-lock" and f["path"] == str(adopt))
    assert policy["source"] == "sa_patterns" and policy["op"].startswith("op.create_entity(sa_patterns.schema.Policy(")
    # ... and the three indexes are built, and dropped, CONCURRENTLY outside the transaction
    assert not [f for f in findings if f["rule"] in (
        "require-lock-timeout", "require-concurrent-index-creation", "require-concurrent-index-deletion",
        "ban-concurrent-index-creation-in-transaction")]
    sql = run(tmp_path, schema_url, "alembic", "upgrade", "head", "--sql").stdout
    assert sql.index("SET lock_timeout = '2s'") < sql.index("ALTER TABLE notes ADD COLUMN deleted_at")
    for index in ("ix_notes_search_vector ON notes USING gin", "ix_notes_tenant_id ON notes",
                  "uq_notes_slug_live ON notes"):
        assert f"INDEX CONCURRENTLY IF NOT EXISTS {index}" in sql
    # tenant_id first, in its own short transactions; the other indexes after the policies
    assert sql.index("ix_notes_tenant_id ON notes") < sql.index("CREATE POLICY")
    assert sql.rindex("CREATE POLICY") < sql.index("COMMIT;\n\nSET lock_timeout = 0") < sql.rindex("CONCURRENTLY")
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
