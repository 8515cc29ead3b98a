"""The Alembic post-write hook: lint the revision ``alembic revision`` just wrote and print its
findings. It never fails the write: a finding, or a lint that cannot run, is printed only.

``alembic.ini``::

    [post_write_hooks]
    hooks = sa_patterns_lint
    sa_patterns_lint.type = sa_patterns_lint
    # optional: sa_patterns_lint.url = postgresql://... (table sizes), .exclude = rule,rule

The type is registered by :func:`register`, which ``env.py`` calls (Alembic looks hook types up
in its registry, filled by the code that ran before the hook).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from alembic.script import write_hooks

__all__ = ["HOOK_TYPE", "lint_written_revision", "register"]

HOOK_TYPE = "sa_patterns_lint"


def lint_written_revision(path: str, options: Mapping[str, Any]) -> None:
    """Print the findings of the revision at ``path``; ``options`` are the hook's ini keys:
    ``config`` (default ``$ALEMBIC_CONFIG`` or ``alembic.ini``), ``url``, ``exclude``."""
    from .linter import lint_migrations
    from .report import format_findings, summary

    ini = options.get("config") or os.environ.get("ALEMBIC_CONFIG") or "alembic.ini"
    exclude = [r.strip() for r in str(options.get("exclude") or "").split(",") if r.strip()]
    try:
        findings = lint_migrations(
            str(ini), revisions=str(path), url=options.get("url") or None, exclude=exclude
        )
    except Exception as exc:  # a hook must never fail the write: say why and go on
        print(f"  sa_patterns_lint: {os.path.basename(path)} was not linted: {exc}")
        return
    for line in format_findings(findings):
        print(f"  {line}")
    print(f"  sa_patterns_lint: {summary(findings)} (sa-patterns lint-migrations for details)")


def register() -> None:
    """Make ``type = sa_patterns_lint`` known to Alembic (idempotent); call it in ``env.py``."""
    write_hooks.register(HOOK_TYPE)(lint_written_revision)
