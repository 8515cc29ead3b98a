"""``sa-patterns rotate-keys --model app.models:Customer``: re-encrypt with the active key.

Keys come from where the model's columns get them (``SA_PATTERNS_KEYS`` by default), the
database from ``--url`` or ``DATABASE_URL``. Stop it at any time; run it again to resume.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import create_engine

from .._spec import load_object
from ..database import normalise_url
from ..errors import ConfigurationError

__all__ = ["add_parser", "load_model"]


def load_model(spec: str) -> Any:
    """``package.module:Model`` → the mapped class (the current directory is importable)."""
    return load_object(spec, what="--model", kind="Model")


def _run(args: argparse.Namespace) -> int:
    from ..encryption.rotation import rotate_keys
    from ..encryption.verify import check_keys

    raw_url = args.url or os.environ.get("DATABASE_URL", "")
    if not raw_url:
        raise ConfigurationError("no database: pass --url or set DATABASE_URL.")
    model = load_model(args.model)
    check_keys(model)  # a missing or bad key fails here, before any row is touched
    console = Console(stderr=True)
    engine = create_engine(normalise_url(raw_url))
    try:
        with Progress(
            TextColumn(f"[bold]rotate {args.model}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task("rows", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = rotate_keys(
                engine,
                model,
                batch_size=args.batch_size,
                columns=args.columns or None,
                progress=progress,
            )
    finally:
        engine.dispose()
    print(
        f"{report.table}: {report.rows} rows in {report.batches} batches, "
        f"{report.reencrypted} values re-encrypted with {report.active_key!r}, "
        f"{report.reindexed} blind indexes rebuilt"
        + (f" with {report.active_index_key!r}" if report.active_index_key else "")
        + f", {report.remaining} rows remaining ({report.seconds:.1f}s)"
    )
    return 0 if report.remaining == 0 else 1


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "rotate-keys",
        help="re-encrypt a model's encrypted columns with the active key (batched, resumable)",
    )
    parser.add_argument("--model", required=True, help="the mapped class, as package.module:Model")
    parser.add_argument("--url", help="database URL (default: $DATABASE_URL)")
    parser.add_argument("--batch-size", type=int, default=500, help="rows per transaction (%(default)s)")
    parser.add_argument(
        "--column", dest="columns", action="append", help="only this column (repeatable)"
    )
    parser.set_defaults(func=_run)
