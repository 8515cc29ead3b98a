"""Sessions: tests, lint, typecheck, docs, bench. `nox -s lint typecheck tests`."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

BENCH_COMPETITORS = [
    "sqlalchemy-continuum",
    "postgresql-audit",
    "sqlalchemy-searchable",
]
# Declares SQLAlchemy<2.1 but runs the benchmark's queries on 2.1 (measured): installed without
# its pin, so every competitor is measured in one process on one SQLAlchemy (bench/RESULTS.md).
BENCH_NO_DEPS = ["sqlalchemy-easy-softdelete"]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite on DATABASE_URL when set, else on an embedded PostgreSQL."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-n", "2", *session.posargs, env={"PYTHONWARNINGS": ""})


@nox.session(name="tests-sqlalchemy-2.0")
@nox.parametrize("sqlalchemy", ["2.0.30", "2.0"], ids=["floor", "latest"])
def tests_sqlalchemy_20(session: nox.Session, sqlalchemy: str) -> None:
    """The suite on SQLAlchemy 2.0: the floor pyproject promises (2.0.30) and the newest 2.0.x."""
    spec = "==2.0.30" if sqlalchemy == "2.0.30" else ">=2.0.30,<2.1"
    session.install("-e", ".[dev]", f"sqlalchemy[asyncio]{spec}")
    # fail loudly unless the version under test is the one that runs
    session.run(
        "python", "-c",
        "import sqlalchemy, sys; print('SQLAlchemy', sqlalchemy.__version__); "
        f"sys.exit(not sqlalchemy.__version__.startswith({sqlalchemy!r}))",
    )
    session.run("pytest", "-n", "2", *session.posargs, env={"PYTHONWARNINGS": ""})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "sa_patterns", "tests", "bench")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")
    session.run("mypy", "--strict", "tests/typing")


@nox.session
def docs(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks; competitors are installed here only."""
    session.install("-e", ".[dev]", *BENCH_COMPETITORS)
    session.install("--no-deps", *BENCH_NO_DEPS)
    session.run("python", "-m", "bench", *session.posargs)
