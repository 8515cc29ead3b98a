"""Projections: handlers that turn events into read-model rows (the "Q" side of CQRS).

One :class:`Projection` serves both delivery modes:

* **synchronous**: pass it to ``EventStore(..., projections=[p])`` and its handlers run in the
  appending transaction, so the read model commits (or rolls back) with the events;
* **asynchronous**: give it to a :class:`~sa_patterns.eventsourcing.runner.ProjectionRunner`,
  which applies events after they commit, tracking its position in a checkpoint table.

Handlers are plain sync functions ``fn(session, recorded_event)``. The async APIs call them
through ``run_sync``, so one handler works everywhere. A handler must only touch the database
through the session it is given: that is what puts its writes in the right transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from ..errors import ConfigurationError
from .events import RecordedEvent

__all__ = ["Handler", "Projection", "Reset"]

#: ``fn(session, recorded_event)``; ``recorded_event.data`` is the typed event.
Handler = Callable[[Session, RecordedEvent[Any]], None]
#: ``fn(session)``: empty the read model before a rebuild.
Reset = Callable[[Session], None]
H = TypeVar("H", bound=Handler)


class Projection:
    """A named read model: handlers per event class, and how to empty it for a rebuild.

    ::

        balances = Projection("balances")

        @balances.on(Deposited, Withdrawn)
        def _(session, recorded):
            ...

        @balances.resetter
        def _(session):
            session.execute(delete(Balance))

    ``name`` keys the projection's checkpoint row, so renaming a projection rebuilds it.
    """

    def __init__(self, name: str, *, reset: Reset | None = None) -> None:
        if not name or len(name) > 200:
            raise ConfigurationError(
                "a projection needs a name of 1 to 200 characters; it keys its checkpoint row."
            )
        self.name = name
        self.reset: Reset | None = reset
        self._handlers: dict[type[Any], list[Handler]] = {}

    def __repr__(self) -> str:
        return f"Projection({self.name!r})"

    def on(self, *event_types: type[Any]) -> Callable[[H], H]:
        """Decorator: call the function for events of these classes (in registration order)."""
        if not event_types:
            raise ConfigurationError("Projection.on() needs at least one event class.")

        def decorate(fn: H) -> H:
            for event_type in event_types:
                self._handlers.setdefault(event_type, []).append(fn)
            return fn

        return decorate

    def resetter(self, fn: Reset) -> Reset:
        """Decorator: the function emptying the read model (needed by ``rebuild``)."""
        self.reset = fn
        return fn

    @property
    def event_types(self) -> Iterable[type[Any]]:
        return tuple(self._handlers)

    def handles(self, event_type: type[Any]) -> bool:
        return event_type in self._handlers

    def apply(self, session: Session, event: RecordedEvent[Any]) -> None:
        """Run the handlers for one recorded event (no-op for classes it does not handle)."""
        for handler in self._handlers.get(type(event.data), ()):
            handler(session, event)
