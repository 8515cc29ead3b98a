"""``configure_kwargs()`` in a real ``env.py`` (issue 23).

It merges with what the user passes: an ``env.py`` that already gives ``compare_type=True`` and
``compare_server_default=True`` (and hooks of its own) keeps them, in both of its
``configure()`` calls, and ``alembic revision --autogenerate``, ``upgrade --sql`` (offline) and
``upgrade`` (online) run. And a migration imports what it uses even when one of the two calls
lacks the toolkit's arguments: it was ``NameError: name 'sa_patterns' is not defined`` at
upgrade.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Column, Engine, Integer, MetaData, String, Table, create_engine, text

import sa_patterns.alembic
from sa_patterns import EncryptedString
from sa_patterns.cli.init import init
from sa_patterns.schema import Function, quote, register

ENV = '''
from alembic import context
from sqlalchemy import create_engine, pool

import sa_patterns.alembic
from sa_patterns.alembic.environment import database_url, target_metadata

config = context.config
metadata = target_metadata(config)
calls = config.attributes["calls"]


def include_object(obj, name, type_, reflected, compare_to):
    calls.append("include_object")
    return name != "kept_out"


def render_item(type_, obj, autogen_context):
    calls.append("render_item")
    return False


def process_revision_directives(context, revision, directives):
    calls.append("process_revision_directives")
    directives[0].message = "reviewed by the user's hook"


if context.is_offline_mode():
    context.configure(
        url=database_url(config), target_metadata=metadata, literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        compare_type=True, compare_server_default=True,
        OFFLINE
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(database_url(config), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=metadata,
            compare_type=True, compare_server_default=True,
            ONLINE
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
'''

WIRED = """**sa_patterns.alembic.configure_kwargs(
            include_object=include_object, render_item=render_item,
            process_revision_directives=process_revision_directives,
        ),"""


def models() -> MetaData:
    md = MetaData()
    Table("ck_notes", md, Column("id", Integer, primary_key=True), Column("secret", EncryptedString()))
    Table("kept_out", md, Column("id", Integer, primary_key=True), Column("name", String(20)))
    register(md, Function(None, "ck_count", returns="bigint", language="sql", body="SELECT count(*) FROM ck_notes"))
    return md


@pytest.fixture
def schema(pg_url: URL, db_schema: str) -> Iterator[tuple[str, Engine]]:
    name = f"{db_schema}_ck"
    engine = create_engine(pg_url.update_query_dict({"options": f"-csearch_path={name}"}))
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {quote(name)} CASCADE; CREATE SCHEMA {quote(name)}"))
    try:
        yield name, engine
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {quote(name)} CASCADE"))
        engine.dispose()


def project(tmp_path: Path, engine: Engine, offline: str, online: str) -> tuple[Config, list[str], io.StringIO]:
    directory = tmp_path / "migrations"
    ini = init(directory, metadata="unused:unused")
    (directory / "env.py").write_text(ENV.replace("OFFLINE", offline).replace("ONLINE", online))
    sql = io.StringIO()
    cfg = Config(str(ini), output_buffer=sql)
    calls: list[str] = []
    cfg.attributes.update(target_metadata=models(), calls=calls)
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg, calls, sql


def catalog(engine: Engine, schema: str) -> tuple[set[str], set[str]]:
    with engine.connect() as conn:
        tables = set(conn.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema}))
        functions = set(conn.scalars(text(
            "SELECT proname FROM pg_proc WHERE pronamespace = CAST(:s AS regnamespace)"), {"s": schema}))
    return tables, functions


def test_the_users_own_arguments_and_hooks_are_kept(tmp_path: Path, schema: tuple[str, Engine]) -> None:
    name, engine = schema
    cfg, calls, sql = project(tmp_path, engine, WIRED, WIRED)
    command.revision(cfg, message="init", autogenerate=True)
    script = next((tmp_path / "migrations" / "versions").glob("*.py")).read_text()
    assert "reviewed by the user's hook" in script  # the user's directives ran, then ours
    assert {"include_object", "render_item", "process_revision_directives"} <= set(calls)
    assert "kept_out" not in script  # the user's include_object decided
    assert "import sa_patterns\n" in script and "sa_patterns.EncryptedString()" in script
    assert "op.create_entity(sa_patterns.schema.Function(" in script

    command.upgrade(cfg, "head", sql=True)  # offline: the script compiles and renders its SQL
    assert "CREATE TABLE ck_notes" in sql.getvalue() and "FUNCTION ck_count()" in sql.getvalue()
    assert catalog(engine, name) == ({"alembic_version"}, set())  # --sql changes nothing
    command.upgrade(cfg, "head")
    assert catalog(engine, name) == ({"alembic_version", "ck_notes"}, {"ck_count"})
    command.check(cfg)  # compare_server_default/compare_type given twice would have raised


@pytest.mark.parametrize("wired", ["offline", "online"])
def test_a_migration_imports_what_it_uses_whichever_call_lacks_the_toolkit(
    wired: str, tmp_path: Path, schema: tuple[str, Engine]
) -> None:
    """Only one of the two calls edited to hold the toolkit's arguments: autogenerate (online)
    and both upgrades run. With only the offline call wired, the online autogenerate has none
    of the toolkit's hooks, and the column type's import still comes."""
    name, engine = schema
    plain = "include_object=include_object,"  # the user's hook alone, no toolkit arguments
    offline, online = (WIRED, plain) if wired == "offline" else (plain, WIRED)
    cfg, _, sql = project(tmp_path, engine, offline, online)
    command.revision(cfg, message="init", autogenerate=True)
    script = next((tmp_path / "migrations" / "versions").glob("*.py")).read_text()
    assert "sa_patterns.EncryptedString()" in script
    assert "import sa_patterns\n" in script  # the column type's package, imported
    assert ("op.create_entity(" in script) is (wired == "online")  # the plugin is the online call's
    command.upgrade(cfg, "head", sql=True)
    assert "CREATE TABLE ck_notes" in sql.getvalue()
    command.upgrade(cfg, "head")
    tables, _ = catalog(engine, name)
    assert tables == {"alembic_version", "ck_notes"}
    with engine.connect() as conn:
        assert conn.execute(text(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = :s "
            "AND table_name = 'ck_notes' AND column_name = 'secret'"), {"s": name}).scalar_one()


def test_configure_kwargs_returns_no_option_the_user_passes() -> None:
    keys = set(sa_patterns.alembic.configure_kwargs())
    assert keys == {"autogenerate_plugins", "include_object", "render_item", "process_revision_directives"}
    merged = sa_patterns.alembic.configure_kwargs(compare_type=True, autogenerate_plugins=["alembic.autogenerate.*"])
    assert merged["compare_type"] is True
    assert merged["autogenerate_plugins"] == ["alembic.autogenerate.*", "sa_patterns"]
