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

**Under row-level security** (a ``TenantMixin`` log with ``__rls__``) the tenant policy keeps
every role to the tenant in ``app.tenant_id``, and the projection runner, which must read every
tenant's events, gets one deliberate way through: three ``SECURITY DEFINER`` functions
(:class:`LogReader`), owned by the role that creates them (run migrations as the owner role of
:mod:`sa_patterns.roles`), with ``search_path`` pinned to ``pg_catalog, pg_temp`` and the log
found by a catalog lookup (never through the caller's search_path), ``EXECUTE`` revoked from
``PUBLIC`` and granted only to ``__runner_role__`` (the configured app role unless the model
names another). They read the log with ``app.all_tenants`` on for that one statement, which a
``FOR SELECT`` policy ``TO`` the owner role honours (``<table>_log_reader``); the app role gets
no policy reading that setting, so it cannot forge it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

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
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, Mapper, mapped_column

from .._mapping import own_table, refuse_sqlmodel, when_mapped
from ..context import ALL_TENANTS_SETTING
from ..errors import ConfigurationError
from ..roles import APP, OWNER, resolve_role
from ..schema import (
    Entity,
    Function,
    Policy,
    RowLevelSecurity,
    Trigger,
    ident,
    qualified,
    quote,
    quote_literal,
    register,
    registered,
)
from ..tenancy.rls import owner_rights

__all__ = [
    "HORIZON_SQL",
    "CheckpointMixin",
    "EventMixin",
    "LogReader",
    "LogReaders",
    "SnapshotMixin",
    "constraint_names",
    "event_channel",
    "has_rls",
    "log_readers",
    "stream_key",
]

TENANT_COLUMN = "tenant_id"
TRANSACTION_ID_DEFAULT = "((pg_current_xact_id())::text)::bigint"

#: The settled horizon, evaluated once per statement (an InitPlan) on the statement's own
#: snapshot: the smallest transaction id still in progress *that could write to this database*,
#: else the snapshot's xmax. An in-progress xid is skipped only when pg_stat_activity (or
#: pg_prepared_xacts) positively places it in another database, which cannot write our table;
#: an xid we cannot place holds the horizon back (late, never wrong). So a long transaction in
#: another database of the cluster does not delay projections. Every name is in pg_catalog, so
#: the reader functions (search_path pinned) and the runner's direct reads share this text.
HORIZON_SQL = """(SELECT LEAST(
  pg_snapshot_xmax(s.snap)::text::bigint,
  (SELECT min(x::text::bigint) FROM pg_snapshot_xip(s.snap) AS x
    WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                      WHERE a.backend_xid = xid(x) AND a.datid <> s.db)
      AND NOT EXISTS (SELECT 1 FROM pg_prepared_xacts p
                      WHERE p.transaction = xid(x) AND p.database <> current_database())))
FROM (SELECT pg_current_snapshot() AS snap,
             (SELECT oid FROM pg_database WHERE datname = current_database()) AS db) AS s)"""

#: ``{event table key: LogReaders}`` for logs under row-level security (kept in
#: ``MetaData.info``, never ``Table.info``).
_READERS_INFO_KEY = "sa_patterns.event_log_readers"


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

    Class options: ``__event_channel__`` (``NOTIFY`` channel, default the table name),
    ``__append_only__`` (default ``True``: UPDATE/DELETE raise in the database) and, for a
    ``TenantMixin`` log under row-level security, ``__runner_role__``: the role that runs the
    :class:`~sa_patterns.eventsourcing.ProjectionRunner`, the only one granted ``EXECUTE`` on
    the log's reader functions (default ``"@app"``, the configured app role; ``"@admin"`` or a
    literal name for a runner with a login of its own; ``None``: grant it yourself).
    Override ``aggregate_id`` in the subclass to change its type (e.g. ``Mapped[uuid.UUID]``).
    """

    __event_channel__: ClassVar[str | None] = None
    __append_only__: ClassVar[bool] = True
    __runner_role__: ClassVar[str | None] = APP

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
    objects: list[Entity] = [
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
    runner_role = getattr(cls, "__runner_role__", None)
    rls = TENANT_COLUMN in table.c and bool(getattr(cls, "__rls__", False))
    if runner_role is not None and (
        not isinstance(runner_role, str) or not runner_role or len(runner_role.encode()) > 63
    ):
        raise ConfigurationError(
            f"{cls.__name__}.__runner_role__ = {runner_role!r}: name the database role that runs "
            "the ProjectionRunner (1 to 63 bytes, or a placeholder such as '@app')."
        )
    if runner_role != EventMixin.__runner_role__ and not rls:
        raise ConfigurationError(
            f"{cls.__name__}.__runner_role__ only makes sense for a TenantMixin log under "
            "row-level security (__rls__): without it the runner reads the log directly."
        )
    if rls:
        objects += _reader_objects(table, runner_role)
    register(table.metadata, *objects)


#: The columns the runner reads from the log, in order (``tenant_id`` follows when present).
EVENT_COLUMNS = (
    "id",
    "aggregate_id",
    "version",
    "event_type",
    "schema_version",
    "data",
    "metadata",
    "recorded_at",
    "transaction_id",
)

_READ_ARGUMENTS = "after_transaction bigint, after_id bigint, max_rows integer"
_READ_IDENTITY = "bigint, bigint, integer"


@dataclass(frozen=True)
class LogReader(Function):
    """A ``SECURITY DEFINER`` function reading a tenant event log across tenants, for the
    projection runner: ``search_path`` pinned to ``pg_catalog, pg_temp``, ``EXECUTE`` revoked
    from ``PUBLIC`` and granted to ``runner_role`` only (a placeholder such as ``"@app"`` is
    resolved when the SQL runs, like the generated grants)."""

    runner_role: str | None = None

    kind: ClassVar[str] = "event_log_reader"

    def _access_sql(self) -> list[str]:
        target = f"FUNCTION {self.signature()}"
        statements = [f"REVOKE ALL ON {target} FROM PUBLIC"]
        if self.runner_role:
            statements.append(f"GRANT EXECUTE ON {target} TO {quote(resolve_role(self.runner_role))}")
        return statements

    def create_sql(self) -> list[str]:
        return [*super().create_sql(), *self._access_sql()]

    def replace_sql(self, old: Entity) -> list[str]:
        statements = super().replace_sql(old)
        if (
            isinstance(old, LogReader)
            and old.runner_role
            and (not self.runner_role or resolve_role(old.runner_role) != resolve_role(self.runner_role))
        ):
            # the old runner role loses EXECUTE (if the function was kept and the role exists)
            role = resolve_role(old.runner_role)
            statements.append(
                "DO $sa_patterns$ BEGIN IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = "  # noqa: S608 - quoted
                f"{quote_literal(role)}) THEN REVOKE ALL ON FUNCTION {old.signature()} FROM "
                f"{quote(role)}; END IF; END $sa_patterns$"
            )
        return [*statements, *self._access_sql()]


def _sql_type(table: Table, column: str) -> str:
    compiled: str = table.c[column].type.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    return compiled.lower()


_PINNED = "SECURITY DEFINER\nSET search_path = pg_catalog, pg_temp"


def _reader_body(table: Table, query: str, arguments: str = "") -> str:
    """A reader function's body: find the log, then run ``query`` on it (``%I.%I`` for its
    schema and name, ``$1``... for ``arguments``) with ``app.all_tenants`` on, and the
    caller's value back afterwards.

    Everything is found through ``pg_catalog`` (the pinned search_path) and the log by a lookup
    in the catalog, never through the caller's search_path: the one table of that name, not
    temporary, carrying the log's ``log_reader`` policy, owned by a role this function's owner
    belongs to, and in the model's schema when it names one (else there must be exactly one).
    """
    setting = quote_literal(ALL_TENANTS_SETTING)
    policy = quote_literal(ident(table.name, "log_reader"))
    in_schema = f"\n     AND n.nspname = {quote_literal(table.schema)}" if table.schema else ""
    using = f" USING {arguments}" if arguments else ""
    return (
        "DECLARE\n"  # noqa: S608 - quoted identifiers and literals only
        f"  sa_outer text := current_setting({setting}, true);\n"
        "  sa_found text[];\n"
        "BEGIN\n"
        "  SELECT array_agg(n.nspname::text) INTO sa_found\n"
        "    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace\n"
        f"   WHERE c.relname = {quote_literal(table.name)} AND c.relkind IN ('r', 'p')\n"
        "     AND c.relpersistence <> 't' AND pg_has_role(c.relowner, 'USAGE')\n"
        f"     AND EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = {policy})"
        f"{in_schema};\n"
        "  IF cardinality(sa_found) IS DISTINCT FROM 1 THEN\n"
        "    RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state',\n"
        "      MESSAGE = format('%s event logs named %I carry the policy %I for role %I, not one',\n"
        f"        coalesce(cardinality(sa_found), 0), {quote_literal(table.name)}, {policy}, current_user),\n"
        "      HINT = 'Run the migrations as the owner role, and give the event model a schema when "
        "several schemas hold its table.';\n"
        "  END IF;\n"
        "  -- the one deliberate read across tenants: the log_reader policy lets this function's\n"
        "  -- owner see every tenant while app.all_tenants is on, here for one statement only\n"
        f"  PERFORM set_config({setting}, 'on', true);\n"
        f"  RETURN QUERY EXECUTE format({quote_literal(query)}, sa_found[1], {quote_literal(table.name)}){using};\n"
        f"  PERFORM set_config({setting}, coalesce(sa_outer, ''), true);\n"
        "END;"
    )


def _reader_objects(table: Table, runner_role: str | None) -> list[Entity]:
    """The reader functions of a log under row-level security and the policy they read
    through; recorded in ``MetaData.info`` for the runner."""
    name, schema = table.name, table.schema
    columns = [*EVENT_COLUMNS, TENANT_COLUMN]
    # Built from quoted identifiers and constants only: no user value reaches this SQL.
    read = LogReader(
        schema,
        ident(name, "log_after"),
        returns="TABLE(" + ", ".join(f"{quote(c)} {_sql_type(table, c)}" for c in columns) + ")",
        body=_reader_body(
            table,
            f"SELECT {', '.join('e.' + quote(c) for c in columns)} FROM %I.%I AS e\n"  # noqa: S608
            "WHERE (e.transaction_id, e.id) > ($1, $2)\n"
            f"  AND e.transaction_id < {HORIZON_SQL}\n"
            "ORDER BY e.transaction_id, e.id LIMIT $3",
            "after_transaction, after_id, max_rows",
        ),
        arguments=_READ_ARGUMENTS,
        identity=_READ_IDENTITY,
        options=_PINNED,
        runner_role=runner_role,
    )
    end = LogReader(
        schema,
        ident(name, "log_end"),
        returns="TABLE(transaction_id bigint, id bigint)",
        body=_reader_body(
            table,
            "SELECT e.transaction_id, e.id FROM %I.%I AS e\n"
            "ORDER BY e.transaction_id DESC, e.id DESC LIMIT 1",
        ),
        options=_PINNED,
        runner_role=runner_role,
    )
    tenants = LogReader(
        schema,
        ident(name, "log_tenants"),
        returns=f"TABLE(tenant_id {_sql_type(table, TENANT_COLUMN)})",
        body=_reader_body(table, "SELECT DISTINCT e.tenant_id FROM %I.%I AS e"),
        options=_PINNED,
        runner_role=runner_role,
    )
    policy = Policy(
        schema=schema,
        table=name,
        name=ident(name, "log_reader"),
        using=(
            f"current_setting({quote_literal(ALL_TENANTS_SETTING)}, true) = 'on' AND "
            f"{owner_rights(qualified(schema, name))}"
        ),
        command="SELECT",
        roles=(OWNER,),
    )
    table.metadata.info.setdefault(_READERS_INFO_KEY, {})[table.key] = LogReaders(
        read.name, end.name, tenants.name
    )
    return [read, end, tenants, policy]


class LogReaders(NamedTuple):
    """The names of a log's reader functions."""

    #: ``(after_transaction, after_id, max_rows)``: settled events after a position, in order
    after: str
    #: ``()``: the last position ``(transaction_id, id)``, settled or not
    end: str
    #: ``()``: every tenant with events in the log
    tenants: str


def log_readers(table: Table) -> LogReaders | None:
    """``table``'s reader functions, or ``None`` for a log the runner reads directly (one
    without row-level security)."""
    names = table.metadata.info.get(_READERS_INFO_KEY, {}).get(table.key)
    return names if isinstance(names, LogReaders) else None


def has_rls(table: Table) -> bool:
    """Whether the models give ``table`` row-level security."""
    return any(
        isinstance(e, RowLevelSecurity) and e.table == table.name and e.schema == table.schema
        for e in registered(table.metadata)
    )


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
