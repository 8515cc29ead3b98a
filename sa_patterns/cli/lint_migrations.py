"""``sa-patterns lint-migrations``: which revisions stall a live table, and the online way.

Exit status 0 when nothing is blocking, 1 when a finding is blocking, 2 when the lint itself
failed (two lines: what, what to do; ``--debug`` for the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ..errors import SAPatternsError
from ._failure import DEBUG, explain, first_line

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from ..lint import lint_migrations
    from ..lint.report import format_findings, summary

    exclude = [r.strip() for item in args.exclude or [] for r in item.split(",") if r.strip()]
    try:
        findings = lint_migrations(
            args.config,
            revisions=args.revision,
            url=args.url,
            downgrade=args.downgrade,
            pg_version=args.pg_version,
            exclude=exclude,
            small_table_rows=args.small_table,
        )
    except (SAPatternsError, SQLAlchemyError) as exc:
        if args.debug:
            raise
        what, todo = _explain(exc, args)
        print(f"sa-patterns lint-migrations: {what}", file=sys.stderr)
        print(f"  {todo}", file=sys.stderr)
        return 2
    blocking = sum(f.severity == "blocking" for f in findings)
    if args.format == "json":
        print(json.dumps({"findings": [f.as_dict() for f in findings], "blocking": blocking}, indent=2))
    else:
        for line in format_findings(findings):
            print(line)
        print(summary(findings))
    return 1 if blocking else 0


def _explain(exc: BaseException, args: argparse.Namespace) -> tuple[str, str]:
    if isinstance(exc, SQLAlchemyError):
        told = explain(exc, "the --url database")
        if told is not None:
            return told
        return f"reading table sizes failed: {first_line(exc)}", f"check --url, or lint without it {DEBUG}"
    return str(exc), f"nothing was linted {DEBUG}"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lint-migrations",
        help="flag migration operations that block a live table (squawk + the toolkit's rules)",
        description="Render each revision's SQL with Alembic's offline mode, lint it with squawk "
        "and the toolkit's own rules, and print each finding with its op line, the lock it "
        "takes and the online alternative. Exit status 1 when a finding is blocking.",
    )
    parser.add_argument(
        "-c", "--config", default=os.environ.get("ALEMBIC_CONFIG", "alembic.ini"),
        type=Path, help="the alembic.ini (default: $ALEMBIC_CONFIG or %(default)s)",
    )
    parser.add_argument(
        "--revision", help="A:B (after A, up to B), A:, :B, or one revision (default: all)"
    )
    parser.add_argument(
        "--url", help="a database to read table sizes from: a scan of an empty or small table "
        "is advice, of a big one blocking (default: sizes unknown, scans are blocking)",
    )
    parser.add_argument("--downgrade", action="store_true", help="lint the downgrades too")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--pg-version", help="the server version squawk assumes (default: "
                        "--url's, else 14)")
    parser.add_argument("--exclude", action="append", metavar="RULE",
                        help="leave out a rule (repeatable, or comma-separated)")
    parser.add_argument(
        "--small-table", type=int, default=10_000, metavar="ROWS",
        help="with --url: a table of at most ROWS rows is small (default %(default)s)",
    )
    parser.add_argument("--debug", action="store_true", help="on failure, show the traceback")
    parser.set_defaults(func=_run)
