"""Declarative table partitioning: ``__partition_by__ = range_partition("created_at", interval="month")``.

PostgreSQL routes each row of a *partitioned* table to the child table whose bounds hold it; a
row with no matching partition is an error. So a range-partitioned table needs partitions made
ahead of time, and old ones can be detached and dropped cheaply (retention without a ``DELETE``).

Each partitioned model gets one maintenance function, ``<table>_maintain_partitions()``, written
by autogenerate like any other toolkit object. It creates the current period's partition and
``premake`` more ahead (``IF NOT EXISTS``, so it is idempotent) and, with ``retention``, drops
partitions entirely older than that. The migration calls it once; after that run
``sa-patterns partitions maintain`` (or :func:`maintain`, or a ``pg_cron`` job calling the
function) at least once per period. Changing the spec changes the function, so autogenerate
emits a replace; the partitions themselves are data, never diffed.

Time zones: periods, partition names and bounds are UTC. The function reads ``now()`` as UTC
wall time and parses a partition's suffix as a date, so it does the same in any session's
``TimeZone`` (pg_cron's, the server's, a client's ``PGTZ``). A ``timestamptz`` key is bounded at
UTC midnights (the literals carry ``+00``), a ``timestamp`` key is read as UTC wall time and a
``date`` key as UTC dates. Retention drops a partition once its whole range is more than
``retention`` periods old: its upper bound is at or before the start of the current UTC period
minus ``retention`` periods.

PostgreSQL's rule, checked at class definition: a primary key or unique constraint of a
partitioned table must include the partition key columns.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from sqlalchemy import Date, DateTime, MetaData, Table, UniqueConstraint, text
from sqlalchemy.orm import Mapper, Session

from ._mapping import own_table, when_mapped
from .errors import ConfigurationError
from .schema.objects import Function, ident, ident_prefix, qualified, quote, quote_literal
from .schema.registry import register, registered

__all__ = [
    "CLOCK",
    "CLOCK_SETTING",
    "PartitionFunction",
    "PartitionSpec",
    "Partitioned",
    "cron_schedule_sql",
    "hash_partition",
    "list_partition",
    "maintain",
    "partition_specs",
    "range_partition",
]

Interval = Literal["day", "week", "month", "year"]
_SPECS = "sa_patterns.partitions"
_SUFFIX = {"day": "YYYYMMDD", "week": "IYYYIW", "month": "YYYYMM", "year": "YYYY"}
_DIGITS = {"day": 8, "week": 6, "month": 6, "year": 4}

#: The setting that, when set (to a ``timestamptz`` with its offset), is the maintenance
#: functions' "now" instead of ``now()``: maintenance as if run at that instant. Tests use it
#: for a clock they control; :func:`maintain` sets it for one call with ``at=``. An instant in
#: the future makes retention drop what it would drop then.
CLOCK_SETTING = "sa_patterns.partition_clock"
#: The maintenance clock as SQL: ``now()`` unless :data:`CLOCK_SETTING` is set.
CLOCK = f"coalesce(nullif(current_setting('{CLOCK_SETTING}', true), '')::timestamptz, now())"


@dataclass(frozen=True)
class PartitionSpec:
    """How a table is partitioned; build with :func:`range_partition` and friends."""

    strategy: Literal["range", "list", "hash"]
    columns: tuple[str, ...]
    interval: Interval | None = None
    premake: int = 3
    retention: int | None = None
    lists: tuple[tuple[str, tuple[str, ...]], ...] = ()
    modulus: int = 0

    def clause(self) -> str:
        return f"{self.strategy.upper()} ({', '.join(quote(c) for c in self.columns)})"


def range_partition(
    column: str, *, interval: Interval = "month", premake: int = 3, retention: int | None = None
) -> PartitionSpec:
    """Partitions of one ``interval`` each on a date/timestamp ``column``; ``premake`` periods
    are kept ready ahead of now and, with ``retention``, partitions older than that many
    periods are dropped by maintenance."""
    if interval not in _SUFFIX:
        raise ConfigurationError(f"range_partition(interval={interval!r}): use one of {sorted(_SUFFIX)}.")
    if premake < 0 or (retention is not None and retention < 1):
        raise ConfigurationError("range_partition(): premake must be >= 0 and retention >= 1.")
    return PartitionSpec("range", (column,), interval=interval, premake=premake, retention=retention)


def list_partition(column: str, partitions: Mapping[str, Sequence[str]]) -> PartitionSpec:
    """One partition per name, holding the listed values of ``column`` (plus a default one)."""
    if not partitions:
        raise ConfigurationError("list_partition() needs at least one {name: [values]} entry.")
    lists = tuple((name, tuple(str(v) for v in values)) for name, values in partitions.items())
    return PartitionSpec("list", (column,), lists=lists)


def hash_partition(column: str, *, modulus: int) -> PartitionSpec:
    """``modulus`` partitions spreading rows by the hash of ``column``."""
    if modulus < 2:
        raise ConfigurationError("hash_partition(modulus=...) must be at least 2.")
    return PartitionSpec("hash", (column,), modulus=modulus)


@dataclass(frozen=True)
class PartitionFunction(Function):
    """The maintenance function of one partitioned table; creating it also runs it once."""

    kind: ClassVar[str] = "partition_function"
    order: ClassVar[int] = 15

    def _call(self) -> str:
        return f"SELECT {qualified(self.schema, self.name)}()"

    def create_sql(self) -> list[str]:
        return [*super().create_sql(), self._call()]

    def replace_sql(self, old: Any) -> list[str]:
        return [*super().replace_sql(old), self._call()]


def _bound_expr(table: Table, column: str) -> str:
    """SQL (in the function) turning the timestamp variable ``lo``/``hi`` into a bound literal."""
    col_type = table.c[column].type
    if isinstance(col_type, Date) and not isinstance(col_type, DateTime):
        return "to_char({v}, 'YYYY-MM-DD')"
    if isinstance(col_type, DateTime) and not col_type.timezone:
        return "to_char({v}, 'YYYY-MM-DD HH24:MI:SS')"
    return "to_char({v}, 'YYYY-MM-DD HH24:MI:SS') || '+00'"


#: The longest suffix of a range or hash partition's name (``_p`` + YYYYMMDD, ``_h`` + remainder).
_PART_SUFFIX = 10


def partition_prefix(table_name: str) -> str:
    """What range and hash partitions' names start with: the table's name, cut with a hash when
    a partition's name would pass PostgreSQL's 63-byte limit (which would cut every month's
    partition to the same name)."""
    return ident_prefix(table_name, _PART_SUFFIX)


#: Every partition gets forced row-level security with no policy of its own: reached through its
#: parent, the parent's policies decide (PostgreSQL applies only those); reached directly, by a
#: role default privileges gave a grant on the new table or by its owner, it shows nothing.
#: Partitions made before are sealed on the next run.
_SEAL = (
    "    FOR part IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid\n"
    "                WHERE i.inhparent = parent AND NOT (c.relrowsecurity AND c.relforcerowsecurity) LOOP\n"
    "        EXECUTE format('ALTER TABLE %s.%I ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', nsp, part);\n"
    "    END LOOP;\n"
)


def _sealed(body: str) -> str:
    assert body.endswith("END;")
    return body[: -len("END;")] + _SEAL + "END;"


def _body(table: Table, spec: PartitionSpec) -> str:
    name = table.name
    prefix = partition_prefix(name)
    parent = quote_literal(qualified(table.schema, name))
    # Built from quoted identifiers/literals and validated integers only: no user value.
    head = (
        "DECLARE\n"  # noqa: S608 - quoted identifiers and literals only
        f"    parent regclass := {parent}::regclass;\n"
        "    nsp text := (SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = parent);\n"
        "    part text;\n"
    )
    create = (
        "IF to_regclass(format('%s.%I', nsp, part)) IS NULL THEN\n"
        "            EXECUTE format('CREATE TABLE %s.%I PARTITION OF %s {bounds}', nsp, part, parent{args});\n"
        "        END IF;"
    )
    if spec.strategy == "hash":
        stmt = create.format(bounds="FOR VALUES WITH (MODULUS %s, REMAINDER %s)", args=f", {spec.modulus}, i")
        return (
            head + "BEGIN\n"
            f"    FOR i IN 0..{spec.modulus - 1} LOOP\n"
            f"        part := {quote_literal(prefix)} || '_h' || i;\n"
            f"        {stmt}\n"
            "    END LOOP;\nEND;"
        )
    if spec.strategy == "list":
        lines = []
        for part_name, values in spec.lists:
            in_list = ", ".join(quote_literal(v).replace("'", "''").replace("%", "%%") for v in values)
            lines.append(
                f"    part := {quote_literal(ident(name, part_name))};\n"
                "    " + create.format(bounds=f"FOR VALUES IN ({in_list})", args="")
            )
        lines.append(
            f"    part := {quote_literal(ident(name, 'default'))};\n"
            "    " + create.format(bounds="DEFAULT", args="")
        )
        return head + "BEGIN\n" + "\n".join(lines) + "\nEND;"
    assert spec.interval is not None
    unit, fmt = spec.interval, _SUFFIX[spec.interval]
    bound = _bound_expr(table, spec.columns[0])
    stmt = create.format(bounds="FOR VALUES FROM (%L) TO (%L)", args=", " + bound.format(v="lo") + ", " + bound.format(v="hi"))
    retention = ""
    if spec.retention is not None:
        ours = quote_literal("^" + re.escape(prefix) + "_p[0-9]{" + str(_DIGITS[unit]) + "}$")
        retention = (
            "    -- retention: drop our partitions whose whole range is older than the horizon\n"  # noqa: S608
            f"    horizon := date_trunc('{unit}', utc_now) - interval '{spec.retention} {unit}';\n"
            "    FOR part IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid\n"
            f"                WHERE i.inhparent = parent AND c.relname ~ {ours} LOOP\n"
            "        -- the suffix is a UTC date: read as a date, never in the session's TimeZone\n"
            f"        lo := to_date(substring(part from '_p([0-9]+)$'), '{fmt}');\n"
            f"        IF lo + interval '1 {unit}' <= horizon THEN\n"
            "            EXECUTE format('ALTER TABLE %s DETACH PARTITION %s.%I', parent, nsp, part);\n"
            "            EXECUTE format('DROP TABLE %s.%I', nsp, part);\n"
            "        END IF;\n"
            "    END LOOP;\n"
        )
    return (
        head
        + "    -- now as UTC wall time: periods, names and bounds are UTC, whatever the session's TimeZone\n"
        + f"    utc_now timestamp := {CLOCK} AT TIME ZONE 'UTC';\n"
        + "    lo timestamp;\n    hi timestamp;\n    horizon timestamp;\n"
        + "BEGIN\n"
        f"    FOR i IN 0..{spec.premake} LOOP\n"
        f"        lo := date_trunc('{unit}', utc_now) + i * interval '1 {unit}';\n"
        f"        hi := lo + interval '1 {unit}';\n"
        f"        part := {quote_literal(prefix)} || '_p' || to_char(lo, '{fmt}');\n"
        f"        {stmt}\n"
        "    END LOOP;\n" + retention + "END;"
    )


def _check_keys(table: Table, spec: PartitionSpec, cls_name: str) -> None:
    needed = set(spec.columns)
    keys: list[tuple[str, set[str]]] = [("primary key", {c.name for c in table.primary_key.columns})]
    keys += [
        (f"unique constraint {c.name or ''}".strip(), {col.name for col in c.columns})
        for c in table.constraints
        if isinstance(c, UniqueConstraint)
    ]
    keys += [(f"unique index {i.name}", {col.name for col in i.columns}) for i in table.indexes if i.unique]
    for what, cols in keys:
        if cols and not needed <= cols:
            missing = ", ".join(sorted(needed - cols))
            raise ConfigurationError(
                f"{cls_name}: the {what} ({', '.join(sorted(cols))}) must include the partition key "
                f"({missing}). PostgreSQL enforces uniqueness per partition, so a key is only unique "
                "across the table when it contains the partition column: e.g. "
                f"`{missing}: Mapped[...] = mapped_column(primary_key=True)` beside `id`."
            )


def partition_table(table: Table, spec: PartitionSpec, *, owner: str | None = None) -> PartitionFunction:
    """Make ``table`` partitioned by ``spec`` and register its maintenance function."""
    for column in spec.columns:
        if column not in table.c:
            raise ConfigurationError(f"{owner or table.name}: partition column {column!r} is not a column of {table.name}.")
    _check_keys(table, spec, owner or table.name)
    table.dialect_kwargs["postgresql_partition_by"] = spec.clause()
    function = PartitionFunction(
        schema=table.schema,
        name=ident(table.name, "maintain_partitions"),
        returns="void",
        body=_sealed(_body(table, spec)),
    )
    register(table.metadata, function)
    # Kept beside the metadata, not in Table.info: Alembic renders Table.info into migrations.
    table.metadata.info.setdefault(_SPECS, {})[table.key] = spec
    return function


def partition_specs(metadata: MetaData) -> dict[str, PartitionSpec]:
    """Partitioned tables of ``metadata`` (by table key) and their specs."""
    return dict(metadata.info.get(_SPECS, {}))


class Partitioned:
    """Mixin: reads ``__partition_by__`` (a :class:`PartitionSpec`) when the class is mapped."""

    __partition_by__: ClassVar[PartitionSpec]

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        when_mapped(cls, _set_up)


def _set_up(mapper: Mapper[Any]) -> None:
    """A partitioned class is mapped (by any declarative style): partition its table."""
    cls = mapper.class_
    table = own_table(mapper)
    spec = getattr(cls, "__partition_by__", None)
    if table is None or spec is None:
        return
    if not isinstance(spec, PartitionSpec):
        raise ConfigurationError(
            f"{cls.__name__}.__partition_by__ must come from range_partition(), list_partition() "
            "or hash_partition()."
        )
    partition_table(table, spec, owner=cls.__name__)


def maintain(bind: Session | Any, metadata: MetaData, *, at: dt.datetime | None = None) -> list[str]:
    """Run every partitioned table's maintenance function (idempotent); returns their names.

    ``at`` (an aware datetime) runs it as if it were that instant (:data:`CLOCK_SETTING`, for
    this call only): partitions for that period and ``premake`` ahead, retention counted from
    it. Beware an instant in the future: retention drops what it would drop then."""
    if at is not None and at.utcoffset() is None:
        raise ConfigurationError("maintain(at=...) takes an aware datetime (with tzinfo): a naive one names no instant.")
    previous = None
    if at is not None:
        previous = bind.execute(text("SELECT current_setting(:n, true)"), {"n": CLOCK_SETTING}).scalar()
        bind.execute(text("SELECT set_config(:n, :v, true)"), {"n": CLOCK_SETTING, "v": at.isoformat()})
    ran = []
    for entity in registered(metadata):
        if isinstance(entity, PartitionFunction):
            bind.execute(text(f"SELECT {qualified(entity.schema, entity.name)}()"))
            ran.append(entity.name)
    if at is not None:  # (after a failure the transaction's end resets it: set transaction-local)
        bind.execute(text("SELECT set_config(:n, :v, true)"), {"n": CLOCK_SETTING, "v": previous or ""})
    return ran


def cron_schedule_sql(metadata: MetaData, schedule: str = "5 0 * * *") -> list[str]:
    """``pg_cron`` statements scheduling every maintenance function (run them in a migration
    with ``op.execute`` where the ``pg_cron`` extension is installed)."""
    statements = []
    for entity in registered(metadata):
        if isinstance(entity, PartitionFunction):
            call = f"SELECT {qualified(entity.schema, entity.name)}()"
            statements.append(
                f"SELECT cron.schedule({quote_literal(entity.name)}, {quote_literal(schedule)}, "
                f"{quote_literal(call)})"
            )
    return statements
