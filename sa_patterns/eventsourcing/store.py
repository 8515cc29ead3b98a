"""``EventStore``: append events with optimistic concurrency, read streams, load aggregates.

**Appending.** ``append(aggregate_id, events, expected_version=n)`` writes versions
``n + 1 .. n + k`` with one multi-row ``INSERT`` (per 1,000 events). Nothing is read first: the table's
``UNIQUE (aggregate_id, version)`` makes a second writer at the same ``n`` fail on the index
(it waits for the first writer's commit, then gets SQLSTATE 23505), and the gap-free foreign
key ``(aggregate_id, version - 1) → (aggregate_id, version)`` refuses an ``n`` that is ahead of
the stream (SQLSTATE 23503). Both are mapped to :class:`VersionConflict`, a
:class:`~sa_patterns.errors.ConcurrencyConflict`. Exactly one concurrent writer wins, and the
others learn it from the database, never from a racy read.

After a conflict the transaction is aborted, as after any constraint error: roll back, reload
the aggregate, decide again, append again.

**Loading.** ``load(Account, id)`` = the latest snapshot (if its ``snapshot_version`` matches
the class) + the events after it. ``load(..., snapshots=False)`` replays from version 1; both
paths must give the same state, which the tests check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from sqlalchemy import ColumnElement, Table, and_, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from ..context import current_actor, current_request_metadata, require_tenant
from ..errors import ConcurrencyConflict, ConfigurationError
from .events import EventRegistry, RecordedEvent, _from_json, _hints, _to_json
from .projections import Projection
from .tables import EVENT_COLUMNS, TENANT_COLUMN, constraint_names, has_rls, snapshot_key_name

__all__ = ["Aggregate", "AsyncEventStore", "EventStore", "VersionConflict"]

A = TypeVar("A", bound="Aggregate")


class VersionConflict(ConcurrencyConflict):
    """An append lost: the stream is not at ``expected_version`` any more (or never was)."""

    def __init__(self, message: str, *, aggregate_id: Any, expected_version: int | None) -> None:
        super().__init__(message)
        self.aggregate_id = aggregate_id
        self.expected_version = expected_version


class Aggregate:
    """Base for an event-sourced aggregate: state is the fold of its events.

    Subclasses implement :meth:`apply` (mutate state for one event; never fail, never do I/O)
    and call :meth:`record` from their command methods. Snapshots store the public instance
    attributes as JSON by default (annotate them so Decimal/UUID/datetime come back typed);
    override :meth:`snapshot_state`/:meth:`restore_state` for anything else, and bump
    ``snapshot_version`` whenever the state's shape changes so old snapshots are ignored.
    """

    #: stored with each snapshot; a snapshot of another version is ignored (events replay)
    snapshot_version: ClassVar[int] = 1
    #: key of the snapshot row; default the class name
    aggregate_type: ClassVar[str | None] = None

    def __init__(self, aggregate_id: Any) -> None:
        self.id = aggregate_id
        self.version = 0
        self._pending: list[object] = []

    def apply(self, event: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__}.apply(event) must fold one event")

    def record(self, event: object) -> None:
        """Apply a new event now and queue it for :meth:`EventStore.save`."""
        self.apply(event)
        self._pending.append(event)

    @property
    def pending(self) -> list[object]:
        return list(self._pending)

    def mark_saved(self, version: int) -> None:
        self.version = version
        self._pending.clear()

    @classmethod
    def type_name(cls) -> str:
        return cls.aggregate_type or cls.__name__

    def snapshot_state(self) -> dict[str, Any]:
        state = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        state.pop("id", None)
        state.pop("version", None)
        data: dict[str, Any] = _to_json(state)
        return data

    def restore_state(self, state: Mapping[str, Any]) -> None:
        hints = _hints(type(self))
        for key, value in state.items():
            setattr(self, key, _from_json(value, hints.get(key, Any)))


@dataclasses.dataclass(frozen=True)
class _Config:
    table: Table
    registry: EventRegistry
    snapshots: Table | None
    snapshot_every: int | None
    projections: tuple[Projection, ...]


def _table_of(model: type[Any] | Table, what: str) -> Table:
    table = model if isinstance(model, Table) else getattr(model, "__table__", None)
    if not isinstance(table, Table):
        raise ConfigurationError(f"{what} must be a mapped class (or Table), got {model!r}.")
    return table


def _configure(
    events: type[Any] | Table,
    registry: EventRegistry,
    snapshots: type[Any] | Table | None,
    snapshot_every: int | None,
    projections: Iterable[Projection],
) -> _Config:
    table = _table_of(events, "events")
    missing = {"aggregate_id", "version", "event_type", "data", "transaction_id"} - set(table.c.keys())
    if missing:
        raise ConfigurationError(
            f"table {table.name!r} lacks event columns {sorted(missing)}: declare the event "
            "model with sa_patterns.EventMixin."
        )
    snap = _table_of(snapshots, "snapshots") if snapshots is not None else None
    if snapshot_every is not None and (snapshot_every < 1 or snap is None):
        raise ConfigurationError(
            "snapshot_every needs a positive interval and a snapshots= model (SnapshotMixin)."
        )
    if snap is not None and (TENANT_COLUMN in snap.c) != (TENANT_COLUMN in table.c):
        raise ConfigurationError(
            f"events table {table.name!r} and snapshot table {snap.name!r} must both be "
            "tenant-scoped (TenantMixin) or neither: a snapshot is keyed like its stream."
        )
    if snap is not None and has_rls(table) and not has_rls(snap):
        raise ConfigurationError(
            f"events table {table.name!r} is under row-level security but its snapshot table "
            f"{snap.name!r} is not: a snapshot holds a stream's state, so it needs the same "
            "tenant wall. Give the snapshot model __rls__ = True too."
        )
    return _Config(table, registry, snap, snapshot_every, tuple(projections))


class EventStore:
    """The write and read side of one event table, bound to one session.

    Cheap to create per unit of work::

        store = EventStore(session, BankEvent, registry=events, snapshots=BankSnapshot,
                           snapshot_every=100, projections=[balances])
        store.append("acc-1", [Deposited(100)], expected_version=0)
        account = store.load(Account, "acc-1")

    Everything runs in the session's transaction: the events, the synchronous projections and
    the snapshot commit together or not at all. With a ``tenant_id`` column every stream call
    needs a tenant in scope (``tenant_scope`` / ``session.info``), and streams of different
    tenants never mix.
    """

    def __init__(
        self,
        session: Session,
        events: type[Any] | Table,
        *,
        registry: EventRegistry,
        snapshots: type[Any] | Table | None = None,
        snapshot_every: int | None = None,
        projections: Iterable[Projection] = (),
    ) -> None:
        self.session = session
        self._c = _configure(events, registry, snapshots, snapshot_every, projections)

    @classmethod
    def _from_config(cls, session: Session, config: _Config) -> EventStore:
        store = cls.__new__(cls)
        store.session = session
        store._c = config
        return store

    # -- helpers ---------------------------------------------------------------------------
    def _key(self, aggregate_id: Any, table: Table | None = None) -> dict[str, Any]:
        table = self._c.table if table is None else table
        key: dict[str, Any] = {"aggregate_id": aggregate_id}
        if TENANT_COLUMN in table.c:
            key[TENANT_COLUMN] = require_tenant(self.session, what="an event stream")
        return key

    @staticmethod
    def _where(table: Table, key: Mapping[str, Any]) -> ColumnElement[bool]:
        return and_(*(table.c[k] == v for k, v in key.items()))

    def _metadata(self, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        meta: dict[str, Any] = {}
        actor = current_actor(self.session)
        if actor is not None:
            meta["actor_id"] = actor
        request = current_request_metadata(self.session)
        if request:
            meta["request"] = dict(request)
        if extra:
            meta.update(_to_json(dict(extra)))
        return meta

    def _conflict(
        self, exc: IntegrityError, aggregate_id: Any, expected: int | None
    ) -> VersionConflict | None:
        orig = exc.orig
        sqlstate = getattr(orig, "sqlstate", None)
        diag = getattr(orig, "diag", None)
        constraint = getattr(diag, "constraint_name", None)
        names = constraint_names(self._c.table)
        if sqlstate == "23505" and constraint == names["unique"]:
            why = "another writer appended to it first"
        elif sqlstate == "23503" and constraint == names["gapless"]:
            why = "the stream is not that long (appending would leave a gap)"
        else:
            return None
        return VersionConflict(
            f"append to stream {aggregate_id!r} at expected_version={expected} refused: {why}. "
            "Roll back, reload the aggregate and retry the command.",
            aggregate_id=aggregate_id,
            expected_version=expected,
        )

    # -- write side ------------------------------------------------------------------------
    def append(
        self,
        aggregate_id: Any,
        events: Sequence[object] | object,
        *,
        expected_version: int | None,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[RecordedEvent[Any]]:
        """Append ``events`` atomically after ``expected_version`` (0 = a new stream).

        ``expected_version=None`` appends at the current end (one ``max(version)`` read
        first); a concurrent writer can still make it fail with :class:`VersionConflict`, and
        the constraints, not that read, keep the stream correct.
        Synchronous projections run before this returns, in the same transaction.
        """
        batch = list(events) if isinstance(events, (list, tuple)) else [events]
        if not batch:
            return []
        if expected_version is not None and (
            isinstance(expected_version, bool)
            or not isinstance(expected_version, int)
            or expected_version < 0
        ):
            raise ConfigurationError(
                f"expected_version must be an int >= 0 (0 = new stream) or None, got "
                f"{expected_version!r}."
            )
        table = self._c.table
        key = self._key(aggregate_id)
        start = expected_version if expected_version is not None else self.version(aggregate_id)
        meta = self._metadata(metadata)
        rows = []
        for offset, event in enumerate(batch, start=1):
            name, schema_version, data = self._c.registry.serialise(event)
            rows.append(
                {
                    **key,
                    "version": start + offset,
                    "event_type": name,
                    "schema_version": schema_version,
                    "data": data,
                    "metadata": meta,
                }
            )
        # One cached statement, executed "insertmanyvalues"-style: SQLAlchemy sends the rows as
        # one multi-row INSERT ... RETURNING (per 1,000 rows) instead of compiling a new
        # VALUES list for every call. Versions come back in RETURNING, so order is irrelevant.
        stmt = insert(table).returning(
            table.c.id, table.c.version, table.c.recorded_at, table.c.transaction_id
        )
        try:
            returned = self.session.execute(stmt, rows).all()
        except IntegrityError as exc:
            conflict = self._conflict(exc, aggregate_id, expected_version)
            if conflict is None:
                raise
            raise conflict from exc
        by_version = {r.version: r for r in returned}
        recorded = []
        for row, event in zip(rows, batch, strict=True):
            got = by_version[row["version"]]
            recorded.append(
                RecordedEvent(
                    id=got.id,
                    aggregate_id=aggregate_id,
                    version=row["version"],
                    event_type=row["event_type"],
                    schema_version=row["schema_version"],
                    data=event,
                    metadata=meta,
                    recorded_at=got.recorded_at,
                    transaction_id=got.transaction_id,
                    tenant_id=key.get(TENANT_COLUMN),
                )
            )
        for projection in self._c.projections:
            for event_record in recorded:
                projection.apply(self.session, event_record)
        return recorded

    def save(self, aggregate: Aggregate, *, metadata: Mapping[str, Any] | None = None) -> list[
        RecordedEvent[Any]
    ]:
        """Append the aggregate's pending events, expecting the version it was loaded at.

        Takes a snapshot when the new version crosses a multiple of ``snapshot_every``.
        """
        pending = aggregate.pending
        if not pending:
            return []
        loaded_at = aggregate.version
        recorded = self.append(aggregate.id, pending, expected_version=loaded_at, metadata=metadata)
        aggregate.mark_saved(recorded[-1].version)
        every = self._c.snapshot_every
        if every and aggregate.version // every > loaded_at // every:
            self.snapshot(aggregate)
        return recorded

    def snapshot(self, aggregate: Aggregate) -> None:
        """Store the aggregate's state at its version (kept only if newer than the stored one)."""
        snap = self._c.snapshots
        if snap is None:
            raise ConfigurationError("snapshot() needs EventStore(..., snapshots=SnapshotModel).")
        if aggregate.pending:
            raise ConfigurationError(
                "snapshot() of an aggregate with unsaved events: save() it first, a snapshot "
                "must describe a stored version."
            )
        key = self._key(aggregate.id, snap)
        stmt = pg_insert(snap).values(
            **key,
            aggregate_type=aggregate.type_name(),
            version=aggregate.version,
            schema_version=type(aggregate).snapshot_version,
            state=aggregate.snapshot_state(),
        )
        stmt = stmt.on_conflict_do_update(
            constraint=snapshot_key_name(snap),
            set_={
                "version": stmt.excluded.version,
                "schema_version": stmt.excluded.schema_version,
                "state": stmt.excluded.state,
                "taken_at": func.now(),
            },
            where=snap.c.version <= stmt.excluded.version,
        )
        self.session.execute(stmt)

    # -- read side -------------------------------------------------------------------------
    def version(self, aggregate_id: Any) -> int:
        """The stream's current version (0 when it has no events)."""
        table = self._c.table
        stmt = select(func.coalesce(func.max(table.c.version), 0)).where(
            self._where(table, self._key(aggregate_id))
        )
        return int(self.session.execute(stmt).scalar_one())

    def read(
        self, aggregate_id: Any, *, after_version: int = 0, to_version: int | None = None
    ) -> list[RecordedEvent[Any]]:
        """The stream's events after ``after_version`` (up to ``to_version``), in order."""
        table = self._c.table
        cond = [self._where(table, self._key(aggregate_id)), table.c.version > after_version]
        if to_version is not None:
            cond.append(table.c.version <= to_version)
        return [
            decode(self._c.registry, table, row)
            for row in self.session.execute(
                select(*_event_columns(table)).where(*cond).order_by(table.c.version)
            )
        ]

    def load(
        self, aggregate_cls: type[A], aggregate_id: Any, *, snapshots: bool = True
    ) -> A:
        """The aggregate at its latest version (version 0 and initial state if no events)."""
        aggregate = aggregate_cls(aggregate_id)
        after = 0
        snap = self._c.snapshots
        if snapshots and snap is not None:
            key = self._key(aggregate_id, snap)
            row = self.session.execute(
                select(snap.c.version, snap.c.schema_version, snap.c.state).where(
                    self._where(snap, key), snap.c.aggregate_type == aggregate_cls.type_name()
                )
            ).first()
            if row is not None and row.schema_version == aggregate_cls.snapshot_version:
                aggregate.restore_state(row.state)
                aggregate.version = after = row.version
        # Straight from rows to apply(): no RecordedEvent per event on the hot replay path.
        table, deserialise = self._c.table, self._c.registry.deserialise
        rows = self.session.execute(
            select(table.c.version, table.c.event_type, table.c.schema_version, table.c.data)
            .where(self._where(table, self._key(aggregate_id)), table.c.version > after)
            .order_by(table.c.version)
        )
        for version, event_type, schema_version, data in rows:
            aggregate.apply(deserialise(event_type, schema_version, data))
            aggregate.version = version
        return aggregate


def _event_columns(table: Table) -> list[Any]:
    """The columns a :class:`RecordedEvent` is decoded from (the runner's reader functions
    return the same, in this order)."""
    names = [*EVENT_COLUMNS, TENANT_COLUMN] if TENANT_COLUMN in table.c else list(EVENT_COLUMNS)
    return [table.c[name] for name in names]


def decode(registry: EventRegistry, table: Table, row: Any) -> RecordedEvent[Any]:
    """A :class:`RecordedEvent` from a row of :func:`_event_columns`."""
    mapping = row._mapping
    return RecordedEvent(
        id=mapping["id"],
        aggregate_id=mapping["aggregate_id"],
        version=mapping["version"],
        event_type=mapping["event_type"],
        schema_version=mapping["schema_version"],
        data=registry.deserialise(mapping["event_type"], mapping["schema_version"], mapping["data"]),
        metadata=mapping["metadata"] or {},
        recorded_at=mapping["recorded_at"],
        transaction_id=mapping["transaction_id"],
        tenant_id=mapping.get(TENANT_COLUMN),
    )


class AsyncEventStore:
    """:class:`EventStore` for an ``AsyncSession``: same methods, awaited.

    Each call runs the sync implementation through ``AsyncSession.run_sync``, so behaviour
    (conflict mapping, projections, snapshots) is identical and handlers stay plain functions.
    """

    def __init__(
        self,
        session: AsyncSession,
        events: type[Any] | Table,
        *,
        registry: EventRegistry,
        snapshots: type[Any] | Table | None = None,
        snapshot_every: int | None = None,
        projections: Iterable[Projection] = (),
    ) -> None:
        self.session = session
        self._c = _configure(events, registry, snapshots, snapshot_every, projections)

    def _sync(self, session: Session) -> EventStore:
        return EventStore._from_config(session, self._c)

    async def append(
        self,
        aggregate_id: Any,
        events: Sequence[object] | object,
        *,
        expected_version: int | None,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[RecordedEvent[Any]]:
        return await self.session.run_sync(
            lambda s: self._sync(s).append(
                aggregate_id, events, expected_version=expected_version, metadata=metadata
            )
        )

    async def save(
        self, aggregate: Aggregate, *, metadata: Mapping[str, Any] | None = None
    ) -> list[RecordedEvent[Any]]:
        return await self.session.run_sync(lambda s: self._sync(s).save(aggregate, metadata=metadata))

    async def snapshot(self, aggregate: Aggregate) -> None:
        await self.session.run_sync(lambda s: self._sync(s).snapshot(aggregate))

    async def version(self, aggregate_id: Any) -> int:
        return await self.session.run_sync(lambda s: self._sync(s).version(aggregate_id))

    async def read(
        self, aggregate_id: Any, *, after_version: int = 0, to_version: int | None = None
    ) -> list[RecordedEvent[Any]]:
        return await self.session.run_sync(
            lambda s: self._sync(s).read(
                aggregate_id, after_version=after_version, to_version=to_version
            )
        )

    async def load(
        self, aggregate_cls: type[A], aggregate_id: Any, *, snapshots: bool = True
    ) -> A:
        return await self.session.run_sync(
            lambda s: self._sync(s).load(aggregate_cls, aggregate_id, snapshots=snapshots)
        )
