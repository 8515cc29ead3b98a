"""`sa-patterns init`: the written environments (sync and async) run autogenerate end to end,
and the template ships inside the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import URL, create_engine, text

from sa_patterns.cli import main
from sa_patterns.errors import ConfigurationError

MODELS = '''
from sqlalchemy import MetaData, Table, Column, Integer
from sa_patterns.schema import Function, register

metadata = MetaData()
Table("widgets", metadata, Column("id", Integer, primary_key=True))
register(metadata, Function(None, "widget_count", returns="bigint", language="sql",
                            body="SELECT count(*) FROM widgets"))
'''


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_init_environment_runs(flavour: str, tmp_path: Path, pg_url: URL, db_schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    schema = f"{db_schema}_{flavour}"
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
    (tmp_path / f"models_{flavour}.py").write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    url = pg_url.update_query_dict({"options": f"-csearch_path={schema}"})
    # The URL comes from DATABASE_URL, as the written alembic.ini leaves sqlalchemy.url empty.
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    args = ["init", "migrations", "--metadata", f"models_{flavour}:metadata"]
    assert main([*args, "--async"] if flavour == "async" else args) == 0
    env_py = (tmp_path / "migrations" / "env.py").read_text()
    assert ("create_async_engine" in env_py) is (flavour == "async")
    assert "import sa_patterns.alembic" in env_py
    cfg = Config(str(tmp_path / "alembic.ini"))
    cfg.attributes["configure_logger"] = False
    try:
        command.revision(cfg, message="init", autogenerate=True)
        command.upgrade(cfg, "head")
        command.check(cfg)
        pathed = create_engine(url)
        with pathed.connect() as conn:
            assert conn.execute(text("SELECT widget_count()")).scalar() == 0
        pathed.dispose()
        command.downgrade(cfg, "base")
        with admin.connect() as conn:
            fns = conn.execute(text("SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE nspname = :s"), {"s": schema}).scalar()
        assert fns == 0
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def test_init_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    from sa_patterns.cli.init import init

    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigurationError, match="not empty"):
        init(tmp_path / "migrations")


def test_template_ships_in_the_wheel(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(root)],
        check=True, capture_output=True,
    )
    wheel = next(tmp_path.glob("sa_patterns-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("env.py", "env_async.py", "script.py.mako", "alembic.ini.mako", "README"):
        assert f"sa_patterns/_templates/sa_patterns/{name}" in names
    assert "sa_patterns/py.typed" in names
    assert not any(n.startswith("alembic/") for n in names), "the template must not shadow alembic"
