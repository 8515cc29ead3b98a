"""Count statements and catch N+1 lazy loads, for tests and development.

The N+1 problem: load N parents with one query, then touch ``parent.children`` in a loop and
the ORM lazy-loads each collection with its own query: N+1 round trips where ``selectinload``
would need 2. It is invisible in code review and in small test data. :class:`QueryCounter`
counts what really reaches the driver (flushes included); :func:`nplusone_guard` also watches
the session's lazy loads and fails when one relationship is lazy-loaded more than
``max_lazy_loads`` times in the block, naming it and the loader option that fixes it.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session

from .errors import NPlusOneDetected

__all__ = ["QueryCounter", "count_queries", "nplusone_guard"]

_SAVEPOINT = re.compile(r"\s*(SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO SAVEPOINT)\b", re.I)

Countable = Engine | Connection | AsyncEngine | AsyncConnection | Session | AsyncSession


def _sync_target(target: Countable) -> Engine | Connection:
    if isinstance(target, AsyncSession):
        target = target.sync_session
    if isinstance(target, Session):
        bind = target.get_bind()
        return bind
    if isinstance(target, AsyncEngine):
        return target.sync_engine
    if isinstance(target, AsyncConnection):
        return target.sync_connection  # type: ignore[return-value]
    return target


@dataclass(eq=False)  # listeners are hashed: identity, not field equality
class QueryCounter:
    """Counts statements sent through ``target`` by this thread while attached (SAVEPOINT
    bookkeeping excluded).

    ``count`` and ``statements`` (the SQL text) grow as statements run; ``reset()`` starts
    over. Attach with ``with counter:`` or ``start()``/``stop()``.
    """

    target: Engine | Connection
    statements: list[str] = field(default_factory=list)
    _thread: int | None = None

    @property
    def count(self) -> int:
        return len(self.statements)

    def _on_execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # SAVEPOINT bookkeeping (e.g. a test session joined with create_savepoint) is not work
        # the code under test asked for.
        if threading.get_ident() == self._thread and not _SAVEPOINT.match(statement):
            self.statements.append(statement)

    def reset(self) -> None:
        self.statements.clear()

    def start(self) -> QueryCounter:
        if self._thread is None:
            self._thread = threading.get_ident()
            event.listen(self.target, "before_cursor_execute", self._on_execute)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            event.remove(self.target, "before_cursor_execute", self._on_execute)
            self._thread = None

    def __enter__(self) -> QueryCounter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def count_queries(target: Countable) -> QueryCounter:
    """A :class:`QueryCounter` on an engine, connection or session (sync or async)::

    with count_queries(session) as q:
        ...
    assert q.count == 2
    """
    return QueryCounter(_sync_target(target))


@dataclass(eq=False)
class LazyLoads:
    """Relationship lazy loads seen in a guarded block, by ``"Class.relationship"``."""

    counts: Counter[str] = field(default_factory=Counter)

    def __call__(self, state: ORMExecuteState) -> None:
        if state.is_relationship_load and state.lazy_loaded_from is not None:
            path = state.loader_strategy_path
            prop = path[-1] if path is not None and len(path) else None
            owner = getattr(getattr(prop, "parent", None), "class_", None)
            key = getattr(prop, "key", None)
            if owner is not None and key is not None:
                self.counts[f"{owner.__name__}.{key}"] += 1


@contextmanager
def nplusone_guard(
    session: Session | AsyncSession,
    *,
    max_statements: int | None = None,
    max_lazy_loads: int = 1,
) -> Iterator[QueryCounter]:
    """Fail with :class:`~sa_patterns.errors.NPlusOneDetected` when the block lazy-loads one
    relationship more than ``max_lazy_loads`` times, or sends more than ``max_statements``.

    Checked when the block ends, so the message can list everything that happened.
    """
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    loads = LazyLoads()
    counter = count_queries(sync)
    event.listen(sync, "do_orm_execute", loads)
    counter.start()
    failed = True
    try:
        yield counter
        failed = False
    finally:
        counter.stop()
        event.remove(sync, "do_orm_execute", loads)
    if failed:
        return
    repeated = [(name, n) for name, n in loads.counts.most_common() if n > max_lazy_loads]
    if repeated:
        name, n = repeated[0]
        raise NPlusOneDetected(
            f"N+1: {name} was lazy-loaded {n} times in this block (allowed {max_lazy_loads}); "
            f"{counter.count} statements in all. Load it up front with "
            f".options(selectinload({name})) (or joinedload), or mark the relationship "
            "lazy='raise' to find every such access."
        )
    if max_statements is not None and counter.count > max_statements:
        listing = "\n".join(f"  {i + 1}. {sql.strip()[:160]}" for i, sql in enumerate(counter.statements[:20]))
        raise NPlusOneDetected(
            f"the block sent {counter.count} statements, more than max_statements="
            f"{max_statements}:\n{listing}"
        )
