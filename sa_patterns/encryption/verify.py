"""Start-up check: every encrypted column's keys, resolved and validated before the first row."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Column, MetaData, Table
from sqlalchemy.orm import Mapper, registry

from ..errors import ConfigurationError, SAPatternsError
from .types import EncryptedType

__all__ = ["check_keys", "encrypted_columns"]


def _tables(target: Any) -> list[Table]:
    if isinstance(target, MetaData):
        return list(target.tables.values())
    if isinstance(target, Table):
        return [target]
    if isinstance(target, Mapper):
        return [t for t in target.tables if isinstance(t, Table)]
    if isinstance(target, registry):
        return list(target.metadata.tables.values())
    if hasattr(target, "__table__"):
        return [target.__table__]
    if hasattr(target, "metadata") and isinstance(target.metadata, MetaData):
        return list(target.metadata.tables.values())
    if isinstance(target, Iterable) and not isinstance(target, (str, bytes)):
        return [t for item in target for t in _tables(item)]
    raise ConfigurationError(
        f"check_keys() takes a MetaData, a Table, a declarative base, a registry, a model or a "
        f"mapper (or a list of them), not {type(target).__name__}."
    )


def encrypted_columns(target: Any) -> Iterator[tuple[Table, Column[Any], EncryptedType[Any]]]:
    """Every (table, column, type) encrypted in a MetaData, a declarative base or a model."""
    seen: set[Table] = set()
    for table in _tables(target):
        if table in seen:
            continue
        seen.add(table)
        for column in table.columns:
            if isinstance(column.type, EncryptedType):
                yield table, column, column.type


def _problem(table: Table, column: Column[Any], type_: EncryptedType[Any]) -> str | None:
    try:
        type_.check()
    except SAPatternsError as exc:
        return str(exc.args[0]) if exc.args else type(exc).__name__
    except Exception as exc:  # the application's own provider (a KMS call, a file read) failed
        return f"its keyring provider raised {type(exc).__name__}: {exc}"
    name = type_.blind_index_name
    if type_.blind_index and (name is None or name not in table.c):
        return (
            f"its blind index column {name or column.name + '_bidx'} is missing from the table "
            "(declare the column in the class body or Table(...) call)"
        )
    return None


def check_keys(target: Any) -> int:
    """Validate the keys of every encrypted column of ``target`` now; returns how many.

    Call it once when the application starts, after keys are loaded:
    ``sa_patterns.encryption.check_keys(Base.metadata)``. Each column's keyring is resolved
    (``SA_PATTERNS_KEYS`` read, a deferred provider called), so a missing variable, a malformed
    or wrong-length key, an unknown active key, or a blind index without index keys raises one
    :class:`~sa_patterns.errors.ConfigurationError` naming each column and what is wrong, before
    any request, instead of at the first row. Per-tenant providers (one ``KeyContext``
    argument) are called per value inside a tenant's scope and are not resolved here.
    """
    problems: list[str] = []
    count = 0
    for table, column, type_ in encrypted_columns(target):
        count += 1
        problem = _problem(table, column, type_)
        if problem is not None:
            problems.append(f"{table.name}.{column.name}: {problem}")
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise ConfigurationError(
            f"encryption keys are not usable for {len(problems)} column(s):\n{listed}"
        )
    return count
