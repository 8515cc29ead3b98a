"""`sa-patterns lint-migrations` on a plain Alembic project (``alembic init``): a user's own
blocking operations are flagged with squawk's rule on the op's line, the online way of writing
them passes, and table sizes read from the live database decide the severity."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import URL, create_engine, text

HEADER = '''
from alembic import op
import sqlalchemy as sa

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None
'''

CREATE = '''
def upgrade():
    op.create_table(
        "accounts",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
    )


def downgrade():
    op.drop_table("accounts")
'''

BLOCKING = '''
def upgrade():
    op.create_index("ix_accounts_email", "accounts", ["email"])
    op.add_column("accounts", sa.Column("token", sa.Uuid, nullable=False, server_default=sa.text("gen_random_uuid()")))
    op.alter_column("accounts", "n", type_=sa.Numeric)


def downgrade():
    op.alter_column("accounts", "n", type_=sa.BigInteger)
    op.drop_column("accounts", "token")
    op.drop_index("ix_accounts_email", table_name="accounts")
'''

SAFE = '''
def upgrade():
    op.execute("SET lock_timeout = '2s'")
    op.execute("ALTER TABLE accounts ADD CONSTRAINT accounts_n_positive CHECK (n > 0) NOT VALID")
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE accounts VALIDATE CONSTRAINT accounts_n_positive")
        op.create_index("ix_accounts_n", "accounts", ["n"], postgresql_concurrently=True, if_not_exists=True)


def downgrade():
    with op.get_context().autocommit_block():
        op.drop_index("ix_accounts_n", table_name="accounts", postgresql_concurrently=True, if_exists=True)
    op.execute("ALTER TABLE accounts DROP CONSTRAINT accounts_n_positive")
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    ini = tmp_path / "alembic.ini"
    command.init(Config(str(ini)), str(tmp_path / "migrations"))
    text_ = ini.read_text().replace("driver://user:pass@localhost/dbname", "postgresql://")
    ini.write_text(text_)
    versions = tmp_path / "migrations" / "versions"
    for rev, down, body in (("a1", None, CREATE), ("b2", "a1", BLOCKING), ("c3", "b2", SAFE)):
        (versions / f"{rev}_step.py").write_text(HEADER.format(rev=rev, down=down) + body)
    return tmp_path


@pytest.fixture
def schema_url(pg_url: URL) -> Iterator[URL]:
    schema = f"lint_{secrets.token_hex(4)}"
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
        conn.execute(text(f"CREATE TABLE {schema}.accounts (id bigint PRIMARY KEY, email text NOT NULL, n bigint NOT NULL)"))
    try:
        yield pg_url.update_query_dict({"options": f"-csearch_path={schema}"})
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def lint(project: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        [sys.executable, "-m", "sa_patterns.cli", "lint-migrations", "-c", str(project / "alembic.ini"),
         "--format", "json", *args],
        capture_output=True, text=True, cwd=project, check=False,
    )
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}, done.stderr


def blocking(report: dict[str, Any], revision: str) -> dict[tuple[str, int], str]:
    return {
        (f["rule"], f["line"]): f["severity"]
        for f in report["findings"]
        if f["revision"] == revision and f["severity"] == "blocking"
    }


def test_a_users_blocking_migration_is_flagged_on_its_op_lines(project: Path) -> None:
    status, report, stderr = lint(project)
    assert status == 1, stderr
    # BLOCKING's ops are on lines 11-13 of its file (the header takes 8, upgrade() is line 10)
    assert blocking(report, "b2") == {
        ("require-concurrent-index-creation", 11): "blocking",
        ("require-lock-timeout", 11): "blocking",
        ("adding-field-with-default", 12): "blocking",
        ("changing-column-type", 13): "blocking",
    }
    first = next(f for f in report["findings"] if f["rule"] == "require-concurrent-index-creation")
    assert first["table"] == "accounts"
    assert first["op"] == 'op.create_index("ix_accounts_email", "accounts", ["email"])'
    assert first["lock"].startswith("SHARE")
    assert "CONCURRENTLY" in first["alternative"]
    assert first["path"].endswith("b2_step.py")
    # a table created in the same revision is nobody else's yet: advice only
    assert blocking(report, "a1") == {}
    assert blocking(report, "c3") == {}
    assert report["blocking"] == 4


def test_the_online_migration_passes_and_the_range_selects_it(project: Path) -> None:
    status, report, stderr = lint(project, "--revision", "b2:c3")
    assert status == 0, stderr
    assert {f["revision"] for f in report["findings"]} <= {"c3"}
    assert all(f["severity"] == "advice" for f in report["findings"])
    # the same revision by its file, as the post-write hook names it
    status, by_file, _ = lint(project, "--revision", str(project / "migrations" / "versions" / "c3_step.py"))
    assert status == 0 and by_file == report


def test_text_output_names_rule_table_lock_and_alternative(project: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sa_patterns.cli", "lint-migrations", "--revision", "a1:b2"],
        capture_output=True, text=True, cwd=project, check=False,
    )
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    at = lines.index(next(ln for ln in lines if "BLOCKING changing-column-type" in ln))
    assert lines[at].startswith("migrations/versions/b2_step.py:13: BLOCKING changing-column-type on accounts")
    assert lines[at + 1] == '    op: op.alter_column("accounts", "n", type_=sa.Numeric)'
    assert lines[at + 3].startswith("    lock: ACCESS EXCLUSIVE for a table rewrite")
    assert lines[at + 4].startswith("    instead: add a new column kept by a trigger")
    assert lines[-1] == "4 blocking, 1 advice in 1 revision(s)"


def test_downgrades_are_linted_on_request(project: Path) -> None:
    _, report, _ = lint(project, "--revision", "a1:b2", "--downgrade")
    down = {f["rule"] for f in report["findings"] if f["direction"] == "downgrade"}
    assert {"require-concurrent-index-deletion", "changing-column-type", "ban-drop-column"} <= down


def test_table_sizes_from_the_live_database_decide_severity(project: Path, schema_url: URL) -> None:
    url = schema_url.render_as_string(hide_password=False)
    # empty (never analyzed, no pages): the rewrite and the index build are instant
    status, report, stderr = lint(project, "--revision", "a1:b2", "--url", url)
    assert status == 1, stderr  # the missing lock_timeout still queues behind open transactions
    assert blocking(report, "b2") == {("require-lock-timeout", 11): "blocking"}
    index = next(f for f in report["findings"] if f["rule"] == "require-concurrent-index-creation")
    assert (index["severity"], index["why"]) == ("advice", "0 rows, 16 kB: brief")
    engine = create_engine(schema_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO accounts SELECT g, 'u' || g, g FROM generate_series(1, 300) g"))
        conn.execute(text("ANALYZE accounts"))
    engine.dispose()
    # 300 rows: small by default, big with --small-table 100
    status, report, _ = lint(project, "--revision", "a1:b2", "--url", url)
    assert set(blocking(report, "b2")) == {("require-lock-timeout", 11)}
    status, report, _ = lint(project, "--revision", "a1:b2", "--url", url, "--small-table", "100")
    assert status == 1
    assert set(blocking(report, "b2")) == {
        ("require-lock-timeout", 11), ("require-concurrent-index-creation", 11),
        ("adding-field-with-default", 12), ("changing-column-type", 13),
    }
    index = next(f for f in report["findings"] if f["rule"] == "require-concurrent-index-creation")
    assert index["why"].startswith("300 rows")


def test_failures_are_two_lines(project: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sa_patterns.cli", "lint-migrations", "-c", "missing.ini"],
        capture_output=True, text=True, cwd=project, check=False,
    )
    assert done.returncode == 2
    what, todo = done.stderr.splitlines()
    assert what.startswith("sa-patterns lint-migrations: no Alembic configuration at missing.ini")
    assert todo == "  nothing was linted (--debug shows the traceback)"
    done = subprocess.run(
        [sys.executable, "-m", "sa_patterns.cli", "lint-migrations", "--revision", "zz"],
        capture_output=True, text=True, cwd=project, check=False,
    )
    assert done.returncode == 2 and "no revision 'zz'" in done.stderr.splitlines()[0]


TOOLKIT = '''
def upgrade():
    op.execute("CREATE TRIGGER accounts_touch BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION touch()")
    op.execute("UPDATE accounts SET n = n + 1")
    op.execute("DO $$ BEGIN PERFORM 1; END $$")
    op.execute("SET lock_timeout = '2s'")
    op.execute("CREATE POLICY accounts_all ON accounts USING (true)")
    op.execute("DROP TRIGGER accounts_touch ON accounts")


def downgrade():
    pass
'''


def test_what_squawk_cannot_see(project: Path) -> None:
    """Triggers, policies and backfills have locks squawk does not report; under lock_timeout a
    brief lock is advice, a backfill in the migration's transaction stays blocking."""
    (project / "migrations" / "versions" / "d4_step.py").write_text(HEADER.format(rev="d4", down="c3") + TOOLKIT)
    status, report, stderr = lint(project, "--revision", "c3:d4")
    assert status == 1, stderr
    found = {(f["rule"], f["line"], f["severity"], f["source"]) for f in report["findings"]}
    assert {
        ("trigger-lock", 11, "blocking", "sa_patterns"),
        ("backfill-in-transaction", 12, "blocking", "sa_patterns"),
        ("dynamic-sql", 13, "advice", "sa_patterns"),
        ("policy-lock", 15, "advice", "sa_patterns"),
        ("drop-trigger-lock", 16, "advice", "sa_patterns"),
    } <= found
    trigger = next(f for f in report["findings"] if f["rule"] == "trigger-lock")
    assert trigger["table"] == "accounts" and trigger["lock"].startswith("SHARE ROW EXCLUSIVE")
    policy = next(f for f in report["findings"] if f["rule"] == "policy-lock")
    assert policy["why"] == "brief, under lock_timeout"


def test_a_lock_timeout_set_in_env_py_holds_for_every_revision(project: Path) -> None:
    env_py = project / "migrations" / "env.py"
    env_py.write_text(env_py.read_text().replace(
        "        context.run_migrations()",
        "        context.execute(\"SET lock_timeout = '2s'\")\n        context.run_migrations()",
    ))
    _, report, stderr = lint(project, "--revision", "a1:b2")
    assert "require-lock-timeout" not in {f["rule"] for f in report["findings"]}, stderr
    assert set(blocking(report, "b2")) == {
        ("require-concurrent-index-creation", 11), ("adding-field-with-default", 12), ("changing-column-type", 13),
    }


READS = '''
def upgrade():
    count = op.get_bind().execute(sa.text("SELECT count(*) FROM accounts")).scalar()
    op.execute(f"COMMENT ON TABLE accounts IS '{count} rows'")


def downgrade():
    pass
'''


def test_a_revision_that_cannot_render_offline_hides_no_other(project: Path) -> None:
    (project / "migrations" / "versions" / "e5_step.py").write_text(HEADER.format(rev="e5", down="c3") + READS)
    status, report, stderr = lint(project, "--revision", "a1:e5")
    assert status == 1, stderr
    assert set(blocking(report, "b2")) == {
        ("require-lock-timeout", 11), ("require-concurrent-index-creation", 11),
        ("adding-field-with-default", 12), ("changing-column-type", 13),
    }
    (unrendered,) = [f for f in report["findings"] if f["revision"] == "e5"]
    assert (unrendered["rule"], unrendered["severity"], unrendered["line"]) == ("not-linted", "advice", None)
    assert unrendered["message"].startswith("AttributeError")
