"""Batched, resumable backfills of a live table: :class:`Backfill` and :func:`run_backfill`.

One ``UPDATE`` over a whole table keeps every row it changed locked until it commits, so every
writer of those rows waits for the whole statement. A backfill here walks the table in key order
(keyset batching on the primary key, composite allowed), ``batch_size`` rows at a time, and each
batch is one short transaction:

1. ``SET LOCAL lock_timeout`` (and ``statement_timeout`` if asked): a batch that meets a row held
   by a long transaction gives up quickly instead of holding its own rows meanwhile, and is
   retried with backoff (:class:`BackfillError` after ``retries`` tries);
2. the next ``batch_size`` keys after the last committed one, among the rows ``where`` says
   still need work;
3. the work on those rows: SQL assignments (one ``UPDATE`` of the key range, which locks its
   rows), or a Python function per batch (work SQL cannot do, such as encrypting through the
   model's type) or a statement of the caller's, on rows first locked ``FOR NO KEY UPDATE``
   (the lock an ``UPDATE`` of non-key columns takes anyway);
4. the state row in ``sa_patterns_backfill`` advanced in the **same** transaction.

So a batch is committed whole with its progress or not at all: an interrupted run (an exception,
a killed process) resumes after the last committed batch and does no row twice, a finished run is
a no-op, and between batches the backfill's connection holds no lock at all. The state table is
created on demand by whoever runs the backfill, which should be the owner role (the one that
runs migrations); the app role needs nothing.

From a migration, run it outside the migration's transaction::

    with op.get_context().autocommit_block():
        run_backfill(op.get_bind(), FILL_TENANT)

and from a shell: ``sa-patterns backfill app.migrations.fills:FILL_TENANT`` (progress bar,
``--status``, ``--restart``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    cast,
    func,
    insert,
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ColumnElement, coercions, roles

from .context import (
    ACTOR_SETTING,
    ALL_TENANTS_SETTING,
    TENANT_SETTING,
    current_actor,
    current_tenant,
    is_all_tenants,
)
from .errors import BackfillError, ConfigurationError

__all__ = [
    "STATE_TABLE",
    "Backfill",
    "BackfillError",
    "BackfillReport",
    "BackfillState",
    "Batch",
    "Progress",
    "backfill_status",
    "remaining_rows",
    "run_backfill",
    "run_backfill_async",
    "version_one",
]

#: Name of the table holding each backfill's progress (created on demand).
STATE_TABLE = "sa_patterns_backfill"

# lock_not_available (lock_timeout), deadlock_detected, serialization_failure: the batch rolled
# back whole, and trying it again later is the remedy.
_RETRYABLE = frozenset({"55P03", "40P01", "40001"})
_STATEMENT_TIMEOUT = "57014"


@dataclass(frozen=True)
class Batch:
    """One batch's rows, handed to an ``action``: their keys in order and ``condition``, the
    SQL that selects exactly the key range of the batch (and ``where``) on the table."""

    keys: tuple[tuple[Any, ...], ...]
    condition: ColumnElement[bool]
    rows: tuple[RowMapping, ...] = ()


@dataclass(frozen=True)
class Backfill:
    """What to fill, on which rows: the description a run (Python, migration or CLI) executes.

    ``name`` keys the progress in the state table, so it must stay the same between a run and
    its resumption. Give exactly one way to do the work:

    ``values``  column name → value or SQL expression, evaluated per row in an ``UPDATE`` (a
                constant, another column, a scalar subquery for a join);
    ``rows``    a Python function for what SQL cannot do: it gets the batch's rows (the key and
                the ``read`` columns, as mappings) and returns one mapping of new values per row,
                in the same order; they are written through the table's column types (an
                ``EncryptedString`` encrypts with its keyring, a blind index is filled);
    ``action``  ``action(connection, batch) -> rows done`` runs statements of its own for the
                batch (e.g. an ``INSERT ... SELECT`` into a history table).

    ``where`` says which rows still need work (e.g. ``T.c.tenant_id.is_(None)``): the batches
    skip the others, so a backfill restarted from scratch is still idempotent. ``key`` names the
    columns to walk by (default: the primary key); they must be unique and not null.
    """

    name: str
    table: Any
    values: Mapping[str, Any] | None = None
    rows: Callable[[Sequence[RowMapping]], Sequence[Mapping[str, Any]]] | None = None
    action: Callable[[Connection, Batch], int | None] | None = None
    where: Any = None
    key: Sequence[str] | None = None
    read: Sequence[str | ColumnElement[Any]] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigurationError("Backfill(name=...) must be a non-empty string: it keys the run's progress.")
        given = [n for n in ("values", "rows", "action") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ConfigurationError(
                f"Backfill {self.name!r}: give exactly one of values=, rows=, action= (got "
                f"{', '.join(given) or 'none'})."
            )
        if self.read and self.rows is None:
            raise ConfigurationError(f"Backfill {self.name!r}: read= is for rows= (the columns it is given).")
        self._plan  # noqa: B018  (validated now: a wrong column fails where the Backfill is written)

    @property
    def _plan(self) -> _Plan:
        plan: _Plan | None = self.__dict__.get("_plan_cache")
        if plan is None:
            plan = _Plan(self)
            object.__setattr__(self, "_plan_cache", plan)
        return plan


@dataclass(frozen=True)
class Progress:
    """Handed to ``progress`` after each committed batch (and once at the start)."""

    name: str
    rows_done: int
    estimate: int
    batches: int
    seconds: float
    backend_pid: int

    @property
    def rate(self) -> float:
        """Rows per second in this run."""
        return self.rows_done / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate (None before the first batch)."""
        if self.rate <= 0:
            return None
        return max(self.estimate - self.rows_done, 0) / self.rate


@dataclass
class BackfillReport:
    """What a run did. ``finished`` is true when no row is left; ``rows``/``batches`` count this
    run only, ``rows_total`` every run since the backfill started."""

    name: str
    table: str
    rows: int = 0
    batches: int = 0
    retries: int = 0
    rows_total: int = 0
    estimate: int = 0
    finished: bool = False
    already_finished: bool = False
    seconds: float = 0.0
    longest_batch: float = 0.0


@dataclass(frozen=True)
class BackfillState:
    """A backfill's row in the state table."""

    name: str
    table_name: str
    last_key: tuple[str, ...] | None
    rows_done: int
    batches: int
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None


def _state_table(schema: str | None) -> Table:
    return Table(
        STATE_TABLE,
        MetaData(),
        Column("name", Text, primary_key=True),
        Column("table_name", Text, nullable=False),
        Column("last_key", JSONB),
        Column("rows_done", BigInteger, nullable=False, server_default=text("0")),
        Column("batches", BigInteger, nullable=False, server_default=text("0")),
        Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("finished_at", DateTime(timezone=True)),
        schema=schema,
    )


class _Plan:
    """The statements of a :class:`Backfill`, built once."""

    def __init__(self, spec: Backfill) -> None:
        table = spec.table if isinstance(spec.table, Table) else getattr(spec.table, "__table__", None)
        if not isinstance(table, Table):
            raise ConfigurationError(f"Backfill {spec.name!r}: table= must be a Table or a mapped class, got {spec.table!r}.")
        self.table = table
        self.key = self._key(spec, table)
        self.where: ColumnElement[bool] | None = (
            None if spec.where is None else coercions.expect(roles.WhereHavingRole, spec.where)
        )
        self.values: dict[str, Any] = {}
        for name, value in (spec.values or {}).items():
            self._column(spec, name)
            self.values[name] = value
        self.read = [
            self._column(spec, c) if isinstance(c, str) else c for c in spec.read
        ]

    @staticmethod
    def _column(spec: Backfill, name: str) -> Column[Any]:
        table = spec.table if isinstance(spec.table, Table) else spec.table.__table__
        if name not in table.c:
            raise ConfigurationError(f"Backfill {spec.name!r}: {table.name} has no column {name!r}.")
        col: Column[Any] = table.c[name]
        return col

    @classmethod
    def _key(cls, spec: Backfill, table: Table) -> list[Column[Any]]:
        if spec.key is None:
            key = list(table.primary_key.columns)
            if not key:
                raise ConfigurationError(
                    f"Backfill {spec.name!r}: {table.name} has no primary key; pass key=[...] "
                    "naming unique, not-null columns to walk it by."
                )
            return key
        key = [cls._column(spec, name) for name in spec.key]
        names = {c.name for c in key}
        uniques = [{c.name for c in table.primary_key.columns}]
        uniques += [{c.name for c in con.columns} for con in table.constraints if isinstance(con, UniqueConstraint)]
        uniques += [{c.name for c in ix.columns} for ix in table.indexes if ix.unique]
        if not key or not any(u and u <= names for u in uniques) or any(c.nullable for c in key):
            raise ConfigurationError(
                f"Backfill {spec.name!r}: key {sorted(names)} must be not-null columns covering "
                f"the primary key or a unique constraint of {table.name}: batches walk by it and "
                "a duplicate key would be skipped."
            )
        return key

    def after(self, last: Sequence[str] | None) -> ColumnElement[bool] | None:
        """Keys after ``last`` (their text): cast back in SQL, so any key type round-trips."""
        if last is None:
            return None
        bound = [cast(bindparam(None, v, type_=Text), c.type) for c, v in zip(self.key, last, strict=True)]
        if len(self.key) == 1:
            return self.key[0] > bound[0]
        return tuple_(*self.key) > tuple_(*bound)

    def remaining(self, last: Sequence[str] | None) -> Any:
        conds = [c for c in (self.after(last), self.where) if c is not None]
        return select(func.count()).select_from(self.table).where(*conds)

    def next_keys(self, last: Sequence[str] | None, size: int) -> Any:
        conds = [c for c in (self.after(last), self.where) if c is not None]
        return (
            select(*self.key, *[cast(c, Text).label(f"_bf_text{i}") for i, c in enumerate(self.key)], *self.read)
            .where(*conds)
            .order_by(*self.key)
            .limit(size)
            # FOR NO KEY UPDATE: the lock an UPDATE of non-key columns takes anyway; unlike FOR
            # UPDATE it lets rows referencing these be inserted meanwhile (FOR KEY SHARE).
            .with_for_update(key_share=True, of=self.table)
        )

    def upper(self, last: Sequence[str] | None, size: int) -> Any:
        """The last key of the next batch (and its text), read without locking: for ``values``,
        whose ``UPDATE`` locks its rows itself (locking them first would write every row twice)."""
        conds = [c for c in (self.after(last), self.where) if c is not None]
        inner = select(*self.key).where(*conds).order_by(*self.key).limit(size).subquery()
        cols = [inner.c[c.name] for c in self.key]
        return (
            select(*cols, *[cast(c, Text).label(f"_bf_text{i}") for i, c in enumerate(cols)])
            .order_by(*[c.desc() for c in cols])
            .limit(1)
        )

    def batch_condition(self, last: Sequence[str] | None, upto: tuple[Any, ...]) -> ColumnElement[bool]:
        upper = self.key[0] <= upto[0] if len(self.key) == 1 else tuple_(*self.key) <= tuple_(
            *[bindparam(None, v, type_=c.type) for c, v in zip(self.key, upto, strict=True)]
        )
        return and_(*[c for c in (self.after(last), upper, self.where) if c is not None])


@contextmanager
def _transaction(conn: Connection, explicit: bool) -> Iterator[None]:
    """One batch's transaction: ``conn.begin()``, or BEGIN/COMMIT sent by hand on a connection
    in autocommit mode (inside Alembic's ``autocommit_block()``, where SQLAlchemy's transaction
    is a formality and every statement would otherwise commit alone)."""
    if not explicit:
        with conn.begin():
            yield
        return
    conn.exec_driver_sql("BEGIN")
    try:
        yield
    except BaseException:
        conn.exec_driver_sql("ROLLBACK")
        raise
    conn.exec_driver_sql("COMMIT")


def _settings(lock_timeout: float, statement_timeout: float | None) -> dict[str, str]:
    values = {"lock_timeout": f"{max(int(lock_timeout * 1000), 1)}ms"}
    if statement_timeout is not None:
        values["statement_timeout"] = f"{max(int(statement_timeout * 1000), 1)}ms"
    # the scope's tenant, actor and all_tenants() travel as the session would send them: a
    # tenant table's FORCEd row-level security lets the owner through inside all_tenants().
    tenant, actor = current_tenant(), current_actor()
    if tenant is not None:
        values[TENANT_SETTING] = str(tenant)
    if actor is not None:
        values[ACTOR_SETTING] = str(actor)
    if is_all_tenants():
        values[ALL_TENANTS_SETTING] = "on"
    return values


def _set_local(conn: Connection, values: Mapping[str, str]) -> None:
    names = list(values)
    conn.execute(
        select(*[func.set_config(bindparam(f"n{i}", n), bindparam(f"v{i}", values[n]), True) for i, n in enumerate(names)])
    )


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return state if isinstance(state, str) else None


def _ensure_state(conn: Connection, explicit: bool, state: Table) -> None:
    with _transaction(conn, explicit):
        exists = _state_exists(conn, state)
    if exists:
        return
    try:
        with _transaction(conn, explicit):
            state.create(conn, checkfirst=True)
    except DBAPIError as exc:
        if _sqlstate(exc) != "42501":
            raise
        raise ConfigurationError(
            f"this role may not create the backfill state table {state.name!r} "
            f"({str(exc.orig).splitlines()[0]}): run backfills as the owner role, the one that "
            "runs migrations."
        ) from None


def _read_state(conn: Connection, state: Table, name: str) -> BackfillState | None:
    row = conn.execute(select(state).where(state.c.name == name)).mappings().first()
    if row is None:
        return None
    last = row["last_key"]
    return BackfillState(
        row["name"], row["table_name"], None if last is None else tuple(last), int(row["rows_done"]),
        int(row["batches"]), row["started_at"], row["updated_at"], row["finished_at"],
    )


def _state_exists(conn: Connection, state: Table) -> bool:
    name = state.name if state.schema is None else f"{state.schema}.{state.name}"
    found = conn.execute(select(func.to_regclass(bindparam("t", name, type_=Text)))).scalar()
    return found is not None


def backfill_status(bind: Engine | Connection, name: str, *, state_schema: str | None = None) -> BackfillState | None:
    """The progress recorded for backfill ``name`` (None: it never ran). Reads only."""
    state = _state_table(state_schema)
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return backfill_status(conn, name, state_schema=state_schema)
    if not _state_exists(bind, state):
        return None
    return _read_state(bind, state, name)


def remaining_rows(bind: Engine | Connection, backfill: Backfill, *, state_schema: str | None = None) -> int:
    """How many rows the backfill has still to visit: after its recorded last key, and matching
    ``where``. One count (a scan under ACCESS SHARE, which blocks no writer)."""
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return remaining_rows(conn, backfill, state_schema=state_schema)
    state = backfill_status(bind, backfill.name, state_schema=state_schema)
    if state is not None and state.finished_at is not None:
        return 0
    scope = {k: v for k, v in _settings(1.0, None).items() if k != "lock_timeout"}
    if scope:
        _set_local(bind, scope)
    return int(bind.execute(backfill._plan.remaining(None if state is None else state.last_key)).scalar_one())


@contextmanager
def _connection(bind: Engine | Connection) -> Iterator[tuple[Connection, bool]]:
    """A connection on which the runner may commit batch by batch, and whether it sends
    BEGIN/COMMIT itself."""
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            yield conn, False
            if conn.in_transaction():
                conn.rollback()
        return
    if not isinstance(bind, Connection):
        raise ConfigurationError(f"run_backfill() takes an Engine or a Connection, got {bind!r}.")
    if bind.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        yield bind, True
        return
    if bind.in_transaction():
        raise ConfigurationError(
            "a backfill commits batch by batch, and this connection is inside a transaction (a "
            "migration's?): run it inside `with op.get_context().autocommit_block():`, or pass an "
            "Engine or a connection with no transaction begun."
        )
    yield bind, False
    if bind.in_transaction():
        bind.rollback()


class _Run:
    """One run's state, advanced one step at a time by :func:`run_backfill` (sleeping with
    ``time.sleep``) or :func:`run_backfill_async` (``asyncio.sleep``, the loop stays free)."""

    def __init__(
        self,
        backfill: Backfill,
        *,
        batch_size: int,
        lock_timeout: float,
        statement_timeout: float | None,
        pause: float,
        retries: int,
        backoff: float,
        restart: bool,
        max_batches: int | None,
        progress: Callable[[Progress], None] | None,
        state_schema: str | None,
    ) -> None:
        if batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1.")
        if retries < 0 or backoff < 0 or pause < 0 or lock_timeout <= 0:
            raise ConfigurationError("retries, backoff and pause must be >= 0 and lock_timeout > 0.")
        self.backfill, self.plan = backfill, backfill._plan
        self.batch_size, self.pause, self.retries, self.backoff = batch_size, pause, retries, backoff
        self.restart, self.max_batches, self.progress = restart, max_batches, progress
        self.state = _state_table(state_schema)
        self.settings = _settings(lock_timeout, statement_timeout)
        self.report = BackfillReport(backfill.name, self.plan.table.name)
        self.started = time.perf_counter()
        self.last: tuple[str, ...] | None = None
        self.done = self.batches = self.attempt = self.pid = 0

    def open(self, conn: Connection, explicit: bool) -> bool:
        """Read (or reset) the recorded progress; False when the backfill is already finished."""
        name, state, table = self.backfill.name, self.state, self.plan.table
        _ensure_state(conn, explicit, state)
        with _transaction(conn, explicit):
            current = _read_state(conn, state, name)
            if current is not None and current.table_name != table.name:
                raise BackfillError(
                    f"backfill {name!r} is recorded for table {current.table_name!r}, not "
                    f"{table.name!r}: backfill names must be unique."
                )
            if current is None or self.restart:
                values = {"table_name": table.name, "last_key": None, "rows_done": 0, "batches": 0,
                          "started_at": func.now(), "updated_at": func.now(), "finished_at": None}
                if current is None:
                    conn.execute(insert(state).values(name=name, **values))
                else:
                    conn.execute(update(state).where(state.c.name == name).values(**values))
                current = _read_state(conn, state, name)
                assert current is not None
        if current.finished_at is not None:
            self.report.already_finished = self.report.finished = True
            self.report.rows_total = current.rows_done
            return False
        with _transaction(conn, explicit):
            _set_local(conn, self.settings)
            remaining = int(conn.execute(self.plan.remaining(current.last_key)).scalar_one())
            self.pid = int(conn.execute(select(func.pg_backend_pid())).scalar_one())
        self.report.estimate = current.rows_done + remaining
        self.last, self.done, self.batches = current.last_key, current.rows_done, current.batches
        self._tell()
        return True

    def _tell(self) -> None:
        if self.progress is not None:
            self.progress(Progress(
                self.backfill.name, self.done, self.report.estimate, self.batches,
                time.perf_counter() - self.started, self.pid,
            ))

    def step(self, conn: Connection, explicit: bool) -> float | None:
        """Try one batch: None when the run is over, else the seconds to wait before the next
        step (the pause after a batch, the backoff after a retryable failure)."""
        report = self.report
        if self.max_batches is not None and report.batches >= self.max_batches:
            return None
        t0 = time.perf_counter()
        try:
            with _transaction(conn, explicit):
                outcome = _one_batch(
                    conn, self.backfill, self.plan, self.state, self.settings, self.last, self.batches, self.batch_size
                )
        except DBAPIError as exc:
            return self._failed(conn, explicit, exc)
        report.longest_batch = max(report.longest_batch, time.perf_counter() - t0)
        self.attempt = 0
        if outcome is None:
            with _transaction(conn, explicit):
                conn.execute(
                    update(self.state).where(self.state.c.name == self.backfill.name)
                    .values(finished_at=func.now(), updated_at=func.now())
                )
            report.finished = True
            return None
        self.last, count = outcome
        self.done += count
        self.batches += 1
        report.rows += count
        report.batches += 1
        self._tell()
        return self.pause

    def _failed(self, conn: Connection, explicit: bool, exc: DBAPIError) -> float:
        if conn.in_transaction() and not explicit:
            conn.rollback()
        name, after = self.backfill.name, list(self.last) if self.last else "start"
        code = _sqlstate(exc)
        if code == _STATEMENT_TIMEOUT:
            raise BackfillError(
                f"backfill {name!r}: a batch of {self.batch_size} rows after key {after} exceeded "
                "statement_timeout; run it again with a smaller batch size (it resumes there)."
            ) from exc
        if code not in _RETRYABLE:
            raise exc
        self.attempt += 1
        self.report.retries += 1
        if self.attempt > self.retries:
            raise BackfillError(
                f"backfill {name!r}: the batch after key {after} failed {self.attempt} times "
                f"({str(exc.orig).splitlines()[0]}); a long transaction holds its rows. "
                f"{self.done} rows are done and committed; run it again to resume."
            ) from exc
        return float(self.backoff * 2.0 ** (self.attempt - 1) * (0.5 + random.random()))

    def result(self) -> BackfillReport:
        if not self.report.already_finished:
            self.report.rows_total = self.done
        self.report.seconds = time.perf_counter() - self.started
        return self.report


def run_backfill(
    bind: Engine | Connection,
    backfill: Backfill,
    *,
    batch_size: int = 1000,
    lock_timeout: float = 0.5,
    statement_timeout: float | None = None,
    pause: float = 0.0,
    retries: int = 10,
    backoff: float = 0.1,
    restart: bool = False,
    max_batches: int | None = None,
    progress: Callable[[Progress], None] | None = None,
    state_schema: str | None = None,
) -> BackfillReport:
    """Run ``backfill`` to the end, batch by batch; resume where an earlier run stopped.

    ``bind``: an Engine (one connection is used), a Connection with no transaction begun, or a
    migration's connection inside ``op.get_context().autocommit_block()``. ``lock_timeout`` and
    ``statement_timeout`` (seconds) apply to each batch; a batch that hits the lock timeout, a
    deadlock or a serialization failure is retried ``retries`` times, waiting ``backoff``
    doubling each time (with jitter), then :class:`BackfillError`. ``pause`` seconds between
    batches throttle the run. ``restart`` forgets recorded progress (with ``where`` the rows
    already done are still skipped). ``max_batches`` stops early (a slice of a long run).
    ``progress`` gets a :class:`Progress` after each committed batch, when the backfill's
    connection holds no lock. Run it as the owner role, inside ``all_tenants()`` for a table
    whose row-level security is forced.
    """
    run = _Run(
        backfill, batch_size=batch_size, lock_timeout=lock_timeout, statement_timeout=statement_timeout,
        pause=pause, retries=retries, backoff=backoff, restart=restart, max_batches=max_batches,
        progress=progress, state_schema=state_schema,
    )
    with _connection(bind) as (conn, explicit):
        if run.open(conn, explicit):
            while (wait := run.step(conn, explicit)) is not None:
                if wait:
                    time.sleep(wait)
    return run.result()


async def run_backfill_async(
    engine: AsyncEngine,
    backfill: Backfill,
    *,
    batch_size: int = 1000,
    lock_timeout: float = 0.5,
    statement_timeout: float | None = None,
    pause: float = 0.0,
    retries: int = 10,
    backoff: float = 0.1,
    restart: bool = False,
    max_batches: int | None = None,
    progress: Callable[[Progress], None] | None = None,
    state_schema: str | None = None,
) -> BackfillReport:
    """:func:`run_backfill` on an ``AsyncEngine``: one awaited transaction per batch, and the
    pauses and backoffs awaited, so the event loop keeps serving meanwhile."""
    run = _Run(
        backfill, batch_size=batch_size, lock_timeout=lock_timeout, statement_timeout=statement_timeout,
        pause=pause, retries=retries, backoff=backoff, restart=restart, max_batches=max_batches,
        progress=progress, state_schema=state_schema,
    )
    async with engine.connect() as conn:
        if await conn.run_sync(run.open, False):
            while (wait := await conn.run_sync(run.step, False)) is not None:
                if wait:
                    await asyncio.sleep(wait)
    return run.result()


def _one_batch(
    conn: Connection,
    backfill: Backfill,
    plan: _Plan,
    state: Table,
    settings: Mapping[str, str],
    last: tuple[str, ...] | None,
    batches: int,
    size: int,
) -> tuple[tuple[str, ...], int] | None:
    """One batch in the caller's transaction: None when no row is left."""
    _set_local(conn, settings)
    # the state row first: a second run of the same backfill waits here, then sees it moved
    held = conn.execute(
        select(state.c.batches).where(state.c.name == backfill.name).with_for_update()
    ).scalar_one_or_none()
    if held != batches:
        raise BackfillError(
            f"backfill {backfill.name!r} was moved by another run ({held} batches recorded, this "
            f"run expected {batches}); let one run finish, then check --status."
        )
    n = len(plan.key)
    if backfill.values is not None:
        top = conn.execute(plan.upper(last, size)).mappings().first()
        if top is None:
            return None
        upto_text = tuple(str(top[f"_bf_text{i}"]) for i in range(n))
        condition = plan.batch_condition(last, tuple(top[c.name] for c in plan.key))
        count = int(conn.execute(
            update(plan.table).where(condition).values(dict(plan.values))
            .execution_options(preserve_rowcount=True)
        ).rowcount)
        _advance(conn, state, backfill.name, upto_text, count)
        return upto_text, count
    found = conn.execute(plan.next_keys(last, size)).mappings().all()
    if not found:
        return None
    keys = tuple(tuple(r[c.name] for c in plan.key) for r in found)
    upto_text = tuple(str(found[-1][f"_bf_text{i}"]) for i in range(n))
    condition = plan.batch_condition(last, keys[-1])
    if backfill.rows is not None:
        new = list(backfill.rows(found))
        if len(new) != len(found):
            raise ConfigurationError(
                f"Backfill {backfill.name!r}: rows= returned {len(new)} mappings for {len(found)} rows; "
                "it must return one per row, in order."
            )
        names = sorted({name for values in new for name in values})
        for name in names:
            plan._column(backfill, name)
        params = []
        for row_key, values in zip(keys, new, strict=True):
            if set(values) != set(names):
                raise ConfigurationError(
                    f"Backfill {backfill.name!r}: rows= must return the same columns for every row "
                    f"(got {sorted(values)} and {names})."
                )
            p = {f"_bf_k{i}": v for i, v in enumerate(row_key)}
            p.update({f"_bf_v_{name}": values[name] for name in names})
            params.append(p)
        if names:
            conn.execute(
                update(plan.table)
                .where(*[c == bindparam(f"_bf_k{i}", type_=c.type) for i, c in enumerate(plan.key)])
                .values({name: bindparam(f"_bf_v_{name}", type_=plan.table.c[name].type) for name in names}),
                params,
            )
        count = len(found)
    else:
        assert backfill.action is not None
        result = backfill.action(conn, Batch(keys, condition, tuple(found)))
        count = len(found) if result is None else int(result)
    _advance(conn, state, backfill.name, upto_text, count)
    return upto_text, count


def _advance(conn: Connection, state: Table, name: str, upto: tuple[str, ...], count: int) -> None:
    conn.execute(
        update(state).where(state.c.name == name).values(
            last_key=bindparam("last", list(upto), type_=JSONB),
            rows_done=state.c.rows_done + count,
            batches=state.c.batches + 1,
            updated_at=func.now(),
        )
    )


def version_one(model: Any, *, name: str | None = None) -> Backfill:
    """Version 1 in the history table for every row of a ``Versioned`` model that has no current
    version (rows from before it was versioned), in batches: what
    :func:`sa_patterns.versioning.backfill` does in one statement."""
    from .versioning import history_table

    table = model if isinstance(model, Table) else model.__table__
    hist = history_table(table)
    pk = list(table.primary_key.columns)
    current = select(literal(1)).where(*[hist.c[c.name] == c for c in pk], hist.c.valid_to.is_(None))
    names = [c.name for c in table.columns]

    def action(conn: Connection, batch: Batch) -> int:
        versions = (
            select(func.coalesce(func.max(hist.c.version), 0) + 1)
            .where(*[hist.c[c.name] == c for c in pk])
            .scalar_subquery()
        )
        rows = select(*table.columns, versions, func.clock_timestamp()).where(batch.condition)
        result = conn.execute(
            insert(hist).from_select([*names, "version", "valid_from"], rows)
            .execution_options(preserve_rowcount=True)
        )
        return int(result.rowcount)

    return Backfill(name or f"{table.name}.version_one", table, action=action, where=~current.exists())
