"""The error hierarchy of sa_patterns.

Every error the toolkit raises on purpose subclasses :class:`SAPatternsError`, so callers can
catch the toolkit's refusals apart from driver or SQLAlchemy failures. Each class carries a short
``code`` (as SQLAlchemy's errors do) that the troubleshooting page of the docs is keyed by.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "BackfillError",
    "ConcurrencyConflict",
    "ConfigurationError",
    "ConflictError",
    "DatabaseWallDown",
    "DatabaseWallWarning",
    "DecryptionError",
    "DowngradeRefused",
    "ForeignKeyViolation",
    "IntegrityViolation",
    "InvalidCursor",
    "InvalidData",
    "KeyNotFound",
    "MissingGrant",
    "NPlusOneDetected",
    "NotFound",
    "ReadOnlyError",
    "SAPatternsError",
    "TenantRequired",
    "TenantViolation",
    "UnsupportedStatement",
]

class SAPatternsError(Exception):
    """Base class of every error raised by sa_patterns."""

    code: str = "sap00"

    def __str__(self) -> str:
        # The code keys the troubleshooting page (docs/troubleshooting.md).
        return f"{super().__str__()} [{self.code}]"


class ConfigurationError(SAPatternsError):
    """A mixin, type or function was used wrongly; the message says what to change."""

    code = "sap01"


class TenantRequired(SAPatternsError):
    """A tenant-scoped model was queried or written with no tenant in scope (fail closed)."""

    code = "sap02"


class TenantViolation(SAPatternsError):
    """A write tried to create or move a row into a tenant other than the one in scope."""

    code = "sap03"


class DecryptionError(SAPatternsError):
    """A stored value could not be authenticated or decrypted; names the table and column."""

    code = "sap04"

    def __init__(self, message: str, *, table: str | None = None, column: str | None = None):
        super().__init__(message)
        self.table = table
        self.column = column


class KeyNotFound(DecryptionError):
    """A ciphertext names a key id that the keyring does not hold."""

    code = "sap05"

    def __init__(
        self,
        message: str,
        *,
        key_id: str | None = None,
        table: str | None = None,
        column: str | None = None,
    ):
        super().__init__(message, table=table, column=column)
        self.key_id = key_id


class IntegrityViolation(SAPatternsError):
    """A constraint of the database refused a write; carries the SQLSTATE and constraint."""

    code = "sap06"

    def __init__(
        self,
        message: str,
        *,
        constraint: str | None = None,
        table: str | None = None,
        columns: Sequence[str] = (),
        values: Mapping[str, Any] | None = None,
        sqlstate: str | None = None,
    ):
        super().__init__(message)
        self.constraint = constraint
        self.table = table
        self.columns = tuple(columns)
        self.values = dict(values) if values is not None else None
        self.sqlstate = sqlstate


class ConflictError(IntegrityViolation):
    """A unique constraint (or a restore onto a taken unique key) refused the write."""

    code = "sap07"


class ForeignKeyViolation(IntegrityViolation):
    """A foreign key refused the write: a referenced row is missing or still referenced."""

    code = "sap08"


class NotFound(SAPatternsError):
    """The row asked for does not exist (or is hidden by tenancy or soft delete)."""

    code = "sap09"


class ConcurrencyConflict(SAPatternsError):
    """Another writer got there first (optimistic concurrency); reload and retry."""

    code = "sap10"


class ReadOnlyError(ConfigurationError):
    """An ORM write was attempted on a read-only mapped class (a view)."""

    code = "sap11"


class UnsupportedStatement(ConfigurationError):
    """A statement shape the tenant or soft-delete wall cannot scope reliably; refused rather
    than run unfiltered. The message names the supported form to use instead."""

    code = "sap12"


class DatabaseWallDown(ConfigurationError):
    """``install(..., wall="strict")`` found that the connection's role skips row-level security
    (a superuser, ``BYPASSRLS``, or the owner of a table whose RLS is not forced)."""

    code = "sap13"


class MissingGrant(ConfigurationError):
    """The connection's role lacks a privilege a statement needs (SQLSTATE 42501); the message
    names the ``GRANT`` to add (the generated grants give the app role what it needs)."""

    code = "sap14"


class DatabaseWallWarning(UserWarning):
    """The same finding as :class:`DatabaseWallDown`, under the default ``wall="warn"``: the ORM
    filter still applies, but raw SQL and anything past it is not stopped by the database."""


class InvalidCursor(SAPatternsError, ValueError):
    """A pagination cursor was forged, truncated, or made for a different ordering."""

    code = "sap40"


class InvalidData(SAPatternsError, ValueError):
    """Data refused before it reached the database (a typed JSON value, a batch row); the
    message names the column or the row index and key."""

    code = "sap41"


class NPlusOneDetected(SAPatternsError, AssertionError):
    """A block ran more statements than allowed, or lazy-loaded a relationship in a loop."""

    code = "sap42"


class BackfillError(SAPatternsError):
    """A backfill stopped: a batch kept failing, or another run moved the same backfill. Every
    batch before it is committed; running it again resumes there."""

    code = "sap50"


class DowngradeRefused(SAPatternsError):
    """A downgrade the toolkit will not run online (a partitioned table made plain again needs
    a copy of every row); the message says what to do instead."""

    code = "sap53"
