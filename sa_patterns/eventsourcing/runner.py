"""Catch-up runner for asynchronous projections: checkpointed, crash-safe, woken by NOTIFY.

**Which order, and why it cannot skip an event.** Appends run concurrently, so neither the
identity ``id`` nor ``recorded_at`` is a safe cursor: a transaction may take id 7, commit after
the transaction that took id 8, and a reader that already moved past 8 would never see 7.
Each event row therefore stores its writer's ``pg_current_xact_id()`` (``transaction_id``),
and the runner only reads events whose writing transaction is older than the oldest transaction
still in progress in this database, as seen by its own snapshot (``pg_current_snapshot()``,
see :data:`.tables.HORIZON_SQL`): every transaction below that horizon that could write the table has
finished, so no row below it can appear later. Within that settled prefix the order
``(transaction_id, id)`` is final, and the checkpoint is a position in it. The cost is latency,
not correctness: a long-open transaction in the same database holds the horizon back until
it ends. The alternative (one advisory lock serialising every append until commit) would make
positions contiguous but would serialise all writers; see ``docs/event-sourcing.md``.

**Why a crash neither skips nor double-applies.** One batch is one transaction: read events
after the checkpoint, run the handlers, move the checkpoint. A crash anywhere before the commit
rolls back both the read-model writes and the checkpoint move; the restarted runner repeats the
batch from the old checkpoint. A transaction-scoped advisory lock per projection keeps two
runners from working on the same projection at once.

**Waking up.** The event table's trigger ``NOTIFY``s its channel when an appending transaction
commits. ``run_forever`` ``LISTEN``s on a dedicated connection (psycopg 3 ``notifies()``) and
touches the database only when notified, when events were held back by the horizon (short
back-off), or after ``idle_timeout`` as a safety net.

**Under row-level security.** A tenant log with ``__rls__`` shows a role only the tenant in
``app.tenant_id``, and the runner works for no tenant. It reads through the log's reader
functions instead (``SECURITY DEFINER``, see :mod:`.tables`): the settled events after the
checkpoint, the last position and the log's tenants, across tenants, for the role granted
``EXECUTE``. It applies each event with that event's tenant in ``app.tenant_id``, so a read
model under row-level security gets exactly that tenant's rows (its ``WITH CHECK`` holds). A
runner whose role may not execute them raises :class:`~sa_patterns.errors.MissingGrant`; one
reading directly a log the database puts under row-level security for its role raises
:class:`~sa_patterns.errors.ConfigurationError`: it never silently applies nothing.

**Rebuild is one transaction.** Before anything is replayed, the resetter runs with no tenant
(an unscoped read model, or every row for a role that bypasses row-level security), then under
each tenant of the log in turn: under row-level security a ``DELETE`` reaches one tenant's rows
at a time, every row of a read model comes from an event of its tenant, and the log is
append-only, so this reaches them all. Reset, replay and checkpoint commit together: readers keep
the old read model until the new one is complete, and a failure half way leaves the old one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    Executable,
    Table,
    column,
    func,
    literal_column,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from ..context import TENANT_SETTING
from ..errors import ConfigurationError, MissingGrant
from ..schema import qualified, quote
from .events import EventRegistry, RecordedEvent
from .projections import Projection
from .store import _event_columns, _table_of, decode
from .tables import HORIZON_SQL, TENANT_COLUMN, event_channel, log_readers

__all__ = ["AsyncProjectionRunner", "BatchResult", "ProjectionRunner"]

_HORIZON: ColumnElement[int] = literal_column(HORIZON_SQL, BigInteger)
_LOCK_NAMESPACE = "sa_patterns.projection:"
#: Asked when a direct read of the log came back empty: is that row-level security at work?
_RLS_ACTIVE = text("SELECT row_security_active(CAST(:log AS regclass)), current_user")
_SET_TENANT = text("SELECT set_config(:n, :v, true)")
_INSUFFICIENT_PRIVILEGE, _UNDEFINED_FUNCTION = "42501", "42883"


@dataclass(frozen=True)
class BatchResult:
    """What one batch did: events read, events handled, and whether more may be waiting."""

    read: int
    applied: int
    full: bool


@dataclass(frozen=True)
class _Rebuild:
    """A rebuild in progress, in one transaction: the position it must reach."""

    target: tuple[int, int] | None


class _Core:
    """The synchronous, connection-level logic shared by both runners."""

    def __init__(
        self,
        events: type[Any] | Table,
        checkpoints: type[Any] | Table,
        registry: EventRegistry,
        projections: Sequence[Projection],
        batch_size: int,
    ) -> None:
        self.table = _table_of(events, "events")
        self.checkpoints = _table_of(checkpoints, "checkpoints")
        self.registry = registry
        if not projections:
            raise ConfigurationError("a ProjectionRunner needs at least one Projection.")
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"projection names must be unique, got {names}.")
        if batch_size < 1:
            raise ConfigurationError("batch_size must be >= 1.")
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size
        self.channel = (
            event_channel(events) if not isinstance(events, Table) else self.table.name
        )
        self.tenant_aware = TENANT_COLUMN in self.table.c
        self._handled_names: dict[str, set[str]] = {}
        # Under row-level security: the reader functions; else the log is read directly, and
        # checked once (and after every empty read) not to be under row-level security.
        self.readers = log_readers(self.table)
        self._direct_checked = False
        if self.readers is not None:
            read, end, tenants = (qualified(self.table.schema, name) for name in self.readers)
            columns = _event_columns(self.table)
            # quoted identifiers only; every value is a bound parameter
            self._read_sql = text(
                f"SELECT {', '.join(quote(c.name) for c in columns)} "  # noqa: S608
                f"FROM {read}(:after_transaction, :after_id, :max_rows)"
            ).columns(*(column(c.name, c.type) for c in columns))
            self._end_sql = text(f"SELECT transaction_id, id FROM {end}()")  # noqa: S608
            self._tenants_sql = text(f"SELECT tenant_id FROM {tenants}()")  # noqa: S608
            self._grant = (
                f"GRANT EXECUTE ON FUNCTION {read}(bigint, bigint, integer), {end}(), "
                f"{tenants}() TO <role>"
            )

    def projection(self, which: Projection | str) -> Projection:
        name = which if isinstance(which, str) else which.name
        try:
            return self.projections[name]
        except KeyError:
            raise ConfigurationError(
                f"projection {name!r} is not one of this runner's: {sorted(self.projections)}."
            ) from None

    def _handled(self, projection: Projection) -> set[str]:
        names = self._handled_names.get(projection.name)
        if names is None:
            names = {self.registry.name_of(t) for t in projection.event_types}
            self._handled_names[projection.name] = names
        return names

    def _lock(self, conn: Connection, projection: Projection) -> None:
        # Transaction-scoped, and assigns no transaction id (so it does not move the horizon).
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": _LOCK_NAMESPACE + projection.name},
        )

    # -- reading the log -------------------------------------------------------------------
    def _call(
        self, conn: Connection, statement: Executable, params: Mapping[str, Any]
    ) -> Sequence[Any]:
        """Run a reader function; a role that may not, or a function not there, is told how
        to fix it (never an empty read)."""
        try:
            return conn.execute(statement, params).all()
        except (DBAPIError, MissingGrant) as exc:
            # (install()'s wall turns a 42501 on an engine it has seen into MissingGrant already)
            sqlstate = (
                _INSUFFICIENT_PRIVILEGE
                if isinstance(exc, MissingGrant)
                else getattr(exc.orig, "sqlstate", None)
            )
            log = qualified(self.table.schema, self.table.name)
            if sqlstate == _INSUFFICIENT_PRIVILEGE:
                role = conn.engine.url.username or "<the runner's role>"
                raise MissingGrant(
                    f"the event log {log} is under row-level security and role {role} may not "
                    "execute its reader functions, the one path the runner reads every "
                    f"tenant's events through. {self._grant.replace('<role>', quote(role))}; "
                    "autogenerate writes that grant for the event model's __runner_role__ "
                    "(default: the configured app role)."
                ) from exc
            if sqlstate == _UNDEFINED_FUNCTION:
                raise ConfigurationError(
                    f"the reader functions of the event log {log} do not exist in the database "
                    "(the model has __rls__, so the runner reads through them): apply the "
                    "migration autogenerate writes for them (alembic upgrade head), or "
                    "sa_patterns.create_all() in scripts and tests."
                ) from exc
            raise

    def _refuse_hidden_log(self, conn: Connection) -> None:
        """A direct read must see every tenant: refuse a log under row-level security."""
        log = qualified(self.table.schema, self.table.name)
        active, role = conn.execute(_RLS_ACTIVE, {"log": log}).one()
        if active:
            raise ConfigurationError(
                f"the event log {log} is under row-level security for role {role!r}, and this "
                "runner reads it directly: it would see one tenant's events or none, and apply "
                "nothing. Declare the event model with TenantMixin and __rls__ = True, so that "
                "autogenerate writes its reader functions (SECURITY DEFINER, the deliberate path "
                "across tenants), and grant this role EXECUTE on them (__runner_role__); or run "
                "the runner as a role that bypasses row-level security."
            )
        self._direct_checked = True

    def _read(self, conn: Connection, position: tuple[int, int]) -> Sequence[Any]:
        """Settled events after ``position``, every tenant's, in ``(transaction_id, id)`` order."""
        if self.readers is not None:
            return self._call(
                conn,
                self._read_sql,
                {
                    "after_transaction": position[0],
                    "after_id": position[1],
                    "max_rows": self.batch_size,
                },
            )
        t = self.table
        rows = conn.execute(
            select(*_event_columns(t))
            .where(
                tuple_(t.c.transaction_id, t.c.id) > tuple_(*position),  # type: ignore[arg-type, unused-ignore]  # 2.0 stubs: expressions only
                t.c.transaction_id < _HORIZON,
            )
            .order_by(t.c.transaction_id, t.c.id)
            .limit(self.batch_size)
        ).all()
        if not rows or not self._direct_checked:
            self._refuse_hidden_log(conn)
        return rows

    def latest(self, conn: Connection) -> tuple[int, int] | None:
        """The last event committed now (whether or not it is below the horizon yet)."""
        if self.readers is not None:
            rows = self._call(conn, self._end_sql, {})
            row: Any = rows[0] if rows else None
        else:
            t = self.table
            row = conn.execute(
                select(t.c.transaction_id, t.c.id)
                .order_by(t.c.transaction_id.desc(), t.c.id.desc())
                .limit(1)
            ).first()
        return (row.transaction_id, row.id) if row is not None else None

    def tenants(self, conn: Connection) -> list[object]:
        """Every tenant with events in the log."""
        if self.readers is not None:
            return [row.tenant_id for row in self._call(conn, self._tenants_sql, {})]
        column = self.table.c[TENANT_COLUMN]
        return list(conn.execute(select(column).distinct()).scalars())

    def held_back(self, conn: Connection, projection: Projection) -> bool:
        """Committed events exist past the checkpoint but are not below the horizon yet."""
        latest = self.latest(conn)
        return latest is not None and latest > self.position(conn, projection)

    # -- checkpoints -------------------------------------------------------------------------
    def position(self, conn: Connection, projection: Projection) -> tuple[int, int]:
        cp = self.checkpoints
        row = conn.execute(
            select(cp.c.transaction_id, cp.c.event_id).where(cp.c.name == projection.name)
        ).first()
        return (row.transaction_id, row.event_id) if row is not None else (0, 0)

    def _save_position(
        self, conn: Connection, projection: Projection, position: tuple[int, int], applied: int,
        *, reset: bool = False,
    ) -> None:
        cp = self.checkpoints
        stmt = pg_insert(cp).values(
            name=projection.name,
            transaction_id=position[0],
            event_id=position[1],
            events_applied=applied,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[cp.c.name],
            set_={
                "transaction_id": stmt.excluded.transaction_id,
                "event_id": stmt.excluded.event_id,
                "events_applied": stmt.excluded.events_applied
                if reset
                else cp.c.events_applied + stmt.excluded.events_applied,
                "updated_at": func.now(),
            },
        )
        conn.execute(stmt)

    # -- applying ----------------------------------------------------------------------------
    def batch(self, conn: Connection, projection: Projection) -> BatchResult:
        """One batch in the caller's transaction on ``conn`` (the caller commits)."""
        self._lock(conn, projection)
        rows = self._read(conn, self.position(conn, projection))
        if not rows:
            return BatchResult(0, 0, False)
        handled = self._handled(projection)
        applied = 0
        tenant: object = None
        with Session(bind=conn) as session:
            for row in rows:
                if row.event_type not in handled:
                    continue
                if self.tenant_aware and row.tenant_id != tenant:
                    # Handlers' pending writes go out under the tenant they were made for (said
                    # here, not left to autoflush); then the event's tenant is in force: read
                    # models under row-level security see it (USING) and accept its rows only
                    # (WITH CHECK).
                    session.flush()
                    tenant = row.tenant_id
                    session.execute(_SET_TENANT, {"n": TENANT_SETTING, "v": str(tenant)})
                event: RecordedEvent[Any] = decode(self.registry, self.table, row)
                projection.apply(session, event)
                applied += 1
            session.flush()
        last = rows[-1]
        self._save_position(conn, projection, (last.transaction_id, last.id), applied)
        return BatchResult(len(rows), applied, len(rows) == self.batch_size)

    # -- rebuilding --------------------------------------------------------------------------
    def start_rebuild(self, conn: Connection, projection: Projection) -> _Rebuild:
        """Lock the projection, note the position to reach, empty the read model (with no
        tenant, then under each tenant of the log) and reset the checkpoint; batches on the
        same transaction do the replay."""
        reset = projection.reset
        if reset is None:
            raise ConfigurationError(
                f"rebuilding {projection!r} needs a way to empty its read model: decorate a "
                "function with @projection.resetter (or pass Projection(..., reset=fn))."
            )
        self._lock(conn, projection)
        target = self.latest(conn)
        tenants = self.tenants(conn) if self.tenant_aware else []
        with Session(bind=conn) as session:
            for tenant in [None, *tenants]:
                if self.tenant_aware:
                    value = "" if tenant is None else str(tenant)
                    session.execute(_SET_TENANT, {"n": TENANT_SETTING, "v": value})
                reset(session)
                session.flush()
        self._save_position(conn, projection, (0, 0), 0, reset=True)
        return _Rebuild(target)

    def reached(self, conn: Connection, projection: Projection, rebuild: _Rebuild) -> bool:
        return rebuild.target is None or self.position(conn, projection) >= rebuild.target


class ProjectionRunner:
    """Applies events to asynchronous projections after they commit.

    ::

        runner = ProjectionRunner(engine, BankEvent, checkpoints=Checkpoint,
                                  registry=events, projections=[balances])
        runner.run_once()        # apply every settled event, then return
        runner.catch_up()        # ... at least everything committed before the call
        runner.rebuild(balances) # empty the read model and replay from the first event
        runner.run_forever(stop=threading.Event())   # LISTEN/NOTIFY driven loop

    Handlers get a ``Session`` bound to the batch's connection, not an installed one: the
    runner works across tenants and sets ``app.tenant_id`` to each event's tenant so that
    read models under row-level security accept the writes. Over a log under row-level
    security it reads through the log's reader functions; its role needs ``EXECUTE`` on them
    (``__runner_role__``, default the app role, granted by the generated migration) and DML on
    the read models and the checkpoint table.
    """

    def __init__(
        self,
        engine: Engine,
        events: type[Any] | Table,
        *,
        checkpoints: type[Any] | Table,
        registry: EventRegistry,
        projections: Sequence[Projection],
        batch_size: int = 500,
    ) -> None:
        self.engine = engine
        self._core = _Core(events, checkpoints, registry, projections, batch_size)
        #: counters for monitoring: batches run, events applied, notifications received
        self.stats = {"batches": 0, "applied": 0, "wakeups": 0}

    def _selected(self, which: Iterable[Projection | str] | None) -> list[Projection]:
        if which is None:
            return list(self._core.projections.values())
        return [self._core.projection(p) for p in which]

    def run_batch(self, projection: Projection | str) -> BatchResult:
        """One batch of one projection in its own transaction."""
        proj = self._core.projection(projection)
        with self.engine.begin() as conn:
            result = self._core.batch(conn, proj)
        self.stats["batches"] += 1
        self.stats["applied"] += result.applied
        return result

    def run_once(self, projections: Iterable[Projection | str] | None = None) -> int:
        """Apply every settled event to each projection; returns the events applied."""
        applied = 0
        for projection in self._selected(projections):
            while True:
                result = self.run_batch(projection)
                applied += result.applied
                if not result.full:
                    break
        return applied

    def position(self, projection: Projection | str) -> tuple[int, int]:
        """The checkpoint ``(transaction_id, event_id)`` of a projection."""
        with self.engine.connect() as conn:
            return self._core.position(conn, self._core.projection(projection))

    def catch_up(self, *, timeout: float = 60.0) -> int:
        """Apply at least every event committed before the call, waiting (with back-off) for
        older in-flight transactions to finish; ``TimeoutError`` after ``timeout`` seconds."""
        return self._catch_up(list(self._core.projections.values()), timeout)

    def _catch_up(self, projections: list[Projection], timeout: float) -> int:
        with self.engine.connect() as conn:
            target = self._core.latest(conn)
        applied = self.run_once(projections)
        if target is None:
            return applied
        deadline = time.monotonic() + timeout
        pause = 0.01
        while any(self.position(p) < target for p in projections):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"projections did not reach event {target} within {timeout}s: a long "
                    "transaction is holding the settled horizon back (see pg_stat_activity)."
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
            applied += self.run_once(projections)
        return applied

    def rebuild(self, projection: Projection | str, *, timeout: float = 60.0) -> int:
        """Empty the read model, reset its checkpoint, and replay the whole log into it: every
        event committed before the call, like :meth:`catch_up` (an older transaction still in
        flight is waited for, not skipped). Returns the events applied.

        One transaction (READ COMMITTED, so the settled horizon moves while it waits): readers
        keep the old read model until the new one commits, a failure leaves the old one, and
        the projection's other runners wait on its lock. Under row-level security the resetter
        runs once with no tenant and then under each tenant of the log (see the module).
        """
        proj = self._core.projection(projection)
        deadline = time.monotonic() + timeout
        applied = batches = 0
        pause = 0.01
        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="READ COMMITTED")
            with conn.begin():
                state = self._core.start_rebuild(conn, proj)
                while True:
                    result = self._core.batch(conn, proj)
                    applied += result.applied
                    batches += 1
                    if result.full:
                        continue
                    if self._core.reached(conn, proj, state):
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"rebuild of {proj!r} did not reach event {state.target} within "
                            f"{timeout}s: a long transaction is holding the settled horizon back "
                            "(see pg_stat_activity); the old read model is kept."
                        )
                    time.sleep(pause)
                    pause = min(pause * 2, 0.5)
        self.stats["batches"] += batches
        self.stats["applied"] += applied
        return applied

    def _held_back(self) -> bool:
        with self.engine.connect() as conn:
            return any(self._core.held_back(conn, p) for p in self._core.projections.values())

    def run_forever(
        self,
        *,
        stop: threading.Event | None = None,
        idle_timeout: float = 30.0,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Loop until ``stop`` is set: catch up, then sleep until a NOTIFY arrives.

        The database is queried only after a notification, after ``idle_timeout`` seconds of
        silence (a safety net), or with a short back-off while committed events wait behind
        the horizon. ``on_error`` sees a failed batch (then the loop continues after a pause);
        without it the error propagates.
        """
        stop = stop or threading.Event()
        raw = self.engine.raw_connection()
        listener: Any = raw.driver_connection
        raw.detach()  # LISTEN state must never go back to the pool
        try:
            listener.autocommit = True
            listener.execute(f"LISTEN {quote(self._core.channel)}")
            pause = 0.0
            while not stop.is_set():
                try:
                    self.run_once()
                    pause = min(max(pause * 2, 0.01), 1.0) if self._held_back() else 0.0
                except Exception as exc:
                    if on_error is None:
                        raise
                    on_error(exc)
                    pause = 1.0
                wait = pause or idle_timeout
                deadline = time.monotonic() + wait
                while not stop.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    got = list(listener.notifies(timeout=min(remaining, 0.25), stop_after=1))
                    if got:
                        self.stats["wakeups"] += 1
                        break
        finally:
            raw.close()


class AsyncProjectionRunner:
    """:class:`ProjectionRunner` for an ``AsyncEngine``; handlers stay sync (``run_sync``)."""

    def __init__(
        self,
        engine: AsyncEngine,
        events: type[Any] | Table,
        *,
        checkpoints: type[Any] | Table,
        registry: EventRegistry,
        projections: Sequence[Projection],
        batch_size: int = 500,
    ) -> None:
        self.engine = engine
        self._core = _Core(events, checkpoints, registry, projections, batch_size)
        self.stats = {"batches": 0, "applied": 0, "wakeups": 0}

    async def run_batch(self, projection: Projection | str) -> BatchResult:
        proj = self._core.projection(projection)
        async with self.engine.begin() as conn:
            result = await conn.run_sync(self._core.batch, proj)
        self.stats["batches"] += 1
        self.stats["applied"] += result.applied
        return result

    async def run_once(self, projections: Iterable[Projection | str] | None = None) -> int:
        selected = (
            list(self._core.projections.values())
            if projections is None
            else [self._core.projection(p) for p in projections]
        )
        applied = 0
        for projection in selected:
            while True:
                result = await self.run_batch(projection)
                applied += result.applied
                if not result.full:
                    break
        return applied

    async def position(self, projection: Projection | str) -> tuple[int, int]:
        proj = self._core.projection(projection)
        async with self.engine.connect() as conn:
            return await conn.run_sync(self._core.position, proj)

    async def catch_up(self, *, timeout: float = 60.0) -> int:
        return await self._catch_up(list(self._core.projections.values()), timeout)

    async def _catch_up(self, projections: list[Projection], timeout: float) -> int:
        async with self.engine.connect() as conn:
            target = await conn.run_sync(self._core.latest)
        applied = await self.run_once(projections)
        if target is None:
            return applied
        deadline = time.monotonic() + timeout
        pause = 0.01
        while True:
            positions = [await self.position(p) for p in projections]
            if all(p >= target for p in positions):
                return applied
            if time.monotonic() > deadline:
                raise TimeoutError(f"projections did not reach event {target} within {timeout}s.")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)
            applied += await self.run_once(projections)

    async def rebuild(self, projection: Projection | str, *, timeout: float = 60.0) -> int:
        """:meth:`ProjectionRunner.rebuild`: one transaction, waiting without blocking the loop."""
        proj = self._core.projection(projection)
        deadline = time.monotonic() + timeout
        applied = batches = 0
        pause = 0.01
        async with self.engine.connect() as conn:
            await conn.execution_options(isolation_level="READ COMMITTED")
            async with conn.begin():
                state = await conn.run_sync(self._core.start_rebuild, proj)
                while True:
                    result = await conn.run_sync(self._core.batch, proj)
                    applied += result.applied
                    batches += 1
                    if result.full:
                        continue
                    if await conn.run_sync(self._core.reached, proj, state):
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"rebuild of {proj!r} did not reach event {state.target} within "
                            f"{timeout}s; the old read model is kept."
                        )
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 0.5)
        self.stats["batches"] += batches
        self.stats["applied"] += applied
        return applied

    async def _held_back(self) -> bool:
        async with self.engine.connect() as conn:
            for p in self._core.projections.values():
                if await conn.run_sync(self._core.held_back, p):
                    return True
        return False

    async def run_forever(
        self,
        *,
        stop: asyncio.Event | None = None,
        idle_timeout: float = 30.0,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """The asyncio twin of :meth:`ProjectionRunner.run_forever` (psycopg ``AsyncConnection``)."""
        stop = stop or asyncio.Event()
        raw = await self.engine.raw_connection()
        listener: Any = raw.driver_connection
        raw.detach()  # LISTEN state must never go back to the pool
        try:
            await listener.set_autocommit(True)
            await listener.execute(f"LISTEN {quote(self._core.channel)}")
            pause = 0.0
            while not stop.is_set():
                try:
                    await self.run_once()
                    pause = min(max(pause * 2, 0.01), 1.0) if await self._held_back() else 0.0
                except Exception as exc:
                    if on_error is None:
                        raise
                    on_error(exc)
                    pause = 1.0
                wait = pause or idle_timeout
                deadline = time.monotonic() + wait
                while not stop.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    got = [
                        n
                        async for n in listener.notifies(
                            timeout=min(remaining, 0.25), stop_after=1
                        )
                    ]
                    if got:
                        self.stats["wakeups"] += 1
                        break
        finally:
            # close the driver connection here, in the event loop; the detached pool wrapper
            # holds nothing else
            await listener.close()
