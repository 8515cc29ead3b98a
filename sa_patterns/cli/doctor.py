"""``sa-patterns doctor``: check a live database against the models, list what is unsafe.

Checks are plain functions in :data:`CHECKS`, so other patterns add theirs by appending
``(name, "module:function")``; each takes a :class:`DoctorContext` and returns problems (text
that says what is wrong and how to fix it). Exit status 1 when any check finds a problem.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import MetaData, create_engine
from sqlalchemy.engine import Connection

from .._spec import load_metadata, load_object
from ..database import normalise_url
from ..errors import ConfigurationError

__all__ = ["APPLIES_TO", "CHECKS", "OPTIONAL", "DoctorContext", "add_parser", "run_checks", "skipped", "verdict"]


@dataclass
class DoctorContext:
    """What a check sees: a connection as the *application's* role, and the models."""

    connection: Connection
    metadata: MetaData
    options: dict[str, Any] = field(default_factory=dict)


Check = Callable[[DoctorContext], Iterable[str]]

#: ``(name, "module:function")``: imported only when the doctor runs.
CHECKS: list[tuple[str, str]] = [
    ("row level security", "sa_patterns.cli.doctor:check_rls"),
    ("references between tenants include tenant_id", "sa_patterns.tenancy.references:check_tenant_references"),
    ("toolkit objects present and current", "sa_patterns.health:check_toolkit_objects"),
    ("foreign keys have a supporting index", "sa_patterns.health:check_foreign_key_indexes"),
    ("no invalid indexes", "sa_patterns.health:check_invalid_indexes"),
    ("partitions ready for the next period", "sa_patterns.health:check_partitions"),
    ("search vectors indexed", "sa_patterns.health:check_tsvector_indexes"),
    ("search vectors kept", "sa_patterns.health:check_search_vectors"),
    ("materialized views populated", "sa_patterns.health:check_matviews_populated"),
    ("materialized views fresh", "sa_patterns.health:check_matview_freshness"),
]


#: checks that run only when an option is given: check name -> (option, the flag that gives it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "materialized views fresh": ("matview_max_age", "--matview-max-age"),
}


#: checks about one kind of object: check name -> (the entity kind, what the models lack)
APPLIES_TO: dict[str, tuple[str, str]] = {
    "materialized views populated": ("materialized_view", "the models declare no materialized view"),
    "materialized views fresh": ("materialized_view", "the models declare no materialized view"),
}


def skipped(ctx: DoctorContext) -> dict[str, str]:
    """The checks that do not run, each with why (reported as skipped, never as ok): those
    about objects the models do not have, and those waiting for an option."""
    from ..schema.registry import registered

    kinds = {entity.kind for entity in registered(ctx.metadata)}
    why = {name: f"not applicable: {lack}" for name, (kind, lack) in APPLIES_TO.items() if kind not in kinds}
    for name, (option, flag) in OPTIONAL.items():
        if name not in why and ctx.options.get(option) is None:
            why[name] = f"skipped: give {flag} (e.g. {flag} 6h) to check"
    return why


def verdict(results: list[tuple[str, list[str]]], not_run: dict[str, str]) -> str:
    """One line under the table: what passed, what did not run, what failed."""
    failed = [name for name, problems in results if problems]
    ran = len(results) - len(not_run)
    tail = f", {len(not_run)} not run" if not_run else ""
    if failed:
        return f"{len(failed)} of {ran} checks found problems{tail}: {', '.join(failed)}"
    return f"all {ran} checks ok{tail}"


def parse_age(text: str) -> float:
    """``"90"`` (seconds), ``"30m"``, ``"6h"`` or ``"2d"`` → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        return float(value) * units[unit]
    except ValueError:
        raise ConfigurationError(f"--matview-max-age {text!r}: use e.g. 90, 30m, 6h or 2d.") from None


def check_rls(ctx: DoctorContext) -> list[str]:
    from ..testing.rls import rls_problems

    return rls_problems(ctx.connection, ctx.metadata, role=ctx.options.get("app_role"))


def run_checks(ctx: DoctorContext) -> list[tuple[str, list[str]]]:
    """Each check's name and problems, in :data:`CHECKS` order (none for a check
    :func:`skipped`: it does not run)."""
    results: list[tuple[str, list[str]]] = []
    not_run = skipped(ctx)
    for name, spec in CHECKS:
        if name in not_run:
            results.append((name, []))
            continue
        fn: Check = load_object(spec, what="doctor check")
        results.append((name, list(fn(ctx))))
    return results


def _run(args: argparse.Namespace) -> int:
    raw = args.url or os.environ.get("DATABASE_URL", "")
    if not raw:
        raise ConfigurationError("doctor needs --url or DATABASE_URL (connect as the app role).")
    metadata = load_metadata(args.metadata)
    engine = create_engine(normalise_url(raw))
    try:
        with engine.connect() as conn:
            options = {"app_role": args.app_role}
            if args.matview_max_age:
                options["matview_max_age"] = parse_age(args.matview_max_age)
            ctx = DoctorContext(conn, metadata, options)
            results = run_checks(ctx)
    finally:
        engine.dispose()
    not_run = skipped(ctx)
    if args.format == "json":
        checks = [
            {"check": n, "problems": p, **({"skipped": not_run[n]} if n in not_run else {})}
            for n, p in results
        ]
        print(json.dumps({"ok": not any(p for _, p in results), "checks": checks}, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="sa-patterns doctor", show_lines=True)
        table.add_column("check")
        table.add_column("result")
        for name, problems in results:
            if name in not_run:
                table.add_row(name, f"[yellow]{not_run[name]}[/]")
            else:
                table.add_row(name, "\n".join(f"[red]✗[/] {p}" for p in problems) or "[green]ok[/]")
        console = Console()
        console.print(table)
        failed = any(problems for _, problems in results)
        console.print(f"[{'red' if failed else 'green'}]{verdict(results, not_run)}[/]")
    return 1 if any(problems for _, problems in results) else 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check the database against the models (RLS ready for the app role, ...)"
    )
    parser.add_argument("--url", help="database URL (default: DATABASE_URL)")
    parser.add_argument(
        "--metadata", required=True, help="models as package.module:Base (or :metadata)"
    )
    parser.add_argument(
        "--app-role", help="the role the application connects as (default: the URL's user)"
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument(
        "--matview-max-age", help="report materialized views not refreshed within this (e.g. 6h)"
    )
    parser.set_defaults(func=_run)
