"""Batch inserts and upserts: ``INSERT … ON CONFLICT … RETURNING``, chunked.

One multi-row ``INSERT`` is far cheaper than one round trip per ORM object, and
``ON CONFLICT DO NOTHING`` / ``DO UPDATE SET col = EXCLUDED.col`` lets PostgreSQL decide
atomically whether a row is new, with no SELECT-then-INSERT race. The protocol allows at most
65,535 bound parameters per statement, so rows are sent in chunks of at most
``65535 // columns`` rows. Every row is checked *before* anything is sent, and all chunks run in
one SAVEPOINT: a bad row or a failing chunk leaves nothing written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from sqlalchemy import Column, inspect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.postgresql.dml import Insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from .encryption.blind_index import encrypted_type
from .errors import ConfigurationError, ConflictError, InvalidData, TenantViolation
from .soft_delete import SoftDeleteMixin
from .tenancy import is_tenant_table

__all__ = ["MAX_PARAMETERS", "insert_many", "insert_many_async"]

T = TypeVar("T")
OnConflict = Literal["error", "ignore", "update"]

#: PostgreSQL's wire protocol counts bound parameters in an Int16: at most 65,535 per statement.
MAX_PARAMETERS = 65_535


def _required(column: Column[Any]) -> bool:
    """A value must be supplied: NOT NULL, no default of any kind, not the serial/identity PK,
    not a tenant model's ``tenant_id`` (the session fills it in)."""
    if column.nullable or column.computed is not None or column.identity is not None:
        return False
    if column.name == "tenant_id" and is_tenant_table(column.table):
        return False
    if column.default is not None or column.server_default is not None:
        return False
    return column.table.autoincrement_column is not column


def _plan(
    model: type[Any],
    rows: Sequence[Mapping[str, Any]],
    on_conflict: OnConflict,
    conflict: Sequence[str] | str | None,
    update: Sequence[str] | None,
    chunk_size: int | None,
) -> tuple[Insert, list[dict[str, Any]], int]:
    if on_conflict not in ("error", "ignore", "update"):
        raise ConfigurationError(
            f"insert_many(on_conflict={on_conflict!r}): use 'error', 'ignore' or 'update'."
        )
    mapper = inspect(model)
    keys = {attr.key: attr.columns[0] for attr in mapper.column_attrs if len(attr.columns) == 1}
    table_columns = {key: col for key, col in keys.items() if isinstance(col, Column)}
    required = [k for k, c in table_columns.items() if _required(c)]
    clean: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InvalidData(f"insert_many: row {index} is a {type(row).__name__}, not a mapping.")
        unknown = sorted(set(row) - set(table_columns))
        if unknown:
            raise InvalidData(
                f"insert_many({model.__name__}): row {index} has unknown key {unknown[0]!r}; "
                f"known keys: {', '.join(sorted(table_columns))}. Nothing was written."
            )
        for key in required:
            if key not in row:
                raise InvalidData(
                    f"insert_many({model.__name__}): row {index} is missing required key "
                    f"{key!r} (NOT NULL, no default). Nothing was written."
                )
        clean.append(dict(row))

    pk = [mapper.get_property_by_column(c).key for c in mapper.primary_key]
    target: list[str] | None = None
    constraint: str | None = None
    if isinstance(conflict, str):
        constraint = conflict
    elif conflict is not None:
        target = list(conflict)
        missing = [k for k in target if k not in table_columns]
        if missing:
            raise ConfigurationError(
                f"insert_many(conflict=...): {model.__name__} has no column {missing[0]!r}; pass "
                "attribute names of a unique index, or a constraint name as a string."
            )
    elif on_conflict == "update":
        target = list(pk)

    # ON CONFLICT (...) names columns, which may differ from attribute names.
    arbiter = [table_columns[k].name for k in target] if target is not None else None
    stmt = pg_insert(model)
    if on_conflict == "ignore":
        stmt = stmt.on_conflict_do_nothing(index_elements=arbiter, constraint=constraint)
    elif on_conflict == "update":
        if target is not None:
            _check_duplicates(model, clean, target)
        written = sorted({k for row in clean for k in row})
        skip = set(target or ()) | set(pk)
        if is_tenant_table(mapper.local_table):
            skip.add("tenant_id")  # rows never move between tenants
        columns = list(update) if update is not None else [k for k in written if k not in skip]
        bad = [c for c in columns if c not in table_columns]
        if bad:
            raise ConfigurationError(f"insert_many(update=...): {model.__name__} has no {bad[0]!r}.")
        if not columns:
            raise ConfigurationError(
                "insert_many(on_conflict='update') has no column to update: pass update=[...] or "
                "use on_conflict='ignore'."
            )
        columns += _blind_indexes(columns, table_columns)
        excluded = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=arbiter,
            constraint=constraint,
            set_={table_columns[c].name: excluded[table_columns[c].name] for c in columns},
        )
    width = max((len(row) for row in clean), default=1) or 1
    limit = MAX_PARAMETERS // width
    size = min(chunk_size or limit, limit)
    if size < 1:
        raise ConfigurationError("insert_many(chunk_size=...) must be >= 1.")
    return stmt, clean, size


def _blind_indexes(columns: Sequence[str], table_columns: Mapping[str, Column[Any]]) -> list[str]:
    """The blind-index companions of the encrypted columns an upsert sets: ``ON CONFLICT DO
    UPDATE`` runs no column ``onupdate``, so ``EXCLUDED`` (hashed by the INSERT) is copied too."""
    by_name = {col.name: key for key, col in table_columns.items()}
    extra: list[str] = []
    for key in columns:
        type_ = encrypted_type(table_columns[key].type)
        companion = type_.blind_index_name if type_ is not None and type_.blind_index else None
        if companion in by_name and by_name[companion] not in columns and by_name[companion] not in extra:
            extra.append(by_name[companion])
    return extra


def _check_duplicates(model: type[Any], rows: Sequence[Mapping[str, Any]], target: Sequence[str]) -> None:
    # ON CONFLICT DO UPDATE cannot touch the same row twice in one statement (SQLSTATE 21000).
    seen: dict[tuple[Any, ...], int] = {}
    for index, row in enumerate(rows):
        if not all(k in row for k in target):
            continue
        value = tuple(row[k] for k in target)
        if value in seen:
            raise InvalidData(
                f"insert_many({model.__name__}, on_conflict='update'): rows {seen[value]} and "
                f"{index} have the same conflict key {dict(zip(target, value, strict=False))}; an upsert cannot "
                "update one row twice. Deduplicate the input. Nothing was written."
            )
        seen[value] = index


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def insert_many(
    session: Session,
    model: type[T],
    rows: Sequence[Mapping[str, Any]],
    *,
    on_conflict: OnConflict = "error",
    conflict: Sequence[str] | str | None = None,
    update: Sequence[str] | None = None,
    chunk_size: int | None = None,
    returning: bool = True,
) -> list[T]:
    """Insert ``rows`` (dicts keyed by attribute name) and return the written ORM objects.

    ``on_conflict``: ``"error"`` (default: a duplicate raises), ``"ignore"`` (``DO NOTHING``;
    skipped rows are not returned) or ``"update"`` (``DO UPDATE SET`` the supplied non-key
    columns, or ``update=[...]``, from ``EXCLUDED``). ``conflict`` is the arbiter: a list of
    column keys (default: the primary key) or a constraint name. ``chunk_size`` is capped so a
    statement never exceeds 65,535 parameters. ``returning=False`` skips building objects.
    """
    stmt, clean, size = _plan(model, rows, on_conflict, conflict, update, chunk_size)
    if not clean:
        return []
    guard = _guarded(model, on_conflict)
    out: list[T] = []
    with session.begin_nested():
        for chunk in _chunks(clean, size):
            if returning:
                result = session.scalars(
                    stmt.returning(model),
                    chunk,
                    execution_options={"populate_existing": True, "insertmanyvalues_page_size": size},
                )
                written = result.all()
                _check_written(model, guard, chunk, len(written))
                out.extend(written)
            elif guard:
                keys = session.execute(
                    stmt.returning(*inspect(model).primary_key), chunk,
                    execution_options={"insertmanyvalues_page_size": size},
                ).all()
                _check_written(model, guard, chunk, len(keys))
            else:
                session.execute(stmt, chunk, execution_options={"insertmanyvalues_page_size": size})
    return out


def _guarded(model: type[Any], on_conflict: OnConflict) -> bool:
    """Whether an upsert must prove every row was written: the session's hooks let ``DO
    UPDATE`` touch only the tenant's own, live rows, so a row whose key another tenant's row or
    a soft-deleted row holds is neither inserted nor updated."""
    return on_conflict == "update" and (
        is_tenant_table(inspect(model).local_table) or issubclass(model, SoftDeleteMixin)
    )


def _check_written(model: type[Any], guard: bool, chunk: Sequence[Any], written: int) -> None:
    if not guard or written >= len(chunk):
        return
    held = "another tenant's row or a soft-deleted row" if issubclass(
        model, SoftDeleteMixin) else "another tenant's row"
    message = (
        f"insert_many({model.__name__}, on_conflict='update'): {len(chunk) - written} row(s) "
        f"have the key of {held}, which an upsert may not touch. Nothing was written."
    )
    if is_tenant_table(inspect(model).local_table):
        raise TenantViolation(message)
    raise ConflictError(message + " Restore or hard-delete the deleted row first.")


async def insert_many_async(
    session: AsyncSession,
    model: type[T],
    rows: Sequence[Mapping[str, Any]],
    *,
    on_conflict: OnConflict = "error",
    conflict: Sequence[str] | str | None = None,
    update: Sequence[str] | None = None,
    chunk_size: int | None = None,
    returning: bool = True,
) -> list[T]:
    """The async twin of :func:`insert_many`."""
    stmt, clean, size = _plan(model, rows, on_conflict, conflict, update, chunk_size)
    if not clean:
        return []
    guard = _guarded(model, on_conflict)
    out: list[T] = []
    async with session.begin_nested():
        for chunk in _chunks(clean, size):
            if returning:
                result = await session.scalars(
                    stmt.returning(model),
                    chunk,
                    execution_options={"populate_existing": True, "insertmanyvalues_page_size": size},
                )
                written = result.all()
                _check_written(model, guard, chunk, len(written))
                out.extend(written)
            elif guard:
                keys = (await session.execute(
                    stmt.returning(*inspect(model).primary_key), chunk,
                    execution_options={"insertmanyvalues_page_size": size},
                )).all()
                _check_written(model, guard, chunk, len(keys))
            else:
                await session.execute(
                    stmt, chunk, execution_options={"insertmanyvalues_page_size": size}
                )
    return out
