"""Issue 23: a generated migration a reviewer can read, and a doctor that passes on the
toolkit's own schema.

The models (``review_models``: Audited + Versioned + Searchable + TenantMixin + SoftDeleteMixin,
and a materialized view) are migrated by ``alembic revision --autogenerate`` and ``upgrade`` as
the owner role, through the environment ``sa-patterns init`` writes. The script's plpgsql reads
as indented SQL in triple-quoted blocks, and the catalog holds exactly the models' bodies; a
database whose bodies are laid out otherwise (as migrations made before the layout changed
left them) needs no migration; the doctor, run as the application's role, is green.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from review_models import Base
from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.orm import Session

from sa_patterns import refresh_all
from sa_patterns.cli import main as cli_main
from sa_patterns.cli.init import init
from sa_patterns.health import duration
from sa_patterns.schema import Function, quote, registered
from sa_patterns.testing.logins import RunRoles

#: Alembic's own renderings (a table's column, an index) stay one line each
ALEMBIC_LINES = ("op.create_index(", "op.drop_index(", "sa.Column(")
SQL_STRING = re.compile(r"'(?:[^']|''){80,}'")


@dataclass
class Migrated:
    cfg: Config
    script: str
    schema: str
    owner: Engine
    app_url: str
    versions: Path


def _project(tmp: Path, pg_url: URL, roles: RunRoles, schema: str) -> tuple[Config, Engine, str]:
    superuser = create_engine(pg_url)
    with superuser.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {quote(schema)} AUTHORIZATION {quote(roles.owner)}"))
    superuser.dispose()
    path = {"options": f"-csearch_path={schema}"}
    owner_url = roles.url(pg_url, roles.owner).update_query_dict(path)
    app_url = roles.url(pg_url, roles.app).update_query_dict(path)
    cfg = Config(str(init(tmp / "migrations", metadata="review_models:Base")))
    cfg.attributes["target_metadata"] = Base.metadata
    cfg.attributes["configure_logger"] = False
    cfg.set_main_option("sqlalchemy.url", owner_url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg, create_engine(owner_url), app_url.render_as_string(hide_password=False)


def _drop(pg_url: URL, schema: str) -> None:
    superuser = create_engine(pg_url)
    with superuser.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE"))
    superuser.dispose()


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory, pg_url: URL, db_schema: str, db_roles: RunRoles) -> Iterator[Migrated]:
    schema = f"{db_schema}_rv"
    tmp = tmp_path_factory.mktemp("review")
    cfg, owner, app_url = _project(tmp, pg_url, db_roles, schema)
    try:
        command.revision(cfg, message="init", autogenerate=True)
        versions = tmp / "migrations" / "versions"
        script = next(versions.glob("*.py")).read_text()
        command.upgrade(cfg, "head")
        yield Migrated(cfg, script, schema, owner, app_url, versions)
    finally:
        owner.dispose()
        _drop(pg_url, schema)


def functions() -> list[Function]:
    return [e for e in registered(Base.metadata) if isinstance(e, Function)]


def test_the_migration_reads_as_sql(migrated: Migrated) -> None:
    script = migrated.script
    compile(script, "migration", "exec")
    long = [line for line in script.splitlines() if len(line) > 120 and not line.strip().startswith(ALEMBIC_LINES)]
    # only a SQL string too long for a line is left whole (cutting it would change the code)
    assert [line for line in long if not SQL_STRING.search(line)] == []
    assert max(map(len, script.splitlines())) < 250  # was 10,032
    # every plpgsql body is a triple-quoted block (created in upgrade, kept for downgrade)
    plpgsql = [f for f in functions() if f.language == "plpgsql" and "\n" in f.body]
    assert len(plpgsql) >= 3
    assert script.count('body=textwrap.dedent("""\\') == 2 * len(plpgsql)
    assert "import textwrap" in script and "import sa_patterns.schema" in script
    assert not [line for line in script.splitlines() if "body=" in line and "\\n" in line]
    audit = next(f for f in functions() if f.name == "rv_articles_audit")
    assert max(len(line) for line in audit.body.splitlines()) <= 100  # was 700 and more
    # what the database holds is exactly the models' text
    with migrated.owner.connect() as conn:
        stored = dict(conn.execute(text(
            "SELECT p.proname, p.prosrc FROM pg_proc p WHERE p.pronamespace = CAST(:s AS regnamespace)"),
            {"s": migrated.schema}).all())
    assert {f.name: "\n" + f.body + "\n" for f in functions()} == {f.name: stored[f.name] for f in functions()}


def test_nothing_left_to_migrate(migrated: Migrated, capsys: pytest.CaptureFixture[str]) -> None:
    command.check(migrated.cfg)
    migrated.cfg.cmd_opts = argparse.Namespace(autogenerate=True)
    try:
        command.revision(migrated.cfg, message="again", autogenerate=True)
    finally:
        migrated.cfg.cmd_opts = None
    assert len(list(migrated.versions.glob("*.py"))) == 1
    assert "no revision file was written" in capsys.readouterr().out


def doctor(migrated: Migrated, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli_main(["doctor", "--url", migrated.app_url, "--metadata", "review_models:Base", *args])
    return code, capsys.readouterr().out


def test_bodies_laid_out_otherwise_need_no_migration(migrated: Migrated, capsys: pytest.CaptureFixture[str]) -> None:
    """A database migrated before the layout changed holds the same code in other lines
    (stamped with that text): no replace, no drift."""
    other = {f.name: dataclasses.replace(f, body="\n".join(line.strip() for line in f.body.splitlines()))
             for f in functions()}
    try:
        with migrated.owner.begin() as conn:
            for old in other.values():
                for statement in old.create_statements():
                    conn.exec_driver_sql(statement.replace("%", "%%"))
        with migrated.owner.connect() as conn:
            stored = conn.execute(text("SELECT prosrc FROM pg_proc WHERE proname = 'rv_articles_audit'")).scalar_one()
        assert stored == "\n" + other["rv_articles_audit"].body + "\n"  # really another layout
        command.check(migrated.cfg)
        code, out = doctor(migrated, capsys, "--format", "json")
        assert code == 0, out
    finally:
        with migrated.owner.begin() as conn:
            for function in functions():
                for statement in function.create_statements():
                    conn.exec_driver_sql(statement.replace("%", "%%"))


def test_the_doctor_is_green_on_the_toolkits_schema(migrated: Migrated, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = doctor(migrated, capsys, "--format", "json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True, out
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["search vectors indexed"] == {"check": "search vectors indexed", "problems": []}
    assert checks["materialized views fresh"]["skipped"] == "skipped: give --matview-max-age (e.g. --matview-max-age 6h) to check"
    code, out = doctor(migrated, capsys)
    assert code == 0
    fresh = next(line for line in out.splitlines() if "materialized views fresh" in line)
    assert "skipped" in fresh and "ok" not in fresh
    assert "search vectors indexed" in out and "tsvector column without a GIN index" not in out
    assert out.splitlines()[-1] == f"all {len(checks) - 1} checks ok, 1 not run"  # the verdict


def test_the_doctor_says_not_applicable_and_names_what_failed(
    migrated: Migrated, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Models without a materialized view: its checks are not applicable, not "skipped: give
    --matview-max-age" (which would check nothing); a failed check is named in the verdict."""
    (tmp_path / "no_views.py").write_text(
        "from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column\n\n\n"
        "class Base(DeclarativeBase): ...\n\n\n"
        "class Topic(Base):\n"
        "    __tablename__ = 'rv_topics'\n"
        "    id: Mapped[int] = mapped_column(primary_key=True)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    capsys.readouterr()
    code = cli_main(["doctor", "--url", migrated.app_url, "--metadata", "no_views:Base", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    not_run = {c["check"]: c.get("skipped") for c in report["checks"] if "skipped" in c}
    assert not_run == {
        "materialized views populated": "not applicable: the models declare no materialized view",
        "materialized views fresh": "not applicable: the models declare no materialized view",
    }, report
    with migrated.owner.begin() as conn:
        conn.execute(text(f"ALTER TABLE {migrated.schema}.rv_articles DISABLE TRIGGER rv_articles_audit_ins"))
    try:
        code, out = doctor(migrated, capsys)
        assert code == 1
        assert out.splitlines()[-1].startswith("1 of ") and out.splitlines()[-1].endswith(
            "checks found problems, 1 not run: toolkit objects present and current"), out
    finally:
        with migrated.owner.begin() as conn:
            conn.execute(text(f"ALTER TABLE {migrated.schema}.rv_articles ENABLE TRIGGER rv_articles_audit_ins"))


def test_the_doctor_says_ages_in_a_unit_that_fits(migrated: Migrated, pg_url: URL, capsys: pytest.CaptureFixture[str]) -> None:
    with Session(migrated.owner) as session:
        refresh_all(session)
        session.commit()
    superuser = create_engine(pg_url)
    try:
        with superuser.begin() as conn:
            conn.execute(text(f"UPDATE {quote(migrated.schema)}.sa_patterns_matview_refreshes "
                              "SET refreshed_at = clock_timestamp() - interval '3 hours'"))
        code, out = doctor(migrated, capsys, "--format", "json", "--matview-max-age", "1s")
        (fresh,) = [c for c in json.loads(out)["checks"] if c["check"] == "materialized views fresh"]
        assert code == 1 and "skipped" not in fresh
        assert fresh["problems"] == [
            "materialized view rv_topic_count was last refreshed 3.0 h ago (limit 1 s); "
            "schedule sa-patterns refresh (or pg_cron)."
        ]
        code, _ = doctor(migrated, capsys, "--matview-max-age", "4h")
        assert code == 0
    finally:
        with superuser.begin() as conn:
            conn.execute(text(f"DELETE FROM {quote(migrated.schema)}.sa_patterns_matview_refreshes"))
        superuser.dispose()


def test_duration_units() -> None:
    assert [duration(s) for s in (0.4, 59, 60, 90, 3599, 3600, 10800, 172800, 216000)] == [
        "0 s", "59 s", "1.0 min", "1.5 min", "60.0 min", "1.0 h", "3.0 h", "2.0 d", "2.5 d"]


def test_downgrade_leaves_nothing(
    tmp_path: Path, pg_url: URL, db_schema: str, db_roles: RunRoles, caplog: pytest.LogCaptureFixture
) -> None:
    schema = f"{db_schema}_rv_down"
    cfg, owner, _ = _project(tmp_path, pg_url, db_roles, schema)
    try:
        with caplog.at_level(logging.INFO, logger="alembic.autogenerate"):
            command.revision(cfg, message="init", autogenerate=True)
        # autogenerate's log names the toolkit's objects beside Alembic's tables
        said = [r.getMessage() for r in caplog.records if r.name == "alembic.autogenerate.sa_patterns"]
        assert len(said) == 1 and said[0].startswith("Detected added sa_patterns objects: "), said
        assert "function ×" in said[0] and "trigger ×" in said[0] and "policy ×" in said[0], said
        command.upgrade(cfg, "head")
        command.downgrade(cfg, "base")
        with owner.connect() as conn:
            left = conn.execute(text(
                "SELECT c.relname FROM pg_class c WHERE c.relnamespace = CAST(:s AS regnamespace) "
                "UNION ALL SELECT p.proname FROM pg_proc p WHERE p.pronamespace = CAST(:s AS regnamespace)"),
                {"s": schema}).scalars().all()
        assert sorted(left) == ["alembic_version", "alembic_version_pkc"]
    finally:
        owner.dispose()
        _drop(pg_url, schema)
