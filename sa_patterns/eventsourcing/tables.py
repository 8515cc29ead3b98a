"""Mixins declaring the event log, the snapshot table and the projection checkpoints.

They go on the application's own ``DeclarativeBase`` (no base classes are shipped), so Alembic
autogenerate sees ordinary tables. The event table gets, from :class:`EventMixin`:

* ``UNIQUE (aggregate_id, version)``: the database, not a read-then-write, decides which of two
  concurrent appends at the same version wins;
* a self-referencing foreign key ``(aggregate_id, previous_version) → (aggregate_id, version)``
  on a generated ``previous_version = version - 1``: version ``n`` cannot exist without
  ``n - 1``, so a stream has no gaps even when written by raw SQL;
* ``transaction_id`` (the writing transaction's ``pg_current_xact_id()``), the catch-up order;
* indexes on ``event_type``, ``recorded_at`` and ``(transaction_id, id)``; the unique index
  serves lookups by aggregate (its leading column), so no duplicate index is created;
* a statement trigger that ``NOTIFY``s the table's channel once per appending transaction,
  and (``__append_only__ = True``, the default) a statement trigger refusing UPDATE and DELETE.

With a ``tenant_id`` column (``TenantMixin``), streams are keyed by ``(tenant_id, aggregate_id)``:
the unique key, the gap-free foreign key and the snapshot key all lead with ``tenant_id``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, Mapper, mapped_column

from .._mapping import own_table, refuse_sqlmodel, when_mapped
from ..errors import ConfigurationError
from ..schema import Function, Trigger, ident, qualified, quote_literal, register

__all__ = [
    "CheckpointMixin",
    "EventMixin",
    "SnapshotMixin",
    "constraint_names",
    "event_channel",
    "stream_key",
]

TENANT_COLUMN = "tenant_id"
TRANSACTION_ID_DEFAULT = "((pg_current_xact_id())::text)::bigint"


def stream_key(table: Table) -> list[str]:
    """The columns identifying one stream: ``aggregate_id``, led by ``tenant_id`` if present."""
    return ([TENANT_COLUMN] if TENANT_COLUMN in table.c else []) + ["aggregate_id"]


def constraint_names(table: Table) -> dict[str, str]:
    """Names of the constraints the store maps SQLSTATEs from. Every name derived from a table's
    goes through :func:`~sa_patterns.schema.ident`, so a table name of any length is fine."""
    return {"unique": ident(table.name, "stream_key"), "gapless": ident(table.name, "gapless_fk")}


def snapshot_key_name(table: Table) -> str:
    """The snapshot table's unique key, the target of the store's upsert."""
    return ident(table.name, "aggregate_key")


def event_channel(cls: type[Any]) -> str:
    """The ``LISTEN`` channel notified when events are appended (``__event_channel__``)."""
    table: Table = cls.__table__
    return getattr(cls, "__event_channel__", None) or table.name


class EventMixin:
    """Columns, constraints, indexes and triggers of an append-only event log.

    Class options: ``__event_channel__`` (``NOTIFY`` channel, default the table name) and
    ``__append_only__`` (default ``True``: UPDATE/DELETE raise in the database). Override
    ``aggregate_id`` in the subclass to change its type (e.g. ``Mapped[uuid.UUID]``).
    """

    __event_channel__: ClassVar[str | None] = None
    __append_only__: ClassVar[bool] = True

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    aggregate_id: Mapped[str] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer)
    previous_version: Mapped[int | None] = mapped_column(
        Integer, Computed("NULLIF((version - 1), 0)", persisted=True)
    )
    event_type: Mapped[str] = mapped_column(String(255))
    schema_version: Mapped[int] = mapped_column(SmallInteger, server_default=text("1"))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    event_metadata: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )
    recorded_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    transaction_id: Mapped[int] = mapped_column(
        BigInteger, server_default=text(TRANSACTION_ID_DEFAULT)
    )

    def __init_subclass__(cls, **kw: Any) -> None:
        refuse_sqlmodel(cls, "EventMixin")
        super().__init_subclass__(**kw)
        when_mapped(cls, _set_up_events)


def _set_up_events(mapper: Mapper[Any]) -> None:
    table = own_table(mapper)
    if table is not None:
        _configure_event_table(mapper.class_, table)


def _configure_event_table(cls: type[Any], table: Table) -> None:
    name = table.name
    key = stream_key(table)
    names = constraint_names(table)
    table.append_constraint(UniqueConstraint(*key, "version", name=names["unique"]))
    table.append_constraint(
        ForeignKeyConstraint(
            [*key, "previous_version"],
            [table.c[c] for c in (*key, "version")],
            name=names["gapless"],
        )
    )
    table.append_constraint(CheckConstraint("version >= 1", name=ident(name, "version_check")))
    Index(ident(f"ix_{name}", "event_type"), table.c.event_type)
    Index(ident(f"ix_{name}", "recorded_at"), table.c.recorded_at)
    Index(ident(f"ix_{name}", "position"), table.c.transaction_id, table.c.id)

    schema = table.schema
    notify = Function(
        schema,
        ident(name, "notify"),
        returns="trigger",
        body=(
            "BEGIN\n"
            "  -- one notification per appending transaction (NOTIFY deduplicates);\n"
            "  -- delivered at commit, never for a rolled-back append\n"
            "  PERFORM pg_notify(TG_ARGV[0], '');\n"
            "  RETURN NULL;\n"
            "END;"
        ),
    )
    channel = event_channel(cls)
    if not channel or len(channel.encode()) > 63:
        raise ConfigurationError(
            f"{cls.__name__}.__event_channel__ = {channel!r}: a NOTIFY channel is an identifier "
            "of 1 to 63 bytes."
        )
    objects: list[Function | Trigger] = [
        notify,
        Trigger(
            schema,
            name,
            ident(name, "notify"),
            when="AFTER INSERT",
            function=f"{qualified(schema, notify.name)}({quote_literal(channel)})",
            for_each="STATEMENT",
        ),
    ]
    if getattr(cls, "__append_only__", True):
        guard = Function(
            schema,
            ident(name, "append_only"),
            returns="trigger",
            body=(
                "BEGIN\n"
                "  RAISE EXCEPTION '% on %: events are append-only', TG_OP, TG_TABLE_NAME\n"
                "    USING HINT = 'Append a compensating event instead; rebuild read models "
                "rather than editing the log.';\n"
                "  RETURN NULL;\n"
                "END;"
            ),
        )
        objects += [
            guard,
            Trigger(
                schema,
                name,
                ident(name, "append_only"),
                when="BEFORE UPDATE OR DELETE",
                function=f"{qualified(schema, guard.name)}()",
                for_each="STATEMENT",
            ),
        ]
    register(table.metadata, *objects)


class SnapshotMixin:
    """The latest snapshot of each aggregate: one row per ``(aggregate_type, aggregate_id)``.

    ``schema_version`` is the aggregate class's ``snapshot_version``: bump it when the state's
    shape changes and old snapshots are ignored (the aggregate is replayed from its events).
    """

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    aggregate_type: Mapped[str] = mapped_column(String(255))
    aggregate_id: Mapped[str] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer)
    schema_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[dict[str, Any]] = mapped_column(JSONB)
    taken_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    def __init_subclass__(cls, **kw: Any) -> None:
        refuse_sqlmodel(cls, "SnapshotMixin")
        super().__init_subclass__(**kw)
        when_mapped(cls, _set_up_snapshots)


def _set_up_snapshots(mapper: Mapper[Any]) -> None:
    table = own_table(mapper)
    if table is not None:
        key = stream_key(table)
        table.append_constraint(
            UniqueConstraint(*key, "aggregate_type", name=snapshot_key_name(table))
        )


class CheckpointMixin:
    """Where each asynchronous projection stands in the log: one row per projection name.

    The position is the pair ``(transaction_id, event_id)`` of the last applied event; it is
    updated in the same transaction as the read model, which is what makes a crash safe.
    """

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    transaction_id: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    event_id: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    events_applied: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    def __init_subclass__(cls, **kw: Any) -> None:
        refuse_sqlmodel(cls, "CheckpointMixin")
        super().__init_subclass__(**kw)
        when_mapped(cls, _check_checkpoints)


def _check_checkpoints(mapper: Mapper[Any]) -> None:
    table = own_table(mapper)
    if table is not None and TENANT_COLUMN in table.c:
        raise ConfigurationError(
            f"{mapper.class_.__name__}: a checkpoint table must not be tenant-scoped: one "
            "projection runner reads the whole log across tenants. Drop TenantMixin from it."
        )
