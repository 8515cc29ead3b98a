"""What one pattern contributes to an installed session, as one explicit object.

Each pattern module defines a ``PATTERN``; :func:`sa_patterns.install` composes the patterns it
is given, in order. A pattern never registers anything itself, and importing it changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session
from sqlalchemy.orm.interfaces import ORMOption
from sqlalchemy.sql import ColumnElement

if TYPE_CHECKING:  # context.py defines PATTERN with this module's class
    from .context import StatementContext

__all__ = ["BulkCheck", "CriteriaHook", "FromCriteriaHook", "Listener", "Pattern"]

#: ``(event name, listener)`` or ``(event name, listener, listen keywords)``
Listener = tuple[str, Callable[..., Any]] | tuple[str, Callable[..., Any], dict[str, Any]]
#: The ORM options (loader criteria) a statement needs.
CriteriaHook = Callable[["StatementContext"], Iterable[ORMOption]]
#: The conditions a table (or an alias of one) inside an explicit join must meet.
FromCriteriaHook = Callable[["StatementContext", Any], list[ColumnElement[bool]]]
#: Called by the legacy ``Session.bulk_*`` methods, which skip every session event: raise to
#: refuse, return True to send the mappings through the 2.0 statements the hooks scope.
BulkCheck = Callable[[Session, str, Any], bool]


@dataclass(frozen=True)
class Pattern:
    """The session-side half of one pattern."""

    name: str
    listeners: tuple[Listener, ...] = ()
    loader_criteria: CriteriaHook | None = None
    from_criteria: FromCriteriaHook | None = None
    bulk_check: BulkCheck | None = None
