"""Migration linting: which operations of a revision stall a live table, the lock each takes
and the online way to do it (``sa-patterns lint-migrations``, or the Alembic post-write hook of
:mod:`sa_patterns.lint.hook`).

Each revision is rendered with Alembic's offline mode, so the toolkit's own operations are
linted as the SQL they run; squawk (``pip install 'sa_patterns[lint]'``) reads that SQL, and
this package adds what squawk cannot know: the locks of policies, triggers and row-level
security, backfills inside the migration's transaction, and, given a database, the size of each
table (a rewrite of an empty table is advice, of a big one blocking).
"""

from __future__ import annotations

from .linter import DEFAULT_PG_VERSION, SMALL_TABLE_ROWS, Finding, lint_migrations
from .rules import RULES, Rule

__all__ = ["DEFAULT_PG_VERSION", "RULES", "SMALL_TABLE_ROWS", "Finding", "Rule", "lint_migrations"]
