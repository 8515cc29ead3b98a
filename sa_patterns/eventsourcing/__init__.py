"""Event sourcing and CQRS read models on PostgreSQL.

``EventMixin`` declares the append-only log, ``EventStore`` appends with optimistic concurrency
and loads aggregates (with snapshots), ``Projection`` keeps read models, synchronously in the
appending transaction or asynchronously through ``ProjectionRunner``. See
``docs/event-sourcing.md``.
"""

from .events import EventRegistry, RecordedEvent, Upcaster
from .projections import Projection
from .runner import AsyncProjectionRunner, BatchResult, ProjectionRunner
from .store import Aggregate, AsyncEventStore, EventStore, VersionConflict
from .tables import CheckpointMixin, EventMixin, SnapshotMixin

__all__ = [
    "Aggregate",
    "AsyncEventStore",
    "AsyncProjectionRunner",
    "BatchResult",
    "CheckpointMixin",
    "EventMixin",
    "EventRegistry",
    "EventStore",
    "Projection",
    "ProjectionRunner",
    "RecordedEvent",
    "SnapshotMixin",
    "Upcaster",
    "VersionConflict",
]
