"""How one cell of the isolation matrix runs, and the one oracle that judges every cell.

A *shape* is written once, as a coroutine over a :class:`Runner`; the same code runs on a sync
``Session`` (driven without an event loop, see :func:`drive`) and on an ``AsyncSession``.

The oracle, for every cell:

* **No tenant in scope** (``scope="none"``) on a tenant model kind: the shape must raise
  ``TenantRequired`` and change nothing.
* **Reads**: every ORM object reached (returned, or loaded into a returned object's
  relationships) and every returned row belongs to the tenant in scope and is live, by its row
  as raw SQL sees it and by its loaded ``tenant_id``/``deleted_at``; every returned string
  carries the current tenant's tag (see :mod:`.models`); and the result equals what the *same
  shape* returns on a plain, uninstalled session over a **universe**: a schema of views that
  show the current tenant's live rows only. So counts, aggregates, joins and loaded collections
  are exactly "the database as if other tenants and deleted rows did not exist".
* **Writes**: every ``iso_`` table is snapshot with raw SQL before and after (same
  transaction); every inserted row belongs to the current tenant and is live, every changed
  row was the current tenant's live row and stays the tenant's, every deleted row was the
  tenant's (soft-deletable rows only by a shape that asks for a hard delete), no written value
  carries another tenant's tag or a dead row's, and something was written.
* Either kind may instead **refuse**: raise an ``SAPatternsError`` and change nothing.

A kind that is another kind's variant (``Kind.like``: the same models in another declarative
style) is judged as that kind: the refusals a shape declares for it are that kind's.

Objects a shape's ``prepare`` step loaded (under the tenant, or under the foreign tenant for
"foreign" shapes) are held by the caller already: the oracle does not count them as leaked by
the run, but their state is part of the result compared with the universe (so a refresh that
reloads a foreign row's values differs from the universe, where the row is gone).
"""

from __future__ import annotations

import json
import re
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from sqlalchemy import Connection, Row, Table, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm import exc as orm_exc
from sqlalchemy.orm.base import instance_state
from sqlalchemy.orm.exc import UnmappedInstanceError

import sa_patterns
from sa_patterns.errors import SAPatternsError, TenantRequired
from sa_patterns.testing.rls import drop_tenant_references

from . import models
from .models import FOREIGN, TENANT, Kind

T = TypeVar("T")

Mode = Literal["sync", "async"]
Scope = Literal["tenant", "none"]


class _Gone:
    """What a refresh or an attribute load of a row that is not there (any more) returns."""

    def __repr__(self) -> str:
        return "<gone>"


GONE = _Gone()


# --- running a shape -----------------------------------------------------------------------


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a shape's coroutine on a sync runner: it never suspends, so no event loop is needed."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a shape awaited something other than its runner")


def _vanished(error: Exception) -> bool:
    return isinstance(error, orm_exc.ObjectDeletedError) or (
        isinstance(error, sa_exc.InvalidRequestError) and "Could not refresh instance" in str(error)
    )


class Runner:
    """The session API a shape uses; ``await`` every call (sync runners never suspend)."""

    mode: Mode
    #: the writer's tag for labels of new rows: ``t1`` (the tenant) or ``t*`` (no tenant)
    tag: str = "t*"

    @property
    def sync(self) -> Session:
        """The sync ``Session``, for sync-only API (legacy ``Query``, ``Session.bulk_*``)."""
        raise TypeError("a sync-only shape ran on an AsyncSession")

    def identity_objects(self) -> list[object]:
        raise NotImplementedError

    async def execute(self, stmt: Any, params: Any = None) -> Any:
        raise NotImplementedError

    async def objects(self, stmt: Any) -> list[Any]:
        return list((await self.execute(stmt)).unique().scalars().all())

    async def rows(self, stmt: Any, params: Any = None) -> list[Any]:
        return list((await self.execute(stmt, params)).all())

    async def scalar(self, stmt: Any) -> Any:
        return (await self.execute(stmt)).scalar()

    async def stream(self, stmt: Any) -> list[Any]:
        """ORM objects fetched in batches (``yield_per``; ``AsyncSession.stream_scalars``)."""
        raise NotImplementedError

    async def get(self, cls: type[Any], ident: Any) -> Any:
        raise NotImplementedError

    async def refresh(self, obj: object) -> object:
        """``session.refresh(obj)``; :data:`GONE` when the row is not there for this session."""
        raise NotImplementedError

    async def load(self, obj: object, attr: str) -> object:
        """Read an attribute that may load (lazy relationship, expired column); :data:`GONE`
        when the object's row is not there."""
        raise NotImplementedError

    async def merge(self, obj: object) -> Any:
        raise NotImplementedError

    def add(self, obj: object) -> None:
        raise NotImplementedError

    async def delete(self, obj: object) -> None:
        raise NotImplementedError

    async def hard_delete(self, obj: object) -> None:
        raise NotImplementedError

    def expire(self, obj: object, attrs: Sequence[str] | None = None) -> None:
        raise NotImplementedError

    def expunge(self, obj: object) -> None:
        raise NotImplementedError

    async def flush(self) -> None:
        raise NotImplementedError

    async def insert_many(self, model: type[T], rows: Sequence[Mapping[str, Any]], **kw: Any) -> list[T]:
        raise NotImplementedError

    async def raw(self, sql: str, **params: Any) -> None:
        """Raw SQL on the base tables, in the session's transaction (bypasses every hook)."""
        raise NotImplementedError


class SyncRunner(Runner):
    mode: Mode = "sync"

    def __init__(self, session: Session) -> None:
        self.session = session

    @property
    def sync(self) -> Session:
        return self.session

    def identity_objects(self) -> list[object]:
        return list(self.session.identity_map.values())

    async def execute(self, stmt: Any, params: Any = None) -> Any:
        return self.session.execute(stmt, params)

    async def stream(self, stmt: Any) -> list[Any]:
        return list(self.session.scalars(stmt.execution_options(yield_per=2)))

    async def get(self, cls: type[Any], ident: Any) -> Any:
        return self.session.get(cls, ident)

    async def refresh(self, obj: object) -> object:
        try:
            self.session.refresh(obj)
        except sa_exc.InvalidRequestError as error:
            if _vanished(error):
                return GONE
            raise
        return obj

    async def load(self, obj: object, attr: str) -> object:
        try:
            return getattr(obj, attr)
        except sa_exc.InvalidRequestError as error:
            if _vanished(error):
                return GONE
            raise

    async def merge(self, obj: object) -> Any:
        return self.session.merge(obj)

    def add(self, obj: object) -> None:
        self.session.add(obj)

    async def delete(self, obj: object) -> None:
        self.session.delete(obj)

    async def hard_delete(self, obj: object) -> None:
        sa_patterns.hard_delete(self.session, obj)

    def expire(self, obj: object, attrs: Sequence[str] | None = None) -> None:
        self.session.expire(obj, attrs)

    def expunge(self, obj: object) -> None:
        self.session.expunge(obj)

    async def flush(self) -> None:
        self.session.flush()

    async def insert_many(self, model: type[T], rows: Sequence[Mapping[str, Any]], **kw: Any) -> list[T]:
        return sa_patterns.insert_many(self.session, model, rows, **kw)

    async def raw(self, sql: str, **params: Any) -> None:
        self.session.connection().execute(text(sql), params)


class AsyncRunner(Runner):
    mode: Mode = "async"

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def identity_objects(self) -> list[object]:
        return list(self.session.sync_session.identity_map.values())

    async def execute(self, stmt: Any, params: Any = None) -> Any:
        return await self.session.execute(stmt, params)

    async def stream(self, stmt: Any) -> list[Any]:
        result = await self.session.stream_scalars(stmt.execution_options(yield_per=2))
        return [obj async for obj in result]

    async def get(self, cls: type[Any], ident: Any) -> Any:
        return await self.session.get(cls, ident)

    async def refresh(self, obj: object) -> object:
        try:
            await self.session.refresh(obj)
        except sa_exc.InvalidRequestError as error:
            if _vanished(error):
                return GONE
            raise
        return obj

    async def load(self, obj: object, attr: str) -> object:
        try:
            return await getattr(obj.awaitable_attrs, attr)  # type: ignore[attr-defined]
        except sa_exc.InvalidRequestError as error:
            if _vanished(error):
                return GONE
            raise

    async def merge(self, obj: object) -> Any:
        return await self.session.merge(obj)

    def add(self, obj: object) -> None:
        self.session.add(obj)

    async def delete(self, obj: object) -> None:
        await self.session.delete(obj)

    async def hard_delete(self, obj: object) -> None:
        await sa_patterns.hard_delete(self.session, obj)

    def expire(self, obj: object, attrs: Sequence[str] | None = None) -> None:
        self.session.expire(obj, attrs)

    def expunge(self, obj: object) -> None:
        self.session.expunge(obj)

    async def flush(self) -> None:
        await self.session.flush()

    async def insert_many(self, model: type[T], rows: Sequence[Mapping[str, Any]], **kw: Any) -> list[T]:
        return await sa_patterns.insert_many_async(self.session, model, rows, **kw)

    async def raw(self, sql: str, **params: Any) -> None:
        conn = await self.session.connection()
        await conn.execute(text(sql), params)


class UniverseRunner(SyncRunner):
    """A plain (uninstalled) session whose tables are a universe's views: the reference run.

    ``get()`` always asks the database (``populate_existing``): the session must answer for the
    tenant in force *now*, which a plain identity map cannot know.
    """

    def __init__(self, session: Session, connection: Connection, base: str) -> None:
        super().__init__(session)
        self.connection = connection
        self.base = base
        self.path = base

    def enter(self, universe: str) -> None:
        self.path = f"{universe}, {self.base}"
        self._search_path(self.path)

    def _search_path(self, path: str) -> None:
        self.connection.execute(text("SELECT set_config('search_path', :p, true)"), {"p": path})

    async def get(self, cls: type[Any], ident: Any) -> Any:
        return self.session.get(cls, ident, populate_existing=True)

    async def raw(self, sql: str, **params: Any) -> None:
        self._search_path(self.base)
        self.connection.execute(text(sql), params)
        self._search_path(self.path)


# --- shapes and cells ----------------------------------------------------------------------

Prepare = Callable[[Runner, Kind], Coroutine[Any, Any, Any]]
Run = Callable[[Runner, Kind, Any], Coroutine[Any, Any, object]]


@dataclass(frozen=True)
class Shape:
    """One way to reach rows through the ORM (see the catalogue)."""

    name: str
    kind: Literal["read", "write"]
    doc: str
    applies: Callable[[Kind], bool]
    run: Run
    #: loads what the run step works on, under ``TENANT`` (or ``FOREIGN`` when ``foreign``)
    prepare: Prepare | None = None
    foreign: bool = False
    sync_only: bool = False
    #: the shape asks for a real DELETE (soft-deletable rows may disappear, the tenant's only)
    hard: bool = False
    #: the error the shape must be refused with on a tenant model kind (``None``: it must
    #: succeed, scoped); with no tenant, the cell may raise it instead of ``TenantRequired``
    refuses: type[SAPatternsError] | None = None
    #: ``(kind name, error)`` pairs: the refusal on that kind, whether it has tenants or not
    refuses_on: tuple[tuple[str, type[SAPatternsError]], ...] = ()


@dataclass(frozen=True)
class Cell:
    shape: Shape
    kind: Kind
    mode: Mode
    scope: Scope

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.shape.name, self.kind.name, self.mode, self.scope)

    @property
    def id(self) -> str:
        return "-".join(self.key)

    @property
    def tenant(self) -> int | None:
        return TENANT if self.scope == "tenant" else None

    @property
    def refuses_without_tenant(self) -> bool:
        return self.scope == "none" and self.kind.tenant

    @property
    def expected(self) -> tuple[type[SAPatternsError], ...]:
        """The refusals this cell may raise; empty: it must succeed, scoped. With no tenant a
        tenant model's cell raises ``TenantRequired``, or the refusal the shape gets anyway."""
        on = dict(self.shape.refuses_on).get(self.kind.judged_as)
        if on is None and self.kind.tenant:
            on = self.shape.refuses
        refuses = (on,) if on else ()
        if self.refuses_without_tenant:
            return (TenantRequired, *refuses)
        return refuses


@dataclass
class Outcome:
    """What the run step returned, or the ``SAPatternsError`` it raised."""

    value: object = None
    error: SAPatternsError | None = None


# --- the database side: universes and snapshots ----------------------------------------------


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def universe(base: str, tenant: int | None) -> str:
    """The schema of views showing only ``tenant``'s live rows (no tenant: non-tenant rows)."""
    return f"{base}_u{tenant or 0}"


def _base_table(table: Table) -> Table | None:
    """For a joined-inheritance table: the table its primary key references."""
    for fk in table.foreign_keys:
        if fk.parent.primary_key:
            return fk.column.table
    return None


BASE_OF = {t.name: b.name for t in models.iso_tables() if (b := _base_table(t)) is not None}
SOFT_TABLES = {t.name for t in models.iso_tables() if "deleted_at" in t.c}


def create_universes(connection: Connection, base: str) -> None:
    """Views named like the tables, one schema per tenant the matrix uses (and none)."""
    for tenant in (TENANT, FOREIGN, None):
        name = _quote(universe(base, tenant))
        connection.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {name}"))
        for table in models.iso_tables():
            conds = []
            if "tenant_id" in table.c:
                conds.append("false" if tenant is None else f"tenant_id = {int(tenant)}")
            if "deleted_at" in table.c:
                conds.append("deleted_at IS NULL")
            parent = _base_table(table)
            if parent is not None:
                conds.append(f"id IN (SELECT id FROM {name}.{_quote(parent.name)})")
            connection.execute(text(
                f"CREATE VIEW {name}.{_quote(table.name)} AS SELECT * FROM "
                f"{_quote(base)}.{_quote(table.name)} WHERE {' AND '.join(conds) or 'true'}"
            ))


def drop_universes(connection: Connection, base: str) -> None:
    for tenant in (TENANT, FOREIGN, None):
        connection.execute(text(f"DROP SCHEMA IF EXISTS {_quote(universe(base, tenant))} CASCADE"))


def setup_database(connection: Connection, base: str) -> None:
    """Tables, the inconsistent data (a plain session: no hook, like raw SQL) and universes."""
    for metadata in models.METADATAS:
        sa_patterns.create_all(connection, metadata)
        # The composite (tenant_id, id) keys would refuse the inconsistent data the ORM wall is
        # tried against (a child of tenant 2 under a parent of tenant 1): removed here on purpose,
        # as in a database that predates them. tests/tenancy/test_tenancy_references.py proves them.
        drop_tenant_references(connection, metadata)
    with Session(bind=connection) as session:
        session.add_all(models.seed_objects())
        session.commit()
    for table in models.iso_tables():  # ids a shape leaves to a sequence never meet seeded ones
        connection.execute(text(
            f"SELECT setval(pg_get_serial_sequence('{base}.{table.name}', 'id'), 100000)"
        ))
    create_universes(connection, base)


Snapshot = dict[str, dict[int, dict[str, Any]]]

_SNAPSHOT_SQL = " UNION ALL ".join(
    f"SELECT '{t.name}', row_to_json(x)::text FROM {t.name} x" for t in models.iso_tables()
)


def snapshot(connection: Connection) -> Snapshot:
    """Every row of every ``iso_`` table, as raw SQL sees it (no filter applies to raw SQL)."""
    snap: Snapshot = {t.name: {} for t in models.iso_tables()}
    for table, row in connection.execute(text(_SNAPSHOT_SQL)):
        data = json.loads(row)
        snap[table][data["id"]] = data
    return snap


def owner(snap: Snapshot, table: str, key: int) -> tuple[int | None, bool]:
    """``(tenant or None, soft-deleted?)`` of a row, through its base table for joined
    inheritance."""
    row = snap[table][key]
    base = BASE_OF.get(table)
    if base is not None:
        return owner(snap, base, key)
    return row.get("tenant_id"), row.get("deleted_at") is not None


# --- the oracle ------------------------------------------------------------------------------

_TAG = re.compile(r"\bt(\d+|\*):")


def check_text(value: object, tenant: int | None, where: str) -> None:
    """A string carries tags of the current tenant or of no tenant, and no dead row's."""
    if not isinstance(value, str):
        return
    allowed = {"*"} if tenant is None else {"*", str(tenant)}
    for tag in _TAG.findall(value):
        assert tag in allowed, f"{where}: {value!r} belongs to tenant {tag} (in scope: {tenant})"
    assert ":dead" not in value, f"{where}: {value!r} comes from a soft-deleted row"


def _is_entity(value: object) -> bool:
    try:
        instance_state(value)
    except (UnmappedInstanceError, AttributeError):
        return False
    return not isinstance(value, type)


def reached(value: object) -> Iterator[object]:
    """Every ORM object in ``value`` and, transitively, in the loaded relationships of those
    (nothing is loaded by walking: only what is in each object's ``__dict__``)."""
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if _is_entity(item):
            if id(item) in seen:
                continue
            seen.add(id(item))
            yield item
            state = instance_state(item)
            for rel in state.mapper.relationships:
                if rel.key in state.dict:
                    stack.append(state.dict[rel.key])
        elif isinstance(item, (list, tuple, set, Row)):
            stack.extend(item)


def _plain_values(value: object) -> Iterator[object]:
    """Scalars of ``value`` outside ORM objects (rows, lists, tuples)."""
    if _is_entity(value) or value is GONE:
        return
    if isinstance(value, (list, tuple, set, Row)):
        for item in value:
            yield from _plain_values(item)
    else:
        yield value


def audit_read(value: object, snap: Snapshot, tenant: int | None, held: set[int], where: str) -> None:
    """Everything ``value`` reaches belongs to ``tenant`` (or no tenant) and is live."""
    for obj in reached(value):
        if id(obj) in held:
            continue
        state = instance_state(obj)
        table = str(state.mapper.local_table.name)  # type: ignore[attr-defined]
        key = state.identity[0] if state.identity else getattr(obj, "id", None)
        name = f"{where}: {type(obj).__name__} {key}"
        if key in snap[table]:
            row_tenant, dead = owner(snap, table, key)
            assert row_tenant in (None, tenant), f"{name} belongs to tenant {row_tenant}"
            assert not dead, f"{name} is soft-deleted"
        loaded = state.dict
        if "tenant_id" in loaded:
            assert loaded["tenant_id"] == tenant, f"{name} has tenant_id {loaded['tenant_id']}"
        if "deleted_at" in loaded:
            assert loaded["deleted_at"] is None, f"{name} is soft-deleted"
        for attr, val in loaded.items():
            check_text(val, tenant, f"{name}.{attr}")
    for scalar in _plain_values(value):
        check_text(scalar, tenant, where)
    for row in _rows(value):
        mapping = row._mapping
        if "tenant_id" in mapping:
            assert mapping["tenant_id"] == tenant, f"{where}: row {tuple(row)} of another tenant"
        if "deleted_at" in mapping:
            assert mapping["deleted_at"] is None, f"{where}: row {tuple(row)} is soft-deleted"


def _rows(value: object) -> Iterator[Row[Any]]:
    if isinstance(value, Row):
        yield value
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            yield from _rows(item)


def normalize(value: object) -> tuple[object, list[tuple[object, object]]]:
    """``value`` with ORM objects as ``(class, primary key)`` references, plus the loaded
    state (columns, and relationships as references) of every object reached. Lists compare
    as multisets (order is the database's business unless a shape orders)."""
    objects: dict[tuple[str, object], object] = {}

    def ref(obj: object) -> object:
        state = instance_state(obj)
        key = (type(obj).__name__, state.identity)
        if key not in objects:
            objects[key] = None
            columns = sorted(
                (attr.key, state.dict[attr.key])
                for attr in state.mapper.column_attrs
                if attr.key in state.dict
            )
            rels = sorted(
                (rel.key, walk(state.dict[rel.key]))
                for rel in state.mapper.relationships
                if rel.key in state.dict
            )
            objects[key] = (columns, rels)
        return ("obj", *key)

    def walk(item: object) -> object:
        if item is GONE:
            return "<gone>"
        if _is_entity(item):
            return ref(item)
        if isinstance(item, Row):
            return ("row", *(walk(x) for x in item))
        if isinstance(item, tuple):
            return tuple(walk(x) for x in item)
        if isinstance(item, (list, set)):
            return ("list", *sorted((walk(x) for x in item), key=repr))
        return item

    top = walk(value)
    return top, sorted(objects.items(), key=repr)


def audit_write(before: Snapshot, after: Snapshot, tenant: int | None, hard: bool) -> int:
    """Judge the rows a write changed; return how many."""
    changes = 0
    for table in before:
        old, new = before[table], after[table]
        for key in new.keys() - old.keys():
            changes += 1
            row_tenant, dead = owner(after, table, key)
            assert row_tenant in (None, tenant), (
                f"inserted {table} {key} belongs to tenant {row_tenant} (in scope: {tenant}): "
                f"{new[key]}"
            )
            assert not dead, f"inserted {table} {key} is soft-deleted: {new[key]}"
            for attr, val in new[key].items():
                check_text(val, tenant, f"inserted {table} {key}.{attr}")
        for key in old.keys() - new.keys():
            changes += 1
            row_tenant, _ = owner(before, table, key)
            assert row_tenant in (None, tenant), (
                f"deleted {table} {key} of tenant {row_tenant} (in scope: {tenant}): {old[key]}"
            )
            assert hard or table not in SOFT_TABLES, (
                f"{table} {key} was really deleted, not soft-deleted: {old[key]}"
            )
        for key in old.keys() & new.keys():
            if old[key] == new[key]:
                continue
            changes += 1
            row_tenant, dead = owner(before, table, key)
            assert row_tenant in (None, tenant), (
                f"changed {table} {key} of tenant {row_tenant} (in scope: {tenant}): "
                f"{old[key]} -> {new[key]}"
            )
            assert not dead, f"changed {table} {key}, a soft-deleted row: {old[key]} -> {new[key]}"
            assert owner(after, table, key)[0] == row_tenant, (
                f"{table} {key} moved from tenant {row_tenant}: {new[key]}"
            )
            for attr, val in new[key].items():
                if val != old[key].get(attr):
                    check_text(val, tenant, f"changed {table} {key}.{attr}")
    return changes


def writer_tag(kind: Kind, tenant: int | None) -> str:
    """The tag of text a shape writes: its tenant's, ``t*`` for a model without tenants."""
    return f"t{tenant}" if kind.tenant and tenant is not None else "t*"


def _scope(tenant: int | None) -> Any:
    return sa_patterns.tenant_scope(tenant) if tenant is not None else nullcontext()


async def perform(
    cell: Cell, runner: Runner, checkpoint: Callable[[], Awaitable[None]] | None = None
) -> tuple[Outcome, set[int]]:
    """Prepare (as the tenant, or the foreign tenant), then run the shape in the cell's scope.

    Returns the outcome and the ids of the objects held before the run step.
    """
    shape, kind = cell.shape, cell.kind
    prepared: Any = None
    if shape.prepare is not None:
        with sa_patterns.tenant_scope(FOREIGN if shape.foreign else TENANT):
            runner.tag = writer_tag(kind, FOREIGN if shape.foreign else TENANT)
            prepared = await shape.prepare(runner, kind)
    if checkpoint is not None:
        await checkpoint()
    held = {id(obj) for obj in runner.identity_objects()}
    runner.tag = writer_tag(kind, cell.tenant)
    with _scope(cell.tenant):
        try:
            value = await shape.run(runner, kind, prepared)
            await runner.flush()
        except SAPatternsError as error:
            return Outcome(error=error), held
    return Outcome(value=value), held


_REFERENCES: dict[tuple[str, str, str, str], object] = {}


def reference(cell: Cell, connection: Connection, base: str) -> object:
    """The cell's read on a plain session over the tenant's universe: what it must return.
    Computed once per shape, kind and scope (the sync and the async cell share it)."""
    key = (base, cell.shape.name, cell.kind.name, cell.scope)
    if key not in _REFERENCES:
        _REFERENCES[key] = _reference(cell, connection, base)
    return _REFERENCES[key]


def _reference(cell: Cell, connection: Connection, base: str) -> object:
    nested = connection.begin_nested()
    try:
        with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
            runner = UniverseRunner(session, connection, base)
            prepared: Any = None
            if cell.shape.prepare is not None:
                runner.enter(universe(base, FOREIGN if cell.shape.foreign else TENANT))
                prepared = drive(cell.shape.prepare(runner, cell.kind))
            runner.enter(universe(base, cell.tenant))
            runner.tag = writer_tag(cell.kind, cell.tenant)
            value: object = drive(cell.shape.run(runner, cell.kind, prepared))
            return normalize(value)
    finally:
        nested.rollback()  # undoes the prepare step's raw SQL and the search_path too


def judge(
    cell: Cell,
    outcome: Outcome,
    held: set[int],
    before: Snapshot,
    after: Snapshot,
    expected: object,
    strict: bool = True,
) -> None:
    """The oracle. ``strict``: the outcome must also be the catalogue's (scoped, or the refusal
    it declares); a cell known to fail today (``strict=False``) passes on any sound outcome, so
    that whichever way it gets fixed, it XPASSes."""
    where = cell.id
    error = outcome.error
    if strict:
        want = cell.expected
        if not want:
            assert error is None, (
                f"{where}: refused with {error!r}, but the catalogue says this cell is scoped "
                "(if refusing is intended, declare refuses= on the shape)"
            )
        else:
            assert isinstance(error, want), (
                f"{where}: expected {' or '.join(w.__name__ for w in want)}, got "
                + (repr(error) if error else f"a result: {outcome.value!r}")
            )
    if error is not None:
        assert before == after, f"{where}: refused ({error!r}) but changed rows"
        return
    assert not cell.refuses_without_tenant, (
        f"{where}: ran with no tenant in scope (fail closed: TenantRequired), result: "
        f"{outcome.value!r}"
    )
    if cell.shape.kind == "read":
        assert before == after, f"{where}: a read changed rows"
        audit_read(outcome.value, after, cell.tenant, held, where)
        actual = normalize(outcome.value)
        assert actual == expected, (
            f"{where}: result differs from the same read over the tenant's live rows only\n"
            f"  got:      {actual}\n  expected: {expected}"
        )
    else:
        changed = audit_write(before, after, cell.tenant, cell.shape.hard)
        assert changed, f"{where}: the write succeeded but changed nothing"
        audit_read(outcome.value, after, cell.tenant, held, where)


def _refused_read(cell: Cell, outcome: Outcome) -> bool:
    """A read that was refused: nothing to snapshot (reads never write; the ones that
    succeed are checked for that)."""
    return cell.shape.kind == "read" and outcome.error is not None


def needs_reference(cell: Cell) -> bool:
    return cell.shape.kind == "read" and not cell.refuses_without_tenant


_SEEDED: dict[str, Snapshot] = {}


def seeded(connection: Connection, base: str) -> Snapshot:
    """The snapshot of the committed data every cell starts from (taken once per schema)."""
    if base not in _SEEDED:
        _SEEDED[base] = snapshot(connection)
    return _SEEDED[base]


def run_sync(
    cell: Cell, factory: sessionmaker[Session], connection: Connection, base: str,
    strict: bool = True,
) -> None:
    """Run ``cell`` (sync mode) on an installed ``factory`` bound to ``connection`` (inside a
    transaction the caller rolls back), and judge it."""
    expected = reference(cell, connection, base) if needs_reference(cell) else None
    before: Snapshot = {}

    async def checkpoint() -> None:
        # nothing ran yet without a prepare step: the committed data, snapshot once
        before.update(snapshot(connection) if cell.shape.prepare else seeded(connection, base))

    with factory() as session:
        outcome, held = drive(perform(cell, SyncRunner(session), checkpoint))
        after = before if _refused_read(cell, outcome) else snapshot(connection)
        judge(cell, outcome, held, before, after, expected, strict)


async def run_async(
    cell: Cell, factory: async_sessionmaker[AsyncSession], connection: AsyncConnection, base: str,
    strict: bool = True,
) -> None:
    """Run ``cell`` on an installed ``factory`` of ``AsyncSession`` bound to ``connection``
    (inside a transaction the caller rolls back), and judge it."""
    expected = (
        await connection.run_sync(lambda c: reference(cell, c, base)) if needs_reference(cell) else None
    )
    before: Snapshot = {}

    async def checkpoint() -> None:
        if cell.shape.prepare:
            before.update(await connection.run_sync(snapshot))
        else:
            before.update(await connection.run_sync(lambda c: seeded(c, base)))

    async with factory() as session:
        outcome, held = await perform(cell, AsyncRunner(session), checkpoint)
        after = before if _refused_read(cell, outcome) else await connection.run_sync(snapshot)
        judge(cell, outcome, held, before, after, expected, strict)


@contextmanager
def rolled_back(connection: Connection) -> Iterator[None]:
    """A savepoint around one cell, rolled back after it whatever happened."""
    nested = connection.begin_nested()
    try:
        yield
    finally:
        if nested.is_active:
            nested.rollback()


@asynccontextmanager
async def async_rolled_back(connection: AsyncConnection) -> AsyncIterator[None]:
    nested = await connection.begin_nested()
    try:
        yield
    finally:
        if nested.is_active:
            await nested.rollback()
