"""One shape for a command that failed on the database: what failed and what to do, two lines
on stderr, exit status 1; the traceback only with ``--debug``."""

from __future__ import annotations

import sys

from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

__all__ = ["database_failure", "explain", "first_line"]

DEBUG = "(--debug shows the traceback)"


def first_line(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    return lines[0] if lines else type(original).__name__


def explain(exc: SQLAlchemyError, where: str) -> tuple[str, str] | None:
    """What went wrong reaching the database at ``where`` and what to do, one line each; None
    when ``exc`` is not about the URL or the connection (the command says what it was doing)."""
    if isinstance(exc, ArgumentError):
        return (
            f"not a database URL: {first_line(exc)}",
            f"pass --url or DATABASE_URL as postgresql://user@host:port/database {DEBUG}",
        )
    if isinstance(exc, DBAPIError) and (exc.connection_invalidated or exc.statement is None):
        # no statement: connect() itself failed (psycopg's OperationalError)
        reason = first_line(exc)
        if "database" in reason and "does not exist" in reason:
            return (
                f"the server at {where} answers, but {reason.split('FATAL:')[-1].strip()}",
                f"create the database (createdb) or fix its name in --url / DATABASE_URL {DEBUG}",
            )
        return (
            f"cannot connect to {where}: {reason}",
            f"check that the server is up and --url / DATABASE_URL point to it {DEBUG}",
        )
    return None


def database_failure(command: str, exc: SQLAlchemyError, todo: str, *, debug: bool) -> int:
    """Report ``exc`` for ``sa-patterns <command>`` (re-raised with ``debug``)."""
    if debug:
        raise exc
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    print(f"sa-patterns {command}: {reason}", file=sys.stderr)
    print(f"  {todo} {DEBUG}", file=sys.stderr)
    return 1
