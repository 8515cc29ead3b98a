"""docs/testing.md as written: a project whose only set-up is the page's ``pyproject.toml``,
with the page's ``Audited`` + ``TenantMixin`` model and the page's test, passes; that test sees
audit entries, runs as a NOSUPERUSER NOBYPASSRLS role owning no table, and is filtered by row-level
security on raw SQL. The files are taken from the page's code blocks (the first line names the
file), so the page cannot drift from what is tested. Each project runs pytest in a subprocess,
against the server this run uses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import URL, create_engine, text

from sa_patterns.schema import quote

PAGE = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
BLOCK = re.compile(r"```(?:python|toml)\n# (?P<name>[\w/.]+)\n(?P<body>.*?)```", re.S)


def documented_files() -> dict[str, str]:
    """The page's code blocks that name a file on their first line, by that name."""
    return {m["name"]: f"# {m['name']}\n{m['body']}" for m in BLOCK.finditer(PAGE.read_text())}


def make_project(root: Path, files: dict[str, str]) -> None:
    for name, body in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    (root / "app" / "__init__.py").touch()


def run_pytest(root: Path, server: URL, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": server.render_as_string(hide_password=False)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )


def server_of(pg_url: URL) -> URL:
    return pg_url.set(database="postgres")


# Checks the page's test leaves implicit, run with it: the roles are this run's own,
# the session's flush goes through RLS (WITH CHECK), and the async fixtures log in alike.
EXTRA = '''
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import sessionmaker

import sa_patterns
from app.models import Note


def test_roles_are_the_runs_own(sql, db_roles, pg_url):
    import os

    who = sql("SELECT session_user, current_user")
    assert who == [(db_roles.app, db_roles.app)]
    assert os.environ["SA_PATTERNS_APP_ROLE"] == db_roles.app
    owner = sql("SELECT tableowner FROM pg_tables WHERE tablename = 'notes'")
    assert owner == [(db_roles.owner,)]
    assert sql("SELECT rolsuper FROM pg_roles WHERE rolname = :r", r=db_roles.owner) == [(False,)]
    assert db_roles.url(pg_url, db_roles.app).password  # a password travels in the URL


def test_the_database_refuses_another_tenants_row(session, sql):
    with sa_patterns.tenant_scope(1):
        with pytest.raises(sa_patterns.TenantViolation, match="row-level security"), session.begin_nested():
            session.execute(text("INSERT INTO notes (id, tenant_id, body) VALUES (9, 2, 'x')"))
        with sa_patterns.all_tenants():  # the ORM lets it through; the app role may not
            assert session.scalars(select(Note)).all() == []


def test_admin_sees_every_tenant_in_all_tenants(admin_engine, superuser_engine):
    with superuser_engine.begin() as conn:
        conn.execute(text("INSERT INTO notes (id, tenant_id, body) VALUES (1, 1, 'a'), (2, 2, 'b')"))
    try:
        factory = sa_patterns.install(sessionmaker(admin_engine))
        with sa_patterns.all_tenants(), factory() as s:
            assert sorted(s.scalars(select(Note.id))) == [1, 2]
    finally:
        with superuser_engine.begin() as conn:
            conn.execute(text("DELETE FROM notes"))


async def test_async_session_is_the_app_role(async_session):
    role = (await async_session.execute(text("SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user"))).all()
    assert role == [(False,)]
    with sa_patterns.tenant_scope(5):
        async_session.add(Note(id=5, body="async"))
        await async_session.flush()
        assert (await async_session.scalars(select(Note.id))).all() == [5]
'''


# A module opting out with the marker, in the same project: the superuser, the models built.
MARKED = '''
import pytest

pytestmark = pytest.mark.sa_patterns_superuser


def test_marked_module_is_the_superuser(sql, superuser_sql):
    assert sql("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [(True,)]
    assert sql("SELECT to_regclass('notes') IS NOT NULL") == [(True,)]
'''


def test_the_documented_setup_runs_as_the_app_role(tmp_path: Path, pg_url: URL) -> None:
    files = documented_files()
    assert {"pyproject.toml", "app/models.py", "tests/test_notes.py"} <= set(files)
    assert "conftest.py" not in " ".join(files)  # the ini line is the whole set-up
    make_project(tmp_path, files)
    (tmp_path / "tests" / "test_more.py").write_text(EXTRA)
    (tmp_path / "tests" / "test_marked.py").write_text(MARKED)
    run = run_pytest(tmp_path, server_of(pg_url), "-n", "2")  # two workers, two sets of roles
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "6 passed" in run.stdout and "skipped" not in run.stdout, out
    assert "PASSED tests/test_notes.py::test_notes_are_audited_and_kept_apart" in run.stdout
    assert "models app.models:Base built per module by create_all" in run.stdout


def test_opting_out_and_no_models_connect_as_the_superuser(tmp_path: Path, pg_url: URL) -> None:
    files = documented_files()
    make_project(tmp_path, files)
    probe = (
        "def test_who(sql, superuser_sql):\n"
        "    assert sql('SELECT rolsuper FROM pg_roles WHERE rolname = current_user') == [(True,)]\n"
        "    assert superuser_sql('SELECT 1') == [(1,)]\n"
    )
    (tmp_path / "tests" / "test_notes.py").write_text(probe)
    ini = files["pyproject.toml"]
    (tmp_path / "pyproject.toml").write_text(ini.replace(
        'sa_patterns_models = "app.models:Base"\n',
        'sa_patterns_models = "app.models:Base"\nsa_patterns_app_role = false\n'))
    opted_out = run_pytest(tmp_path, server_of(pg_url))
    assert opted_out.returncode == 0, opted_out.stdout + opted_out.stderr
    assert "sa_patterns_app_role = false: the fixtures connect as the server's superuser" in opted_out.stdout

    (tmp_path / "pyproject.toml").write_text(ini.replace('sa_patterns_models = "app.models:Base"\n', ""))
    (tmp_path / "tests" / "test_notes.py").write_text(
        probe + "\n\ndef test_nothing_built(sql):\n"
        "    assert sql(\"SELECT to_regclass('notes') IS NULL\") == [(True,)]\n")
    bare = run_pytest(tmp_path, server_of(pg_url))
    assert bare.returncode == 0, bare.stdout + bare.stderr
    assert "sa_patterns: no models configured" in bare.stdout


def test_the_marker_on_one_test_is_a_usage_error(tmp_path: Path, pg_url: URL) -> None:
    """The engines are module-wide: a test alone cannot switch role, and is told so."""
    make_project(tmp_path, documented_files())
    (tmp_path / "tests" / "test_notes.py").write_text(
        "import pytest\n\n\n@pytest.mark.sa_patterns_superuser\ndef test_one(sql):\n    pass\n")
    run = run_pytest(tmp_path, server_of(pg_url))
    assert run.returncode != 0
    assert "applies to a whole module" in run.stdout + run.stderr


def test_a_server_user_that_cannot_create_roles_is_one_clear_error(
    tmp_path: Path, pg_url: URL
) -> None:
    """Never a skip: a DATABASE_URL user allowed to create databases but not roles fails the
    run, saying what the plugin needs."""
    make_project(tmp_path, documented_files())
    weak = f"sap_weak_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_of(pg_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE ROLE {quote(weak)} LOGIN CREATEDB NOSUPERUSER NOCREATEROLE"))
        run = run_pytest(tmp_path, server_of(pg_url).set(username=weak))
        assert run.returncode != 0
        assert "cannot create the test roles" in run.stdout and "needs a superuser" in run.stdout, run.stdout
        assert "skipped" not in run.stdout
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {quote(weak)}"))
        admin.dispose()
