"""``sa-patterns demo``: the example app, migrated and exercised end to end."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from ..demo.runner import DemoFailure, run_demo

    try:
        run_demo()
    except DemoFailure as exc:
        print(f"demo failed: {exc}")
        return 1
    return 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the example app (embedded PostgreSQL unless DATABASE_URL is set)"
    )
    parser.set_defaults(func=_run)
