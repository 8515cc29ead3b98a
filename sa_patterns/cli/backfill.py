"""``sa-patterns backfill app.fills:FILL_TENANT``: run a :class:`~sa_patterns.backfill.Backfill`
batch by batch with a progress bar; ``--status`` says where it stands.

The object is a ``Backfill`` or a zero-argument callable returning one. Run it as the owner role
(``--url`` or ``DATABASE_URL``). Stop it at any time (Ctrl-C, a killed process, a failed batch):
the batches committed so far stay done, and the same command resumes after them.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from .._spec import load_object
from ..database import normalise_url
from ..errors import ConfigurationError, SAPatternsError
from ._failure import DEBUG, explain, first_line

__all__ = ["add_parser", "load_backfill"]


def load_backfill(spec: str) -> Any:
    """``package.module:NAME`` → the :class:`~sa_patterns.backfill.Backfill` it names."""
    from ..backfill import Backfill

    obj = load_object(spec, what="backfill", kind="Backfill")
    if not isinstance(obj, Backfill) and callable(obj):
        obj = obj()
    if not isinstance(obj, Backfill):
        raise ConfigurationError(f"backfill {spec!r} is {type(obj).__name__}, not a sa_patterns.backfill.Backfill.")
    return obj


def _run(args: argparse.Namespace) -> int:
    raw = args.url or os.environ.get("DATABASE_URL", "")
    try:
        if not raw:
            raise ConfigurationError("no database: pass --url or set DATABASE_URL.")
        url = normalise_url(raw)
        backfill = load_backfill(args.backfill)
        engine = create_engine(url)
        try:
            return _status(engine, backfill) if args.status else _fill(engine, backfill, args)
        finally:
            engine.dispose()
    except KeyboardInterrupt:
        print("sa-patterns backfill: interrupted", file=sys.stderr)
        print("  the batches committed so far stay done; run the same command to resume", file=sys.stderr)
        return 130
    except (SQLAlchemyError, SAPatternsError) as exc:
        if args.debug:
            raise
        from ..backfill import BackfillError

        if isinstance(exc, BackfillError):
            what, todo = str(exc), f"committed batches stay done; the same command resumes after them {DEBUG}"
        elif isinstance(exc, SAPatternsError):
            what, todo = str(exc), f"no row was touched {DEBUG}"
        else:
            where = _url_text(raw)
            what, todo = explain(exc, where) or (
                f"the backfill failed: {first_line(exc)}",
                f"committed batches stay done; fix the cause and run the same command to resume {DEBUG}",
            )
        print(f"sa-patterns backfill: {what}", file=sys.stderr)
        print(f"  {todo}", file=sys.stderr)
        return 2 if isinstance(exc, SAPatternsError) and not isinstance(exc, BackfillError) else 1


def _url_text(raw: str) -> str:
    try:
        return normalise_url(raw).render_as_string(hide_password=True)
    except (SAPatternsError, ValueError):
        return "the database"


def _status(engine: Any, backfill: Any) -> int:
    from ..backfill import backfill_status, remaining_rows

    state = backfill_status(engine, backfill.name)
    if state is None:
        left = remaining_rows(engine, backfill)
        print(f"{backfill.name}: not started ({left} rows to do)")
        return 0
    if state.finished_at is not None:
        print(
            f"{backfill.name}: finished at {state.finished_at:%Y-%m-%d %H:%M:%S %Z}, "
            f"{state.rows_done} rows in {state.batches} batches"
        )
        return 0
    left = remaining_rows(engine, backfill)
    last = ", ".join(state.last_key) if state.last_key else "none"
    print(
        f"{backfill.name}: in progress, {state.rows_done} rows done in {state.batches} batches, "
        f"{left} left; last key ({last}); last batch at {state.updated_at:%Y-%m-%d %H:%M:%S %Z}"
    )
    return 0


def _fill(engine: Any, backfill: Any, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from ..backfill import Progress as Step
    from ..backfill import run_backfill

    console = Console(stderr=True)
    with Progress(
        TextColumn(f"[bold]backfill {backfill.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} rows/s"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("rows", total=None, rate="-")

        def progress(step: Step) -> None:
            bar.update(task, completed=step.rows_done, total=step.estimate, rate=f"{step.rate:,.0f}")

        report = run_backfill(
            engine,
            backfill,
            batch_size=args.batch_size,
            lock_timeout=args.lock_timeout,
            statement_timeout=args.statement_timeout,
            pause=args.pause,
            retries=args.retries,
            restart=args.restart,
            max_batches=args.max_batches,
            progress=progress,
        )
    if report.already_finished:
        print(f"{report.name}: already finished ({report.rows_total} rows); nothing to do (--restart runs it again)")
        return 0
    state = "finished" if report.finished else "stopped (--max-batches); run again to continue"
    print(
        f"{report.name}: {report.rows} rows in {report.batches} batches on {report.table}"
        f" ({report.retries} retries, longest batch {report.longest_batch * 1000:.0f} ms), "
        f"{report.rows_total} in all, {state} ({report.seconds:.1f}s)"
    )
    return 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "backfill",
        help="run a Backfill in short batches that commit (resumable, progress bar, --status)",
    )
    parser.add_argument("backfill", help="the Backfill object, as package.module:NAME")
    parser.add_argument("--url", help="database URL, as the owner role (default: $DATABASE_URL)")
    parser.add_argument("--batch-size", type=int, default=1000, help="rows per transaction (%(default)s)")
    parser.add_argument(
        "--lock-timeout", type=float, default=0.5, metavar="SECONDS",
        help="each batch's lock_timeout; a batch that hits it is retried (%(default)s)",
    )
    parser.add_argument(
        "--statement-timeout", type=float, default=None, metavar="SECONDS",
        help="each batch's statement_timeout (default: the server's)",
    )
    parser.add_argument(
        "--pause", type=float, default=0.0, metavar="SECONDS", help="sleep between batches (%(default)s)"
    )
    parser.add_argument("--retries", type=int, default=10, help="tries of a batch that meets a lock (%(default)s)")
    parser.add_argument("--max-batches", type=int, default=None, help="stop after this many batches")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume", dest="restart", action="store_false",
        help="continue after the last committed batch (the default)",
    )
    mode.add_argument(
        "--restart", dest="restart", action="store_true",
        help="forget recorded progress and start from the first key",
    )
    mode.add_argument("--status", action="store_true", help="print the recorded progress and exit")
    parser.add_argument("--debug", action="store_true", help="on failure, show the traceback")
    parser.set_defaults(func=_run, restart=False)
