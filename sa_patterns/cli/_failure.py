"""One shape for a command that failed on the database: what failed and what to do, two lines
on stderr, exit status 1; the traceback only with ``--debug``."""

from __future__ import annotations

import sys

from sqlalchemy.exc import SQLAlchemyError

__all__ = ["database_failure"]


def database_failure(command: str, exc: SQLAlchemyError, todo: str, *, debug: bool) -> int:
    """Report ``exc`` for ``sa-patterns <command>`` (re-raised with ``debug``)."""
    if debug:
        raise exc
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    print(f"sa-patterns {command}: {reason}", file=sys.stderr)
    print(f"  {todo} (--debug shows the traceback)", file=sys.stderr)
    return 1
