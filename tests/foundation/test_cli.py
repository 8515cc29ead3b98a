"""The ``sa-patterns`` command as a user runs it: its version, and failures told in one or two
lines (what, and what to do) with the traceback behind ``--debug``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import sa_patterns
from sa_patterns import ConfigurationError


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sa_patterns.cli", *args],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent / "tenancy",
    )


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0
    assert done.stdout.splitlines() == [f"sa-patterns {sa_patterns.__version__}"]
    assert done.stderr == ""


UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:1/nowhere"  # nothing listens on port 1
DEBUG = "(--debug shows the traceback)"


def test_unreachable_server_and_missing_database_are_two_lines(pg_url: object) -> None:
    from sqlalchemy import make_url

    missing = make_url(str(pg_url)).set(database="sa_patterns_no_such_db").render_as_string(hide_password=True)
    for command in (["doctor", "--metadata", "tenancy_models:Base.metadata"], ["refresh"]):
        done = run(*command, "--url", UNREACHABLE)
        assert (done.returncode, done.stdout) == (1, "")
        lines = done.stderr.splitlines()
        assert len(lines) == 2 and "Traceback" not in done.stderr
        assert lines[0].startswith(f"sa-patterns {command[0]}: cannot connect to {UNREACHABLE}: ")
        assert lines[1] == f"  check that the server is up and --url / DATABASE_URL point to it {DEBUG}"
        done = run(*command, "--url", missing)
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr.splitlines() == [
            f'sa-patterns {command[0]}: the server at {missing} answers, but database '
            '"sa_patterns_no_such_db" does not exist',
            f"  create the database (createdb) or fix its name in --url / DATABASE_URL {DEBUG}",
        ]
        done = run("--debug", *command, "--url", UNREACHABLE)
        assert done.returncode == 1 and "Traceback" in done.stderr and "OperationalError" in done.stderr


@pytest.mark.parametrize("url", ["postgresql+psycopg://x@:::bad/db", "not a url at all"])
def test_a_malformed_url_is_one_line(url: str) -> None:
    from sa_patterns.database import normalise_url

    with pytest.raises(ConfigurationError, match="not a database URL"):
        normalise_url(url)


def test_pytest_plugin_with_an_unreachable_database_is_one_error(tmp_path: Path) -> None:
    """Five tests on a server that does not answer: the run stops on the first, with the message
    once (per xdist worker), not the connection error repeated under every test."""
    (tmp_path / "test_five.py").write_text(
        "import pytest\n\n\n@pytest.mark.parametrize('n', range(5))\n"
        "def test_needs_the_database(engine, n):\n    assert engine\n"
    )
    for xdist in ([], ["-n", "2"]):
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *xdist, str(tmp_path)],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
            env={**os.environ, "DATABASE_URL": UNREACHABLE},
        )
        out = done.stdout + done.stderr
        assert done.returncode != 0 and "Traceback" not in out and "INTERNALERROR" not in out
        # pytest's own short summary repeats each error's message (in full when CI is set): count
        # the report body above it
        body = out.split("short test summary info")[0]
        assert body.count(f"PostgreSQL at {UNREACHABLE} does not answer") == (2 if xdist else 1), out
        assert "Interrupted: sa_patterns: no database (the error above)" in out
        assert len(done.stdout.splitlines()) <= 16, out


def test_init_prints_the_next_steps_with_the_owner_url(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sa_patterns.cli", "init", str(tmp_path / "migrations"), "--metadata", "m:Base"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    steps = [line.split("#")[0].strip() for line in done.stdout.splitlines()[1:]]
    assert steps == [
        "sa-patterns roles --url <a superuser URL>",
        "export DATABASE_URL=<the owner role's URL>",
        "alembic revision --autogenerate -m init",
        "alembic upgrade head",
    ]
    assert (tmp_path / "migrations" / "env.py").exists()
