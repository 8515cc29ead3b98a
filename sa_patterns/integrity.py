"""Turn PostgreSQL constraint failures into the toolkit's errors, by SQLSTATE, never by text.

PostgreSQL reports every refused write with a five-character SQLSTATE (``23505`` unique,
``23503`` foreign key, ``23502`` not null, ``23514`` check, ``23P01`` exclusion) and structured
diagnostics (``constraint_name``, ``table_name``, ``column_name``) that psycopg exposes as
``exc.diag``. Those fields are stable across server versions and locales; the English message is
not, so it is never parsed. The columns of a constraint come from the catalog, looked up by
constraint name with bound parameters on a *fresh* connection (the failed transaction cannot
run queries any more).

``translate()`` works as a context manager (sync and async) and as a decorator (sync and async)::

    with translate(session):
        session.add(User(email="taken@example.com"))
        session.flush()
    # -> ConflictError(constraint="users_email_key", columns=("email",))
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar, cast, overload

from sqlalchemy import Engine, Select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from .errors import ConflictError, ForeignKeyViolation, IntegrityViolation, NotFound

__all__ = [
    "SQLSTATES",
    "get_or_404",
    "get_or_404_async",
    "one_or_404",
    "one_or_404_async",
    "sqlstate_of",
    "to_integrity_error",
    "translate",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: The SQLSTATEs this module translates, and what they mean.
SQLSTATES: Mapping[str, str] = {
    "23505": "unique_violation",
    "23P01": "exclusion_violation",
    "23503": "foreign_key_violation",
    "23502": "not_null_violation",
    "23514": "check_violation",
    "23001": "restrict_violation",
}

Bind = Session | AsyncSession | Engine | AsyncEngine | Connection | AsyncConnection

# Columns of a constraint (pg_constraint) or, for a bare unique index, of the index, in key order.
_COLUMNS_SQL = text(
    """
    SELECT a.attname
    FROM pg_catalog.pg_class t
    JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
    JOIN LATERAL (
        SELECT c.conkey AS keys FROM pg_catalog.pg_constraint c
         WHERE c.conrelid = t.oid AND c.conname = :name
        UNION ALL
        SELECT (i.indkey::int2[])[0:i.indnkeyatts - 1] FROM pg_catalog.pg_index i
          JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
         WHERE i.indrelid = t.oid AND ic.relname = :name
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c2
                            WHERE c2.conrelid = t.oid AND c2.conname = :name)
    ) k ON NOT (0 = ANY (k.keys))  -- an expression (attnum 0) in the key: no column list at all
    JOIN LATERAL unnest(k.keys) WITH ORDINALITY AS u(attnum, pos) ON true
    JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = u.attnum
    WHERE t.relname = :table AND (CAST(:schema AS text) IS NULL OR n.nspname = :schema)
    ORDER BY u.pos
    """
)


def _driver_error(exc: BaseException) -> Any:
    """The psycopg error inside a SQLAlchemy ``DBAPIError`` (or the error itself)."""
    return exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error (wrapped by SQLAlchemy or not), else ``None``."""
    state = getattr(_driver_error(exc), "sqlstate", None)
    return state if isinstance(state, str) else None


def _values(exc: BaseException, columns: Sequence[str]) -> dict[str, Any] | None:
    """Values of ``columns`` from the statement's own parameters (single-row statements only)."""
    params = getattr(exc, "params", None)
    if not columns or not isinstance(params, Mapping):
        return None
    if not all(c in params for c in columns):
        return None
    return {c: params[c] for c in columns}


def _sync_engine(bind: Bind) -> Engine | None:
    if isinstance(bind, AsyncSession):
        bind = bind.sync_session
    if isinstance(bind, Session):
        got = bind.get_bind()
        return got.engine if isinstance(got, Connection) else got
    if isinstance(bind, AsyncEngine | AsyncConnection):
        return None  # looked up asynchronously by the caller
    return bind.engine


def _async_engine(bind: Bind) -> AsyncEngine | None:
    if isinstance(bind, AsyncSession):
        got = bind.bind
        if isinstance(got, AsyncConnection):
            return got.engine
        return got if isinstance(got, AsyncEngine) else None
    if isinstance(bind, AsyncConnection):
        return bind.engine
    return bind if isinstance(bind, AsyncEngine) else None


def _lookup_params(diag: Any) -> dict[str, Any] | None:
    name, table = getattr(diag, "constraint_name", None), getattr(diag, "table_name", None)
    if not name or not table:
        return None
    return {"name": name, "table": table, "schema": getattr(diag, "schema_name", None)}


def _columns_sync(bind: Bind | None, diag: Any) -> tuple[str, ...]:
    params = _lookup_params(diag)
    engine = _sync_engine(bind) if bind is not None else None
    if params is None or engine is None:
        return ()
    with engine.connect() as conn:
        return tuple(conn.execute(_COLUMNS_SQL, params).scalars())


async def _columns_async(bind: Bind | None, diag: Any) -> tuple[str, ...]:
    params = _lookup_params(diag)
    engine = _async_engine(bind) if bind is not None else None
    if engine is None:
        return _columns_sync(bind, diag)
    if params is None:
        return ()
    async with engine.connect() as conn:
        return tuple((await conn.execute(_COLUMNS_SQL, params)).scalars())


def to_integrity_error(
    exc: BaseException, columns: Sequence[str] = (), *, include_values: bool = False
) -> IntegrityViolation | None:
    """The toolkit error for a constraint failure, or ``None`` when ``exc`` is not one.

    ``columns`` are the constraint's columns when known (``translate`` looks them up); the
    not-null column always comes from the server's diagnostics.
    """
    state = sqlstate_of(exc)
    if state not in SQLSTATES:
        return None
    diag = getattr(_driver_error(exc), "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    table = getattr(diag, "table_name", None)
    column = getattr(diag, "column_name", None)
    if not columns and column:
        columns = (column,)
    cols = ", ".join(columns) or "?"
    where = f"{table}" if table else "the table"
    values = _values(exc, columns) if include_values else None
    kwargs: dict[str, Any] = {
        "constraint": constraint,
        "table": table,
        "columns": columns,
        "values": values,
        "sqlstate": state,
    }
    if state in ("23505", "23P01"):
        kind = "unique" if state == "23505" else "exclusion"
        return ConflictError(
            f"{constraint or kind + ' constraint'}: a row with the same ({cols}) already exists in "
            f"{where} ({kind} violation, SQLSTATE {state}). Answer 409 Conflict, or write with "
            "insert_many(..., on_conflict='ignore'|'update') if duplicates are expected.",
            **kwargs,
        )
    if state in ("23503", "23001"):
        return ForeignKeyViolation(
            f"{constraint or 'foreign key'} on {where} ({cols}): the referenced row does not "
            "exist, or a row still referenced elsewhere was deleted/changed "
            f"(SQLSTATE {state}). Create the parent first, or delete the children first / use "
            "ON DELETE CASCADE.",
            **kwargs,
        )
    if state == "23502":
        return IntegrityViolation(
            f"{where}.{cols} may not be NULL (not-null violation, SQLSTATE 23502). Give it a "
            "value, or a default in the model / server_default.",
            **kwargs,
        )
    return IntegrityViolation(
        f"check constraint {constraint or '?'} on {where} refused the row (SQLSTATE 23514). "
        "Fix the value so the CHECK expression holds.",
        **kwargs,
    )


class translate:
    """Re-raise database constraint failures as :class:`~sa_patterns.errors.ConflictError`,
    :class:`~sa_patterns.errors.ForeignKeyViolation` or
    :class:`~sa_patterns.errors.IntegrityViolation` (not null, check).

    ``bind`` (a session, engine or connection, sync or async) is used only to look the
    constraint's columns up in the catalog on a fresh connection; without it ``columns`` is
    empty except for not-null errors. ``include_values=True`` copies the offending values from
    the statement's own bound parameters (single-row statements only); it is off by default
    because error messages end up in logs. Other errors pass through untouched.

    Use it as ``with``/``async with`` block or as decorator of a sync or async function.
    """

    def __init__(self, bind: Bind | None = None, *, include_values: bool = False) -> None:
        self.bind = bind
        self.include_values = include_values

    def __enter__(self) -> translate:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or sqlstate_of(exc) not in SQLSTATES:
            return
        diag = getattr(_driver_error(exc), "diag", None)
        error = to_integrity_error(
            exc, _columns_sync(self.bind, diag), include_values=self.include_values
        )
        if error is not None:
            raise error from exc

    async def __aenter__(self) -> translate:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or sqlstate_of(exc) not in SQLSTATES:
            return
        diag = getattr(_driver_error(exc), "diag", None)
        columns = await _columns_async(self.bind, diag)
        error = to_integrity_error(exc, columns, include_values=self.include_values)
        if error is not None:
            raise error from exc

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with translate(self.bind, include_values=self.include_values):
                    return await fn(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with translate(self.bind, include_values=self.include_values):
                return fn(*args, **kwargs)

        return cast(F, wrapper)


def _not_found(model: type[Any], ident: Any) -> NotFound:
    return NotFound(
        f"{model.__name__} with primary key {ident!r} not found (or hidden by tenancy / soft "
        "delete). Answer 404, or check the tenant in scope."
    )


def get_or_404(session: Session, model: type[T], ident: Any, **kwargs: Any) -> T:
    """``session.get(model, ident)`` or :class:`~sa_patterns.errors.NotFound`."""
    found = session.get(model, ident, **kwargs)
    if found is None:
        raise _not_found(model, ident)
    return found


async def get_or_404_async(session: AsyncSession, model: type[T], ident: Any, **kwargs: Any) -> T:
    """The async twin of :func:`get_or_404`."""
    found = await session.get(model, ident, **kwargs)
    if found is None:
        raise _not_found(model, ident)
    return found


def _describe(statement: Select[Any]) -> str:
    entity = statement.column_descriptions[0].get("name") if statement.column_descriptions else None
    return str(entity or "row")


@overload
def one_or_404(session: Session, statement: Select[tuple[T]]) -> T: ...
@overload
def one_or_404(session: Session, statement: Select[Any]) -> Any: ...
def one_or_404(session: Session, statement: Select[Any]) -> Any:
    """The single scalar result of ``statement`` or :class:`~sa_patterns.errors.NotFound`."""
    found = session.scalars(statement.limit(2)).one_or_none()
    if found is None:
        raise NotFound(f"no {_describe(statement)} matches the query. Answer 404.")
    return found


async def one_or_404_async(session: AsyncSession, statement: Select[Any]) -> Any:
    """The async twin of :func:`one_or_404`."""
    found = (await session.scalars(statement.limit(2))).one_or_none()
    if found is None:
        raise NotFound(f"no {_describe(statement)} matches the query. Answer 404.")
    return found

