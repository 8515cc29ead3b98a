"""Start-up check: resolve every encrypted column's keyring before the first row."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Column, MetaData, Table

from .types import EncryptedType

__all__ = ["check_keys", "encrypted_columns"]


def encrypted_columns(target: Any) -> Iterator[tuple[Table, Column[Any], EncryptedType[Any]]]:
    """Every (table, column, type) encrypted in a MetaData, a declarative base or a model."""
    if isinstance(target, MetaData):
        tables = list(target.tables.values())
    elif isinstance(target, Table):
        tables = [target]
    elif hasattr(target, "__table__"):
        tables = [target.__table__]
    elif hasattr(target, "metadata"):
        tables = list(target.metadata.tables.values())
    else:
        raise TypeError(f"check_keys() takes a MetaData, a Table, a base or a model, not {target!r}")
    for table in tables:
        for column in table.columns:
            if isinstance(column.type, EncryptedType):
                yield table, column, column.type


def check_keys(target: Any) -> int:
    """Resolve the keyring of every encrypted column of ``target`` now; returns how many.

    Call it at application start-up (after keys are loaded): a missing ``SA_PATTERNS_KEYS``, a
    key of the wrong length or a blind index without index keys then raises
    :class:`~sa_patterns.errors.ConfigurationError` before any request, not at the first row.
    """
    count = 0
    for _, _, type_ in encrypted_columns(target):
        type_.check()
        count += 1
    return count
