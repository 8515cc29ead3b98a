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


# SQLAlchemy 2.0 specs for tests-sqlalchemy-2.0; .ci/run (sa20_suite) runs the same two, on PG 15.
SQLALCHEMY_20 = {"floor": "==2.0.30", "latest": ">=2.0.30,<2.1"}
# Fails loudly unless the SQLAlchemy that imports is the one asked for (argv[1]: the spec).
SQLALCHEMY_CHECK = (
    "import sqlalchemy, sys; from packaging.specifiers import SpecifierSet\n"
    "v = sqlalchemy.__version__; print('SQLAlchemy', v, 'from', sqlalchemy.__file__)\n"
    "sys.exit(None if SpecifierSet(sys.argv[1]).contains(v) else f'SQLAlchemy {v} is not {sys.argv[1]}')"
)


@nox.session(name="tests-sqlalchemy-2.0")
@nox.parametrize("spec", list(SQLALCHEMY_20.values()), ids=list(SQLALCHEMY_20))
def tests_sqlalchemy_20(session: nox.Session, spec: str) -> None:
    """The suite on SQLAlchemy 2.0: the floor pyproject promises (2.0.30) and the newest 2.0.x."""
    session.install("-e", ".[dev]", f"sqlalchemy[asyncio]{spec}")
    session.run("python", "-c", SQLALCHEMY_CHECK, spec)
    session.run(
        "python", "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", *session.posargs,
        env={"PYTHONWARNINGS": ""},
    )


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "sa_patterns", "tests", "bench", "tools")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")
    session.run("mypy", "--strict", "tests/typing")


@nox.session
def docs(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("python", "tools/docs_sync.py", "--check")  # inline examples and bench figures
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks; competitors are installed here only."""
    session.install("-e", ".[dev]", *BENCH_COMPETITORS)
    session.install("--no-deps", *BENCH_NO_DEPS)
    session.run("python", "-m", "bench", *session.posargs)


@nox.session(name="bench-sqlalchemy-2.0")
def bench_sqlalchemy_20(session: nox.Session) -> None:
    """The benchmarks that report per SQLAlchemy line (tenancy) on the newest 2.0.x:
    ``nox -s bench-sqlalchemy-2.0 -- --only tenancy`` writes its own section of RESULTS.md."""
    spec = SQLALCHEMY_20["latest"]
    session.install("-e", ".[dev]", f"sqlalchemy[asyncio]{spec}")
    session.run("python", "-c", SQLALCHEMY_CHECK, spec)
    session.run("python", "-m", "bench", *session.posargs)
