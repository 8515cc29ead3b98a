"""The step runner every online adoption shares (``op.add_tenant_column``, the search vector's
and the encrypted column's): statements emitted online or rendered offline, short transactions
under ``SET LOCAL lock_timeout`` retried with backoff, waits without a timeout for steps that
block nobody, and the backfill record forgotten once an adoption is done.

A step runs outside the migration's transaction (in Alembic's ``autocommit_block()``), so each
``brief()`` is its own ``BEGIN`` ... ``COMMIT``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from alembic.autogenerate import comparators
from alembic.autogenerate.api import AutogenContext
from alembic.operations import Operations
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import DDL, MetaData, Table, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ..backfill import STATE_TABLE
from ..errors import BackfillError, ConfigurationError

__all__ = ["LOCK_NOT_AVAILABLE", "OnlineSteps", "check_lock_timeout", "metadata_tables", "run_last"]

Comparator = Callable[[AutogenContext, Any, Any], PriorityDispatchResult]

LOCK_NOT_AVAILABLE = "55P03"


def check_lock_timeout(what: str, value: str) -> str:
    """``value`` when it is a duration such as ``'2s'`` (it is written into SQL as a literal)."""
    if not value.strip().rstrip("smin").strip().isdigit():
        raise ConfigurationError(f"{what}(lock_timeout={value!r}): a duration such as '2s'.")
    return value


def metadata_tables(autogen_context: AutogenContext) -> dict[tuple[str, str], Table]:
    """The models' tables of this autogenerate run, by (schema or "", name)."""
    given = autogen_context.metadata
    metadatas = [] if given is None else [given] if isinstance(given, MetaData) else list(given)
    return {(t.schema or "", t.name): t for md in metadatas for t in md.tables.values()}


def run_last(comparator: Comparator) -> Comparator:
    """Register a schema comparator that runs last in each autogenerate run, after the plugins'
    comparators too (they run after the global ones of the same priority, so a global LAST is
    not enough): a global FIRST one installs it at LAST on the run's own dispatcher."""

    @comparators.dispatch_for("schema", priority=DispatchPriority.FIRST)
    def install(autogen_context: AutogenContext, upgrade_ops: Any, schemas: Any) -> PriorityDispatchResult:
        autogen_context.comparators.dispatch_for("schema", priority=DispatchPriority.LAST)(comparator)
        return PriorityDispatchResult.CONTINUE

    return comparator


class OnlineSteps:
    """Runs one adoption's statements on the migration's connection.

    ``what`` names the adoption in errors (``"adopting tenant_id on tasks"``).
    """

    def __init__(self, operations: Operations, what: str, *, lock_timeout: str, retries: int) -> None:
        self.operations, self.what = operations, what
        self.lock_timeout, self.retries = lock_timeout.strip(), retries
        self.offline = operations.get_context().as_sql

    @property
    def bind(self) -> Connection:
        return self.operations.get_bind()

    def emit(self, sql: str) -> None:
        if self.offline:
            # DDL(): no ":" parameter parsing; it %-formats its text, so "%" is doubled
            self.operations.execute(DDL(sql.replace("%", "%%")))  # type: ignore[no-untyped-call]
        else:
            self.bind.exec_driver_sql(sql)

    def brief(self, *statements: str) -> None:
        """One short transaction under ``SET LOCAL lock_timeout``; online, a lock wait that
        times out rolls it back, and it is tried again after a growing pause."""
        for attempt in range(self.retries + 1):
            self.emit("BEGIN")
            try:
                self.emit(f"SET LOCAL lock_timeout = {self.lock_timeout!r}")
                for statement in statements:
                    self.emit(statement)
                self.emit("COMMIT")
                return
            except DBAPIError as exc:
                self.bind.exec_driver_sql("ROLLBACK")
                if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                    raise
                if attempt == self.retries:
                    raise BackfillError(
                        f"{self.what}: a step could not take its lock within "
                        f"lock_timeout={self.lock_timeout} in {attempt + 1} tries (a long "
                        f"transaction holds the table: see pg_stat_activity). Statement: "
                        f"{statements[0][:120]}. Run the upgrade again: it resumes."
                    ) from exc
                time.sleep(min(0.2 * 2**attempt, 10.0) * (0.5 + random.random()))

    @contextmanager
    def unlimited_wait(self) -> Iterator[None]:
        """No lock_timeout for a step that blocks no reader or writer (CREATE INDEX
        CONCURRENTLY waits for older transactions to end; only the migration waits)."""
        if self.offline:
            # the session's value is not known offline: a RESET would drop env.py's timeout for
            # the statements after (the policies), so the script only says what happens online
            self.emit("-- sa_patterns: lock_timeout 0 for the next statement, the session's value after")
            yield
            return
        previous = self.bind.execute(text("SELECT current_setting('lock_timeout')")).scalar_one()
        self.bind.execute(text("SELECT set_config('lock_timeout', '0', false)"))
        try:
            yield
        finally:
            self.bind.execute(text("SELECT set_config('lock_timeout', :v, false)"), {"v": previous})

    def index_valid(self, qualified_index: str) -> bool:
        """Whether the index exists and is valid; an INVALID leftover of an interrupted
        ``CREATE INDEX CONCURRENTLY`` is dropped (so the build runs again). False offline."""
        if self.offline:
            return False
        valid = self.bind.execute(text(
            "SELECT i.indisvalid FROM pg_catalog.pg_index i WHERE i.indexrelid = to_regclass(:i)"
        ), {"i": qualified_index}).scalar()
        if valid is False:
            with self.unlimited_wait():
                self.emit(f"DROP INDEX CONCURRENTLY IF EXISTS {qualified_index}")
        return bool(valid)

    def forget(self, backfill_name: str) -> None:
        """A finished adoption leaves no bookkeeping: its backfill record goes, and the state
        table with it when no other backfill is recorded (a table no model declares, which the
        next autogenerate would offer to drop). Online only, as the fill."""
        if self.offline:
            return
        state = STATE_TABLE  # where run_backfill keeps it: the search path's first schema
        if self.bind.execute(text("SELECT to_regclass(:t)"), {"t": state}).scalar() is None:
            return
        self.bind.exec_driver_sql("BEGIN")
        try:
            self.bind.exec_driver_sql("SET LOCAL lock_timeout = '1s'")
            self.bind.exec_driver_sql(f"LOCK TABLE {state} IN ACCESS EXCLUSIVE MODE")
            self.bind.execute(text(f"DELETE FROM {state} WHERE name = :n"), {"n": backfill_name})  # noqa: S608
            if not self.bind.execute(text(f"SELECT EXISTS (SELECT FROM {state})")).scalar():  # noqa: S608
                self.bind.exec_driver_sql(f"DROP TABLE {state}")
            self.bind.exec_driver_sql("COMMIT")
        except DBAPIError:
            self.bind.exec_driver_sql("ROLLBACK")  # kept: another backfill is busy with it
