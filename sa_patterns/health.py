"""Schema health checks for ``sa-patterns doctor``: the live database against the models.

Each check takes the doctor's context (``ctx.connection``, ``ctx.metadata``) and returns
problems as sentences that say what is wrong and how to fix it. None of them writes anything,
and none crashes on a database that has none of the toolkit's objects: it reports instead.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

from sqlalchemy import MetaData, Table, text
from sqlalchemy.engine import Connection

from .partitioning import CLOCK, partition_prefix, partition_specs
from .schema.catalog import diff
from .schema.live import drifts
from .schema.objects import qualified
from .schema.registry import is_real_table, registered

__all__ = [
    "check_foreign_key_indexes",
    "check_invalid_indexes",
    "check_matview_freshness",
    "check_matviews_populated",
    "check_partitions",
    "check_search_vectors",
    "check_toolkit_objects",
    "check_tsvector_indexes",
    "duration",
]


class _Context(Protocol):
    connection: Connection
    metadata: MetaData


def _tables(metadata: MetaData) -> list[Table]:
    return [t for t in metadata.tables.values() if is_real_table(t)]


def _oid(conn: Connection, table: Table) -> Any:
    return conn.execute(text("SELECT to_regclass(:t)"), {"t": qualified(table.schema, table.name)}).scalar()


_FK_WITHOUT_INDEX = text(
    """
    SELECT con.conname, array_agg(a.attname ORDER BY k.n) AS cols
    FROM pg_catalog.pg_constraint con
    CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, n)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
    WHERE con.contype = 'f' AND con.conrelid = to_regclass(:t)
      AND NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_index i
        WHERE i.indrelid = con.conrelid AND i.indpred IS NULL
          AND (i.indkey::int2[])[0:cardinality(con.conkey) - 1] @> con.conkey
          AND (i.indkey::int2[])[0:cardinality(con.conkey) - 1] <@ con.conkey)
    GROUP BY con.conname ORDER BY con.conname
    """
)


def check_foreign_key_indexes(ctx: _Context) -> list[str]:
    """A foreign key with no index leading with its columns makes every parent DELETE or key
    UPDATE scan the child table, under lock."""
    problems = []
    for table in _tables(ctx.metadata):
        if _oid(ctx.connection, table) is None:
            continue
        rows = ctx.connection.execute(_FK_WITHOUT_INDEX, {"t": qualified(table.schema, table.name)})
        for name, cols in rows:
            problems.append(
                f"{table.fullname}: foreign key {name} ({', '.join(cols)}) has no supporting index; "
                f"add Index(..., {', '.join(repr(c) for c in cols)}) (or index=True on the column)."
            )
    return problems


_INVALID = text(
    "SELECT c.relname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
    "WHERE i.indrelid = to_regclass(:t) AND NOT i.indisvalid ORDER BY 1"
)


def check_invalid_indexes(ctx: _Context) -> list[str]:
    """An index left invalid by a failed ``CREATE INDEX CONCURRENTLY`` costs writes and serves
    no read."""
    problems = []
    for table in _tables(ctx.metadata):
        if _oid(ctx.connection, table) is None:
            continue
        for (name,) in ctx.connection.execute(_INVALID, {"t": qualified(table.schema, table.name)}):
            problems.append(
                f"{table.fullname}: index {name} is INVALID (a failed concurrent build); "
                f"DROP INDEX CONCURRENTLY {name} and create it again."
            )
    return problems


def check_toolkit_objects(ctx: _Context) -> list[str]:
    """Triggers, functions, policies and views the models need but the database lacks or holds
    in an older definition (an unapplied migration), and every hand edit of their live
    definitions, which their comments cannot show (:mod:`sa_patterns.schema.live`): a function
    replaced, a trigger disabled, a policy altered or added, ``security_invoker`` switched off,
    a materialized view's index dropped."""
    from .tenancy import tenant_tables

    tables = [t for t in _tables(ctx.metadata) if _oid(ctx.connection, t) is not None]
    wanted = registered(ctx.metadata)
    changes = diff(ctx.connection, wanted, tables)
    policed = [(t.schema, t.name) for t in tenant_tables(ctx.metadata)]
    found = drifts(ctx.connection, wanted, changes, policed)
    # a drift the comment diff also sees (a trigger made again by hand without our comment,
    # row-level security switched off) is reported once, as the drift
    redone = {d.entity.key() for d in found}
    problems = [
        f"missing: {e.describe()}; run the migrations (alembic upgrade head)."
        for e in changes.create
        if e.key() not in redone
    ]
    problems += [
        f"stale: {new.describe()} differs from the models; autogenerate and apply a migration."
        for new, _old in changes.replace
        if new.key() not in redone
    ]
    problems += [f"drift: {d.message()}." for d in found]
    return problems


def _next_period(now: dt.datetime, interval: str) -> dt.datetime:
    if interval == "day":
        return (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "week":
        start = (now - dt.timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
        return start + dt.timedelta(days=7)
    if interval == "month":
        return dt.datetime(now.year + now.month // 12, now.month % 12 + 1, 1)
    return dt.datetime(now.year + 1, 1, 1)


_COVERS = text(
    "SELECT count(*) FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid "
    "WHERE i.inhparent = to_regclass(:t) AND c.relname = :part"
)


# The database's clock (the maintenance functions' own, test clock included) as UTC wall time.
_UTC_NOW = text(f"SELECT {CLOCK} AT TIME ZONE 'UTC'")


def check_partitions(ctx: _Context) -> list[str]:
    """A range-partitioned table must already have next period's partition, or inserts start
    failing when the period turns. Periods are UTC (see :mod:`sa_patterns.partitioning`),
    counted from the database's clock, whatever the session's ``TimeZone``."""
    problems = []
    formats = {"day": "%Y%m%d", "week": "%G%V", "month": "%Y%m", "year": "%Y"}
    now: dt.datetime | None = None
    for key, spec in partition_specs(ctx.metadata).items():
        table = ctx.metadata.tables[key]
        if spec.strategy != "range" or spec.interval is None or _oid(ctx.connection, table) is None:
            continue
        if now is None:
            now = ctx.connection.execute(_UTC_NOW).scalar_one()
        upcoming = _next_period(now, spec.interval)
        part = f"{partition_prefix(table.name)}_p{upcoming.strftime(formats[spec.interval])}"
        found = ctx.connection.execute(_COVERS, {"t": qualified(table.schema, table.name), "part": part}).scalar()
        if not found:
            problems.append(
                f"{table.fullname}: no partition for the next {spec.interval} ({part}, from "
                f"{upcoming:%Y-%m-%d} UTC); run `sa-patterns partitions maintain` (and schedule it)."
            )
    return problems


_TSVECTOR_WITHOUT_GIN = text(
    """
    SELECT a.attname FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = to_regclass(:t) AND a.attnum > 0 AND NOT a.attisdropped
      AND a.atttypid = 'pg_catalog.tsvector'::regtype
      AND NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_index i
        JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_catalog.pg_am am ON am.oid = ic.relam
        WHERE i.indrelid = a.attrelid AND am.amname IN ('gin', 'gist') AND a.attnum = ANY (i.indkey))
    """
)


def _copies(metadata: MetaData) -> set[Table]:
    """Tables the toolkit keeps as copies of others (a ``Versioned`` model's history): their
    columns repeat the model's, but no search runs on them, so no index is asked for."""
    from .errors import ConfigurationError
    from .versioning import history_table

    found = set()
    for table in metadata.tables.values():
        try:
            found.add(history_table(table))
        except ConfigurationError:  # not Versioned
            continue
    return found


def check_tsvector_indexes(ctx: _Context) -> list[str]:
    """A tsvector column without a GIN index makes every search a sequential scan. Only columns
    searched are checked: a history table's copy of a search vector is not."""
    problems = []
    copies = _copies(ctx.metadata)
    for table in _tables(ctx.metadata):
        if table in copies or _oid(ctx.connection, table) is None:
            continue
        for (name,) in ctx.connection.execute(_TSVECTOR_WITHOUT_GIN, {"t": qualified(table.schema, table.name)}):
            problems.append(
                f"{table.fullname}.{name}: tsvector column without a GIN index; searches scan the "
                "whole table. Add Index(..., postgresql_using='gin')."
            )
    return problems


def check_search_vectors(ctx: _Context) -> list[str]:
    """A ``Searchable`` table adopted online keeps a plain ``search_vector`` by the toolkit's
    trigger (see :mod:`sa_patterns.alembic.adopt_search`): it must exist, be enabled and compute
    the model's expression, or rows written get no vector (or a stale one). A generated column
    needs nothing; a missing column is the missing-migration check's."""
    from .search import SEARCH_INFO, kept_vector

    problems = []
    for table in _tables(ctx.metadata):
        for column in table.columns:
            info = column.info.get(SEARCH_INFO)
            if info is None or _oid(ctx.connection, table) is None:
                continue
            found = kept_vector(ctx.connection, table.schema, table.name)
            problem = None if found is None else found.problem(*info)
            if problem is not None:
                problems.append(
                    f"{table.fullname}.{column.name}: {problem}. Autogenerate and apply a migration "
                    "(it writes op.change_search_vector, which restores the trigger and refills online)."
                )
    return problems


_POPULATED = text(
    "SELECT ispopulated FROM pg_catalog.pg_matviews "
    "WHERE schemaname = coalesce(:schema, current_schema()) AND matviewname = :name"
)


def check_matviews_populated(ctx: _Context) -> list[str]:
    """A materialized view created ``WITH NO DATA`` (or never refreshed since) fails every read
    and cannot be refreshed concurrently."""
    from .schema.objects import MaterializedView

    problems = []
    for entity in registered(ctx.metadata):
        if not isinstance(entity, MaterializedView):
            continue
        populated = ctx.connection.execute(_POPULATED, {"schema": entity.schema, "name": entity.name}).scalar()
        if populated is False:
            problems.append(
                f"materialized view {entity.name} was never refreshed (not populated); run "
                "`sa-patterns refresh` once (without --concurrently)."
            )
    return problems


def _last_refresh_sql(log: str) -> Any:
    from .views import QUALIFIED_NAME

    # {log} is a quoted identifier (views.refresh_log_of); the view's name is a bound parameter
    return text(
        "SELECT extract(epoch FROM clock_timestamp() - refreshed_at) FROM "  # noqa: S608
        f"{log} WHERE view_name = {QUALIFIED_NAME}"
    )


def check_matview_freshness(ctx: _Context) -> list[str]:
    """With ``options["matview_max_age"]`` (seconds): materialized views whose last refresh
    recorded by sa_patterns (``refresh()``, ``refresh_all()``, ``sa-patterns refresh``) is
    older than that, or was never recorded."""
    from .schema.objects import MaterializedView

    max_age = getattr(ctx, "options", {}).get("matview_max_age")
    if max_age is None:
        return []
    from .views import REFRESH_LOG, refresh_log_of

    problems = []
    for entity in registered(ctx.metadata):
        if not isinstance(entity, MaterializedView):
            continue
        name = qualified(entity.schema, entity.name)
        log = refresh_log_of(ctx.connection, entity.schema)
        if log is None:
            problems.append(
                f"materialized view {name}: the refresh log {REFRESH_LOG} is missing (beside it "
                "or on the search path); run the migrations."
            )
            continue
        age = ctx.connection.execute(_last_refresh_sql(log), {"v": name}).scalar()
        if age is None:
            problems.append(f"materialized view {name}: no refresh recorded; refresh it with sa-patterns refresh.")
        elif float(age) > max_age:
            problems.append(
                f"materialized view {name} was last refreshed {duration(float(age))} ago "
                f"(limit {duration(max_age)}); schedule sa-patterns refresh (or pg_cron)."
            )
    return problems


def duration(seconds: float) -> str:
    """An age in the unit that reads best: ``42 s``, ``12.5 min``, ``3.0 h``, ``2.5 d``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
