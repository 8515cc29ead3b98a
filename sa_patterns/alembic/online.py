"""Online migrations: a ``lock_timeout`` with retries for every revision, and the operations
autogenerate writes for a table that already has rows and traffic.

A brief lock (a policy, row-level security, a trigger, ``ADD COLUMN``) still queues behind any
open transaction on its table, and every query after it queues behind it: one slow report
stalls every writer. Under ``lock_timeout`` the step gives up instead, the revision's
transaction rolls back, and :func:`run_migrations` tries it again after a pause.

An index on a table that exists is built ``CONCURRENTLY`` outside the migration's transaction
(SHARE UPDATE EXCLUSIVE: reads and writes go on), and a constraint is added ``NOT VALID`` and
validated afterwards (the same lock). These steps wait on nobody's writes, so they run with no
``lock_timeout``: waiting for an old transaction to end stalls only the migration.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations
from alembic.operations import ops as alembic_ops
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ..errors import SAPatternsError

__all__ = [
    "AddUniqueUsingIndexOp",
    "AutocommitBlockOp",
    "CreateIndexConcurrentlyOp",
    "DropIndexConcurrentlyOp",
    "DuplicateKeysError",
    "LockTablesOp",
    "LockTimeoutError",
    "RequireUniqueOp",
    "ValidateConstraintOp",
    "run_migrations",
]

_LOG = logging.getLogger("alembic.runtime.sa_patterns")

DEFAULT_LOCK_TIMEOUT = "2s"
DEFAULT_RETRIES = 5
_TIMEOUT_KEY = "sa_patterns.lock_timeout"
_RETRIES_KEY = "sa_patterns.lock_retries"
_DURATION = re.compile(r"^\s*\d+(\.\d+)?\s*(us|ms|s|min|h|d)?\s*$")
_LOCK_NOT_AVAILABLE = "55P03"
#: statements a replayed revision may run again harmlessly
_REPEATABLE = re.compile(
    r"^\s*(?:CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS|DROP\s+INDEX\s+CONCURRENTLY\s+IF\s+EXISTS)\b",
    re.I,
)


class LockTimeoutError(SAPatternsError):
    """A migration step waited longer than ``lock_timeout`` on every attempt."""


class DuplicateKeysError(SAPatternsError):
    """A unique index cannot be built: live rows share its key."""


def _timeout(value: str) -> str:
    if not _DURATION.match(value):
        raise ValueError(f"lock_timeout {value!r} is not a duration such as '2s' or '500ms'")
    return value.strip()


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


_HOLDERS = text(
    "SELECT a.pid, a.usename, a.application_name, a.state, l.mode, "
    "date_trunc('second', now() - a.xact_start) AS open_for, left(a.query, 120) AS query "
    "FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.relation = to_regclass(:t) AND l.granted AND a.pid <> pg_backend_pid() "
    "ORDER BY a.xact_start LIMIT 5"
)


def _holders(connection: Connection, tables: list[str]) -> str:
    """Who holds a lock on ``tables`` now, from pg_locks and pg_stat_activity."""
    if not tables:
        return "unknown (the statement names no table)"
    try:
        if connection.in_transaction():
            connection.rollback()
        rows = [r for t in tables for r in connection.execute(_HOLDERS, {"t": t})]
        connection.rollback()
    except DBAPIError:
        return "unknown (pg_locks could not be read)"
    if not rows:
        return "nobody now (the holder has finished)"
    return "; ".join(
        f"pid {r.pid} ({r.usename}, {r.application_name or 'no application_name'}, {r.state}, "
        f"{r.mode}, transaction open for {r.open_for}): {r.query!r}"
        for r in rows
    )


_LOCK_TABLE = re.compile(r"^\s*LOCK\s+TABLE\s+(?:ONLY\s+)?(?P<names>.+?)\s+IN\s+", re.I | re.S)


def _tables_of(statement: str | None) -> list[str]:
    from ..lint.rules import statement_table

    locked = _LOCK_TABLE.match(statement or "")
    if locked:
        return [name.strip() for name in locked.group("names").split(",")]
    table, _ = statement_table(statement or "")
    return [table] if table else []


def run_migrations(
    *, lock_timeout: str | None = None, retries: int | None = None, pause: float = 0.5
) -> None:
    """Run the revisions under ``lock_timeout``, each attempt in the environment's transaction,
    retried ``retries`` times with a growing pause when a lock wait times out.

    Replaces ``with context.begin_transaction(): context.run_migrations()`` in ``env.py``, after
    ``context.configure(...)``; pass ``transaction_per_migration=True`` to ``configure()`` so a
    revision that committed stays committed while a later one is retried. The defaults come
    from ``sa_patterns.lock_timeout`` (``2s``) and ``sa_patterns.lock_retries`` (5) in
    alembic.ini. Offline (``--sql``) the script starts with ``SET lock_timeout``.
    """
    from alembic import context

    config = context.config
    value = _timeout(lock_timeout or config.get_main_option(_TIMEOUT_KEY) or DEFAULT_LOCK_TIMEOUT)
    attempts = 1 + (retries if retries is not None else int(config.get_main_option(_RETRIES_KEY) or DEFAULT_RETRIES))
    config.attributes[_TIMEOUT_KEY] = value
    if context.is_offline_mode():
        context.execute(f"SET lock_timeout = '{value}'")  # validated above: digits and a unit
        with context.begin_transaction():
            context.run_migrations()
        return
    connection: Connection = context.get_bind()
    external = connection.in_transaction()  # a program's transaction: no retry can undo it
    previous = connection.execute(text("SELECT current_setting('lock_timeout')")).scalar_one()
    connection.execute(text("SELECT set_config('lock_timeout', :v, false)"), {"v": value})
    if not external:
        connection.commit()
    # A retry replays the revision from its start: only safe when nothing of it was committed.
    # A commit that stamps the version table ends a revision (transaction_per_migration). A
    # write committed otherwise (in an autocommit_block(), or a commit it forces) leaves the
    # revision half applied, unless it is one that may simply run again (the toolkit's
    # CONCURRENTLY ... IF [NOT] EXISTS).
    version_table = str(getattr(context.get_context(), "version_table", "alembic_version"))
    state = {"stamping": False, "written": False, "partial": False}

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        head = (sql.split(None, 1) or [""])[0].upper()
        if version_table in sql and head in ("UPDATE", "INSERT", "DELETE"):
            state["stamping"] = True
        elif head not in ("SELECT", "SET", "SHOW", "RESET", "LOCK") and not _REPEATABLE.match(sql):
            if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
                state["partial"] = True
            state["written"] = True

    def commit(conn: Any) -> None:
        if state["stamping"]:
            state.update(stamping=False, written=False, partial=False)
        elif state["written"]:
            state.update(written=False, partial=True)

    def rollback(conn: Any) -> None:
        state.update(stamping=False, written=False)

    from sqlalchemy import event

    event.listen(connection, "before_cursor_execute", statement)
    event.listen(connection, "commit", commit)
    event.listen(connection, "rollback", rollback)
    try:
        for attempt in range(1, attempts + 1):
            state.update(stamping=False, written=False, partial=False)
            try:
                with context.begin_transaction():
                    context.run_migrations()
                return
            except DBAPIError as exc:
                if _sqlstate(exc) != _LOCK_NOT_AVAILABLE:
                    raise
                tables = _tables_of(exc.statement)
                table = ", ".join(tables)
                safe = not external and not state["partial"]
                if attempt == attempts or not safe:
                    holders = "unknown" if external else _holders(connection, tables)
                    why = (
                        f"after {attempts} attempts" if safe
                        else "and cannot be retried: part of its revision was already committed "
                        "(an autocommit block, or no transaction_per_migration=True); finish "
                        "or undo that part by hand" if not external
                        else "inside the caller's transaction, which cannot be retried"
                    )
                    raise LockTimeoutError(
                        f"migration step on {table or 'an unknown table'} waited longer than "
                        f"lock_timeout={value} {why}. Holding a lock on it: {holders}. Statement: "
                        f"{' '.join((exc.statement or '').split())[:200]}. End or wait for those "
                        f"transactions, or raise sa_patterns.lock_timeout / lock_retries."
                    ) from exc
                wait = min(pause * 2 ** (attempt - 1), 30.0) * (1 + random.random() / 2)
                _LOG.warning(
                    "lock_timeout (%s) on %s, attempt %d of %d: retrying in %.1fs",
                    value, table or "?", attempt, attempts, wait,
                )
                if connection.in_transaction():
                    connection.rollback()
                time.sleep(wait)
    finally:
        event.remove(connection, "before_cursor_execute", statement)
        event.remove(connection, "commit", commit)
        event.remove(connection, "rollback", rollback)
        if not connection.closed and not connection.invalidated:
            if connection.in_transaction() and not external:
                connection.rollback()
            try:  # the connection's own setting back, for a program that handed it over
                connection.execute(text("SELECT set_config('lock_timeout', :v, false)"), {"v": previous})
                if not external:
                    connection.commit()
            except DBAPIError:
                pass  # the caller's transaction failed: its error is the one to see


# -- operations ------------------------------------------------------------------------------


@contextmanager
def _unlimited_wait(operations: Operations) -> Iterator[None]:
    """No lock_timeout for a step that blocks nobody's reads or writes (SHARE UPDATE EXCLUSIVE):
    it may wait for old transactions as long as it must; the session's value comes back after."""
    ctx = operations.get_context()
    if ctx.as_sql:
        operations.execute("SET lock_timeout = 0")
        yield
        restored = ctx.config.attributes.get(_TIMEOUT_KEY) if ctx.config is not None else None
        operations.execute(f"SET lock_timeout = '{_timeout(restored)}'" if restored else "RESET lock_timeout")
        return
    bind = operations.get_bind()
    previous = bind.execute(text("SELECT current_setting('lock_timeout')")).scalar_one()
    bind.execute(text("SELECT set_config('lock_timeout', '0', false)"))
    try:
        yield
    finally:
        bind.execute(text("SELECT set_config('lock_timeout', :v, false)"), {"v": previous})


def _regclass(operations: Operations, schema: str | None, name: str) -> str:
    quote = operations.get_bind().dialect.identifier_preparer.quote
    return f"{quote(schema)}.{quote(name)}" if schema else quote(name)


def _invalid_leftover(operations: Operations, schema: str | None, name: str) -> bool:
    """An index of that name left INVALID by an interrupted CREATE INDEX CONCURRENTLY."""
    found = operations.get_bind().execute(
        text("SELECT NOT i.indisvalid FROM pg_catalog.pg_index i WHERE i.indexrelid = to_regclass(:n)"),
        {"n": _regclass(operations, schema, name)},
    ).scalar()
    return bool(found)


@Operations.register_operation("create_index_concurrently")
class CreateIndexConcurrentlyOp(MigrateOperation):
    """``CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS``, to run inside
    ``op.get_context().autocommit_block()``; an INVALID index of the same name (a build that
    was interrupted) is dropped first, so running it again finishes the job."""

    def __init__(self, index: alembic_ops.CreateIndexOp) -> None:
        self.index = index

    @classmethod
    def create_index_concurrently(
        cls, operations: Operations, index_name: str, table_name: str,
        columns: Sequence[Any], *, schema: str | None = None, unique: bool = False, **kw: Any,
    ) -> None:
        operations.invoke(cls(alembic_ops.CreateIndexOp(index_name, table_name, columns, schema=schema, unique=unique, **kw)))

    def reverse(self) -> DropIndexConcurrentlyOp:
        return DropIndexConcurrentlyOp(self.index.index_name or "", self.index.table_name, self.index.schema)


@Operations.register_operation("drop_index_concurrently")
class DropIndexConcurrentlyOp(MigrateOperation):
    """``DROP INDEX CONCURRENTLY IF EXISTS``, inside ``autocommit_block()``."""

    def __init__(self, index_name: str, table_name: str, schema: str | None = None) -> None:
        self.index_name, self.table_name, self.schema = index_name, table_name, schema

    @classmethod
    def drop_index_concurrently(
        cls, operations: Operations, index_name: str, table_name: str, *, schema: str | None = None
    ) -> None:
        operations.invoke(cls(index_name, table_name, schema))


@Operations.register_operation("require_unique")
class RequireUniqueOp(MigrateOperation):
    """Refuse, before the revision changes anything (so nothing of it stays), to go on when live
    rows share the key of a unique index about to be built CONCURRENTLY: the build would fail
    late and leave an INVALID index. Names a few duplicate keys.

    It runs first, under ACCESS SHARE only (writers go on), so the columns this revision adds do
    not exist yet: ``new_columns`` are read as NULL, which is what the existing rows get."""

    def __init__(self, index: alembic_ops.CreateIndexOp, new_columns: Sequence[str] = ()) -> None:
        self.index = index
        self.new_columns = list(new_columns)

    @classmethod
    def require_unique(
        cls, operations: Operations, index_name: str, table_name: str,
        columns: Sequence[Any], *, schema: str | None = None, new_columns: Sequence[str] = (), **kw: Any,
    ) -> None:
        op = alembic_ops.CreateIndexOp(index_name, table_name, columns, schema=schema, unique=True, **kw)
        operations.invoke(cls(op, new_columns))


@Operations.register_operation("validate_constraint")
class ValidateConstraintOp(MigrateOperation):
    """``ALTER TABLE ... VALIDATE CONSTRAINT`` of a constraint added ``NOT VALID``: the scan
    runs under SHARE UPDATE EXCLUSIVE, reads and writes go on."""

    def __init__(self, constraint_name: str, table_name: str, schema: str | None = None) -> None:
        self.constraint_name, self.table_name, self.schema = constraint_name, table_name, schema

    @classmethod
    def validate_constraint(
        cls, operations: Operations, constraint_name: str, table_name: str, *, schema: str | None = None
    ) -> None:
        operations.invoke(cls(constraint_name, table_name, schema))


@Operations.register_operation("lock_tables")
class LockTablesOp(MigrateOperation):
    """``LOCK TABLE a, b IN ACCESS EXCLUSIVE MODE``, referencing tables before the tables they
    reference: a writer locks its table, then the parent its foreign key checks. A revision
    that altered the parent first and then waited for the child would hold the parent while
    that writer waits on it: a deadlock, which stalls every writer until a timeout breaks it.
    The revision's ALTERs take these locks anyway, until it commits; only the order changes."""

    def __init__(self, tables: Sequence[str], schema: str | None = None) -> None:
        self.tables, self.schema = list(tables), schema

    @classmethod
    def lock_tables(cls, operations: Operations, tables: Sequence[str], *, schema: str | None = None) -> None:
        operations.invoke(cls(tables, schema))


@Operations.register_operation("add_unique_using_index")
class AddUniqueUsingIndexOp(MigrateOperation):
    """``ALTER TABLE ... ADD CONSTRAINT <name> UNIQUE USING INDEX <name>``: the unique index
    already built CONCURRENTLY becomes the constraint (a brief lock, no scan)."""

    def __init__(self, constraint_name: str, table_name: str, schema: str | None = None) -> None:
        self.constraint_name, self.table_name, self.schema = constraint_name, table_name, schema

    @classmethod
    def add_unique_using_index(
        cls, operations: Operations, constraint_name: str, table_name: str, *, schema: str | None = None
    ) -> None:
        operations.invoke(cls(constraint_name, table_name, schema))

    def reverse(self) -> alembic_ops.DropConstraintOp:
        return alembic_ops.DropConstraintOp(self.constraint_name, self.table_name, type_="unique", schema=self.schema)


class AutocommitBlockOp(MigrateOperation):
    """Rendering only: ``with op.get_context().autocommit_block():`` around ``ops``."""

    def __init__(self, ops: list[MigrateOperation]) -> None:
        self.ops = ops


def _duplicates(operations: Operations, op: alembic_ops.CreateIndexOp, new_columns: Sequence[str] = ()) -> list[Any]:
    """Up to five keys that live rows share (NULL keys never clash in a unique index)."""
    index = op.to_index(operations.get_context())
    bind = operations.get_bind()
    quote = bind.dialect.identifier_preparer.quote

    def sql(clause: Any) -> str:
        if isinstance(clause, str):
            return quote(clause)
        return str(clause.compile(dialect=bind.dialect, compile_kwargs={"include_table": False}))

    keys = [sql(e) for e in index.expressions]
    source = _regclass(operations, op.schema, op.table_name)
    if new_columns:
        nulls = ", ".join(f"NULL AS {quote(c)}" for c in new_columns)
        source = f"(SELECT *, {nulls} FROM {source}) AS {quote(op.table_name)}"  # noqa: S608 - quoted
    conditions = [f"({k}) IS NOT NULL" for k in keys]
    where = index.dialect_options["postgresql"].get("where")
    if where is not None:
        conditions.append(f"({where if isinstance(where, str) else sql(where)})")
    listed = ", ".join(keys)
    query = (
        f"SELECT {listed}, count(*) AS n FROM {source} WHERE {' AND '.join(conditions)} "  # noqa: S608
        f"GROUP BY {listed} HAVING count(*) > 1 ORDER BY n DESC LIMIT 5"
    )
    # identifiers quoted, the predicate is the model's own SQL: nothing here comes from data
    return list(bind.execute(text(query.replace(":", r"\:"))).all())


def _refuse_duplicates(operations: Operations, op: alembic_ops.CreateIndexOp, new_columns: Sequence[str] = ()) -> None:
    if operations.get_context().as_sql:
        return  # offline: the build itself fails on duplicates
    rows = _duplicates(operations, op, new_columns)
    if rows:
        keys = ", ".join(f"{tuple(r)[:-1]!r} ×{r.n}" for r in rows)
        raise DuplicateKeysError(
            f"unique index {op.index_name} on {op.table_name} cannot be built: live rows share "
            f"its key, e.g. {keys}. Nothing of this revision was applied. Make those rows unique "
            f"(or soft-delete the extra ones), then run the migration again."
        )


@Operations.implementation_for(RequireUniqueOp)
def _require_unique(operations: Operations, operation: RequireUniqueOp) -> None:
    _refuse_duplicates(operations, operation.index, operation.new_columns)


@Operations.implementation_for(CreateIndexConcurrentlyOp)
def _create_concurrently(operations: Operations, operation: CreateIndexConcurrentlyOp) -> None:
    op = operation.index
    name = op.index_name or ""
    with _unlimited_wait(operations):
        if not operations.get_context().as_sql:
            if _invalid_leftover(operations, op.schema, name):
                _LOG.warning("dropping the INVALID index %s left by an interrupted build", name)
                operations.drop_index(name, op.table_name, schema=op.schema,
                                      postgresql_concurrently=True, if_exists=True)
            if op.unique:
                _refuse_duplicates(operations, op)  # rows written since the check in the transaction
        operations.create_index(name, op.table_name, list(op.columns), schema=op.schema, unique=op.unique,
                                if_not_exists=True, postgresql_concurrently=True, **op.kw)


@Operations.implementation_for(DropIndexConcurrentlyOp)
def _drop_concurrently(operations: Operations, operation: DropIndexConcurrentlyOp) -> None:
    with _unlimited_wait(operations):
        operations.drop_index(operation.index_name, operation.table_name, schema=operation.schema,
                              postgresql_concurrently=True, if_exists=True)


@Operations.implementation_for(LockTablesOp)
def _lock(operations: Operations, operation: LockTablesOp) -> None:
    quote = operations.get_context().impl.dialect.identifier_preparer.quote
    prefix = f"{quote(operation.schema)}." if operation.schema else ""
    names = ", ".join(prefix + quote(t) for t in operation.tables)
    operations.execute(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")


@Operations.implementation_for(AddUniqueUsingIndexOp)
def _unique_using(operations: Operations, operation: AddUniqueUsingIndexOp) -> None:
    quote = operations.get_context().impl.dialect.identifier_preparer.quote
    table = quote(operation.table_name)
    if operation.schema:
        table = f"{quote(operation.schema)}.{table}"
    name = quote(operation.constraint_name)
    operations.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} UNIQUE USING INDEX {name}")


@Operations.implementation_for(ValidateConstraintOp)
def _validate(operations: Operations, operation: ValidateConstraintOp) -> None:
    quote = operations.get_context().impl.dialect.identifier_preparer.quote
    table = quote(operation.table_name)
    if operation.schema:
        table = f"{quote(operation.schema)}.{table}"
    with _unlimited_wait(operations):
        operations.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {quote(operation.constraint_name)}")


# -- rendering -------------------------------------------------------------------------------


def _index_call(autogen_context: AutogenContext, op: alembic_ops.CreateIndexOp, name: str) -> str:
    """Alembic's own ``op.create_index(...)`` text under another operation's name."""
    plain = alembic_ops.CreateIndexOp(op.index_name, op.table_name, op.columns, schema=op.schema,
                                      unique=op.unique, **op.kw)
    rendered = renderers.dispatch(plain)(autogen_context, plain)
    return str(rendered).replace("op.create_index(", f"op.{name}(", 1)


@renderers.dispatch_for(CreateIndexConcurrentlyOp)
def _render_create(autogen_context: AutogenContext, op: CreateIndexConcurrentlyOp) -> str:
    return _index_call(autogen_context, op.index, "create_index_concurrently")


@renderers.dispatch_for(RequireUniqueOp)
def _render_require(autogen_context: AutogenContext, op: RequireUniqueOp) -> str:
    call = _index_call(autogen_context, op.index, "require_unique").replace(", unique=True", "")
    return call[:-1] + f", new_columns={op.new_columns!r})" if op.new_columns else call


def _args(*values: str | None, schema: str | None) -> str:
    tail = f", schema={schema!r}" if schema else ""
    return ", ".join(repr(v) for v in values) + tail


@renderers.dispatch_for(DropIndexConcurrentlyOp)
def _render_drop(autogen_context: AutogenContext, op: DropIndexConcurrentlyOp) -> str:
    return f"op.drop_index_concurrently({_args(op.index_name, op.table_name, schema=op.schema)})"


@renderers.dispatch_for(LockTablesOp)
def _render_lock(autogen_context: AutogenContext, op: LockTablesOp) -> str:
    tail = f", schema={op.schema!r}" if op.schema else ""
    return f"op.lock_tables({op.tables!r}{tail})"


@renderers.dispatch_for(AddUniqueUsingIndexOp)
def _render_unique_using(autogen_context: AutogenContext, op: AddUniqueUsingIndexOp) -> str:
    return f"op.add_unique_using_index({_args(op.constraint_name, op.table_name, schema=op.schema)})"


@renderers.dispatch_for(ValidateConstraintOp)
def _render_validate(autogen_context: AutogenContext, op: ValidateConstraintOp) -> str:
    return f"op.validate_constraint({_args(op.constraint_name, op.table_name, schema=op.schema)})"


@renderers.dispatch_for(AutocommitBlockOp)
def _render_block(autogen_context: AutogenContext, op: AutocommitBlockOp) -> list[str]:
    lines = [
        "# outside the transaction: SHARE UPDATE EXCLUSIVE, reads and writes go on",
        "with op.get_context().autocommit_block():",
    ]
    for inner in op.ops:  # Alembic's printer indents after the colon, the "" ends the block
        rendered = renderers.dispatch(inner)(autogen_context, inner)
        lines.extend(rendered if isinstance(rendered, list) else [rendered])
    return [*lines, ""]
