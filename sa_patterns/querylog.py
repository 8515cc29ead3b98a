"""Structured query logging with a slow-query report, attached to one engine and removable.

Every statement the engine sends becomes a :mod:`logging` record on ``sa_patterns.queries``
whose ``query`` attribute is a :class:`QueryRecord` (statement, redacted parameters, duration,
rows). Parameters are redacted by default: a log line must never carry a password or a token,
so values are replaced by their type name unless ``redact=False``. Statements slower than
``slow_ms`` are logged at WARNING and kept for :meth:`QueryLog.report`.

``explain=True`` (development only) also captures ``EXPLAIN (ANALYZE, BUFFERS)`` for slow
``SELECT``\\ s. ANALYZE *executes the statement again*, so it is never done for anything but a
plain SELECT, and it runs inside a SAVEPOINT so a failure cannot spoil the caller's
transaction.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection, ExecutionContext
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["QueryLog", "QueryRecord", "log_queries"]

_START = "sa_patterns.querylog.start"
_SPACES = re.compile(r"\s+")


@dataclass
class QueryRecord:
    """One executed statement, as it goes to the log."""

    statement: str
    parameters: Any
    duration_ms: float
    rows: int | None
    executemany: bool
    slow: bool
    error: str | None = None
    plan: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "statement": self.statement,
            "parameters": self.parameters,
            "duration_ms": round(self.duration_ms, 3),
            "rows": self.rows,
            "executemany": self.executemany,
            "slow": self.slow,
            "error": self.error,
            "plan": self.plan,
        }


def _redact_value(value: Any) -> str:
    return "<null>" if value is None else f"<{type(value).__name__}>"


def _redact(parameters: Any) -> Any:
    if isinstance(parameters, Mapping):
        return {k: _redact_value(v) for k, v in parameters.items()}
    if isinstance(parameters, Sequence) and not isinstance(parameters, str | bytes):
        return [_redact(p) if isinstance(p, Mapping | list | tuple) else _redact_value(p)
                for p in parameters]
    return _redact_value(parameters)


@dataclass
class _Stat:
    count: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    plan: str | None = None


@dataclass(eq=False)  # its bound methods are event listeners: hashed by identity
class QueryLog:
    """The handle :func:`log_queries` returns: records slow statements; ``remove()`` detaches."""

    engine: Engine
    slow_ms: float
    logger: logging.Logger
    redact: bool
    explain: bool
    level: int
    keep: int = 1000
    slow: list[QueryRecord] = field(default_factory=list)
    count: int = 0
    _stats: dict[str, _Stat] = field(default_factory=dict)
    _attached: bool = False

    # -- events --------------------------------------------------------------------------------
    def _before(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None,
        executemany: bool,
    ) -> None:
        conn.info.setdefault(_START, []).append(time.perf_counter())

    def _after(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None,
        executemany: bool,
    ) -> None:
        started = conn.info.get(_START)
        if not started:
            return
        elapsed = (time.perf_counter() - started.pop()) * 1000
        rows = getattr(cursor, "rowcount", -1)
        self._emit(conn, cursor, statement, parameters, elapsed, rows, executemany, None)

    def _error(self, ctx: Any) -> None:
        started = ctx.connection.info.get(_START) if ctx.connection is not None else None
        if not started:
            return
        elapsed = (time.perf_counter() - started.pop()) * 1000
        self._emit(
            ctx.connection, None, ctx.statement or "", ctx.parameters, elapsed, None,
            bool(getattr(ctx.execution_context, "executemany", False)),
            type(ctx.original_exception).__name__,
        )

    def _emit(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        elapsed: float,
        rows: int | None,
        executemany: bool,
        error: str | None,
    ) -> None:
        self.count += 1
        slow = elapsed >= self.slow_ms
        record = QueryRecord(
            statement=statement,
            parameters=_redact(parameters) if self.redact else parameters,
            duration_ms=elapsed,
            rows=rows if rows is not None and rows >= 0 else None,
            executemany=executemany,
            slow=slow,
            error=error,
        )
        if slow and self.explain and error is None and not executemany:
            record.plan = self._explain(conn, statement, parameters)
        if slow:
            self._remember(record)
        level = logging.WARNING if (slow or error) else self.level
        if self.logger.isEnabledFor(level):
            self.logger.log(
                level,
                "%s%.1f ms rows=%s: %s",
                "SLOW " if slow else "",
                elapsed,
                record.rows,
                _SPACES.sub(" ", statement).strip()[:500],
                extra={"query": record},
            )

    def _remember(self, record: QueryRecord) -> None:
        if len(self.slow) < self.keep:
            self.slow.append(record)
        key = _SPACES.sub(" ", record.statement).strip()
        stat = self._stats.setdefault(key, _Stat())
        stat.count += 1
        stat.total_ms += record.duration_ms
        stat.max_ms = max(stat.max_ms, record.duration_ms)
        stat.plan = stat.plan or record.plan

    def _explain(self, conn: Connection, statement: str, parameters: Any) -> str | None:
        if statement.lstrip()[:6].upper() != "SELECT" or " FOR UPDATE" in statement.upper():
            return None
        dbapi = conn.connection.dbapi_connection
        if dbapi is None:
            return None
        cursor = dbapi.cursor()
        in_transaction = not getattr(dbapi, "autocommit", False)
        try:
            if in_transaction:
                cursor.execute("SAVEPOINT sa_patterns_explain")
            try:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters or None)
                plan = "\n".join(str(row[0]) for row in cursor.fetchall())
            except Exception as exc:  # the plan is a nicety: never break the caller
                plan = f"(EXPLAIN failed: {type(exc).__name__})"
                if in_transaction:
                    cursor.execute("ROLLBACK TO SAVEPOINT sa_patterns_explain")
            if in_transaction:
                cursor.execute("RELEASE SAVEPOINT sa_patterns_explain")
            return plan
        finally:
            cursor.close()

    # -- public --------------------------------------------------------------------------------
    def attach(self) -> QueryLog:
        if not self._attached:
            event.listen(self.engine, "before_cursor_execute", self._before)
            event.listen(self.engine, "after_cursor_execute", self._after)
            event.listen(self.engine, "handle_error", self._error)
            self._attached = True
        return self

    def remove(self) -> None:
        """Detach from the engine; the collected report stays readable."""
        if self._attached:
            event.remove(self.engine, "before_cursor_execute", self._before)
            event.remove(self.engine, "after_cursor_execute", self._after)
            event.remove(self.engine, "handle_error", self._error)
            self._attached = False

    def __enter__(self) -> QueryLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def stats(self) -> list[tuple[str, int, float, float]]:
        """``(statement, count, total_ms, max_ms)`` of slow statements, slowest total first."""
        items = sorted(self._stats.items(), key=lambda kv: kv[1].total_ms, reverse=True)
        return [(sql, s.count, s.total_ms, s.max_ms) for sql, s in items]

    def report(self, top: int = 10) -> str:
        """A plain-text slow-query report: the statements that cost the most time in total."""
        lines = [f"slow queries (>= {self.slow_ms:g} ms) out of {self.count} statements:"]
        if not self._stats:
            lines.append("  none")
        for sql, count, total, worst in self.stats()[:top]:
            lines.append(f"  {total:9.1f} ms total  {count:5d}×  max {worst:8.1f} ms  {sql[:200]}")
            plan = self._stats[sql].plan
            if plan:
                lines.extend("      " + line for line in plan.splitlines())
        return "\n".join(lines)


def log_queries(
    engine: Engine | AsyncEngine,
    *,
    slow_ms: float = 200.0,
    logger: logging.Logger | str = "sa_patterns.queries",
    redact: bool = True,
    explain: bool = False,
    level: int = logging.DEBUG,
) -> QueryLog:
    """Log every statement on ``engine`` (sync or async) and keep the slow ones for a report.

    Records go to ``logger`` at ``level`` (slow ones and failures at WARNING) with the
    structured :class:`QueryRecord` as ``record.query``. Returns a :class:`QueryLog`: call
    ``.remove()`` (or use it as a ``with`` block) to detach, ``.report()`` for the summary.
    """
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    log = logging.getLogger(logger) if isinstance(logger, str) else logger
    return QueryLog(sync_engine, slow_ms, log, redact, explain, level).attach()
