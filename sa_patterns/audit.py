"""Audit log written by the database: ``Audited``, the ``audit_log`` table and its query helpers.

PostgreSQL does the recording. Each audited table gets one plpgsql function and four
**statement-level** ``AFTER`` triggers: those of INSERT, UPDATE and DELETE have transition tables
(``REFERENCING OLD TABLE / NEW TABLE``) holding every row the statement touched, so a bulk UPDATE
of N rows costs one trigger call and one ``INSERT ... SELECT``, not N calls; TRUNCATE's (which
PostgreSQL gives no rows) writes one ``TRUNCATE`` entry for the statement. ORM, bulk and raw SQL
writes are all recorded, in the writer's transaction (a rollback leaves nothing). The function,
the triggers and the log table are registered on the model's ``MetaData``, so ``alembic revision
--autogenerate`` writes them.

Why the UPDATE statement pairs old and new rows with a ``FULL JOIN`` behind ``OFFSET 0``:
plpgsql caches each statement's plan per connection, planned for the transition table size of
the *first* call. After a 1-row UPDATE an inner join is cached as a nested loop, which turns
quadratic on a later 1,000-row statement (measured 10-700x slower). A full join cannot be run as
a nested loop (only hash or merge joins), so every cached plan stays linear; ``OFFSET 0`` keeps
the planner from reducing it back to an inner/left join. No re-planning per call is paid.

An UPDATE of one row with an unchanged key (an ORM flush) skips that statement: its start-up
(a hash table, an expression per column) is paid on every statement, while plpgsql compiles its
own expressions once per transaction. The function compares the row's jsonb in plpgsql instead.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Iterable, Mapping
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import MetaData, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.sql.elements import ColumnElement

from ._mapping import own_table, when_mapped
from ._transition import NEW, OLD, one_row_probe
from .context import (
    ACTOR_SETTING,
    ALL_TENANTS_SETTING,
    REQUEST_SETTING,
    TENANT_SETTING,
    current_tenant,
    is_all_tenants,
    require_tenant,
)
from .errors import ConfigurationError
from .roles import ADMIN
from .schema import (
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
)
from .schema.access import manage_access, set_privileges
from .schema.sql_text import wrap
from .tenancy import is_tenant_table

__all__ = [
    "AUDIT_LOG_INDEXES",
    "AUDIT_OPERATIONS",
    "Audited",
    "audit_entries",
    "audit_log_table",
    "audit_objects",
    "purge",
]

#: Values of ``audit_log.operation``. ``TRUNCATE`` is one entry per statement and table (key
#: ``{}``, no rows, no tenant: it removed every tenant's rows).
AUDIT_OPERATIONS = ("INSERT", "UPDATE", "DELETE", "SOFT_DELETE", "RESTORE", "TRUNCATE")

#: The log's secondary indexes, by the query they serve (see ``audit_log_table(indexes=...)``).
AUDIT_LOG_INDEXES = ("primary_key", "table", "actor", "recorded_at")

_LOG_KEY = "sa_patterns.audit_log"
# --------------------------------------------------------------------------------------------
# the log table


def audit_log_table(
    metadata: MetaData,
    *,
    name: str = "audit_log",
    schema: str | None = None,
    partition_by_month: bool = False,
    premake: int = 3,
    retention_months: int | None = None,
    indexes: Collection[str] = AUDIT_LOG_INDEXES,
) -> Table:
    """The ``audit_log`` table of ``metadata``, defined on first use.

    The first ``Audited`` model defines it with the defaults; call this before your models to
    choose another name or schema, or monthly partitions. It is a real table on your metadata,
    so autogenerate creates it, its indexes and its append-only guard.

    ``partition_by_month=True`` makes it ``PARTITION BY RANGE (recorded_at)`` (primary key
    ``(id, recorded_at)``) with a maintenance function (see :mod:`sa_patterns.partitioning`) that
    creates the current month and ``premake`` ahead and, with ``retention_months``, drops whole
    months older than that: retention without a ``DELETE``.

    ``indexes`` picks the secondary indexes (of :data:`AUDIT_LOG_INDEXES`); each is paid on
    every logged row. A write-heavy application that only ever asks for one row's history can
    keep ``("primary_key", "recorded_at")``: declared here, autogenerate agrees with it, where an
    index dropped by hand in a migration would be created again by the next revision.
    """
    unknown = set(indexes) - set(AUDIT_LOG_INDEXES)
    if unknown or isinstance(indexes, str):
        raise ConfigurationError(
            f"audit_log_table(indexes=...) takes a collection of {AUDIT_LOG_INDEXES}; "
            f"got {indexes!r}."
        )
    if schema is None:
        schema = metadata.schema  # MetaData(schema=...) places the table there: the guard too
    existing = metadata.info.get(_LOG_KEY)
    if existing is not None:
        if (existing.name, existing.schema) != (name, schema):
            raise ConfigurationError(
                f"this MetaData already has its audit log {qualified(existing.schema, existing.name)}; "
                "call audit_log_table(metadata, name=..., schema=...) before the first Audited "
                "model is defined, and only once."
            )
        table: Table = existing
        return table
    table = Table(
        name,
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        # "C" collation: byte comparisons in its index, no locale rules for identifiers
        sa.Column("table_name", sa.Text(collation="C"), nullable=False),
        sa.Column("operation", sa.Text, nullable=False),
        sa.Column("primary_key", postgresql.JSONB, nullable=False),
        sa.Column("old_row", postgresql.JSONB),
        sa.Column("new_row", postgresql.JSONB),
        sa.Column("changed_columns", postgresql.JSONB),
        sa.Column("actor_id", sa.Text),
        sa.Column("request", postgresql.JSONB),
        sa.Column("transaction_id", sa.BigInteger, nullable=False),
        sa.Column("tenant_id", sa.Text),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
            primary_key=partition_by_month,
        ),
        schema=schema,
        comment="Append-only change log written by sa_patterns triggers.",
    )
    # What the query helpers filter on; kept few and cheap because each is paid on every write.
    # A hash index on the key: no jsonb comparisons on insert (a btree on (table_name,
    # primary_key) cost more than the rest of the trigger together).
    if "primary_key" in indexes:
        sa.Index(ident(name, "primary_key"), table.c.primary_key, postgresql_using="hash")
    if "table" in indexes:
        sa.Index(ident(name, "table"), table.c.table_name, table.c.recorded_at)
    if "actor" in indexes:
        sa.Index(
            ident(name, "actor"),
            table.c.actor_id,
            table.c.recorded_at,
            postgresql_where=table.c.actor_id.is_not(None),
        )
    if "recorded_at" in indexes:
        sa.Index(ident(name, "recorded_at"), table.c.recorded_at, postgresql_using="brin")
    if partition_by_month:
        from .partitioning import partition_table, range_partition

        spec = range_partition("recorded_at", interval="month", premake=premake, retention=retention_months)
        partition_table(table, spec, owner="audit_log_table()")
    metadata.info[_LOG_KEY] = table
    guard = ident(name, "append_only")
    register(
        metadata,
        Function(
            schema,
            guard,
            returns="trigger",
            body=(
                "BEGIN\n"
                "  RAISE EXCEPTION '% is append-only: % is refused', TG_TABLE_NAME, TG_OP\n"
                "    USING ERRCODE = 'insufficient_privilege',\n"
                "    HINT = 'Audit entries are never changed. Its owner removes old ones with "
                "sa_patterns.audit.purge().';\n"
                "END;"
            ),
        ),
        Trigger(
            schema,
            name,
            guard,
            when="BEFORE UPDATE OR DELETE OR TRUNCATE",
            function=f"{qualified(schema, guard)}()",
            for_each="STATEMENT",
        ),
        *_log_wall(table),
    )
    set_privileges(table, ("SELECT", "INSERT"))
    manage_access(metadata)
    return table


def _log_wall(log: Table) -> list[Entity]:
    """Row-level security on the log: the app role reads a tenant's entries only under that
    tenant, and entries of tables without tenants (``tenant_id`` NULL: rows every tenant reads
    anyway); the admin role reads all inside ``all_tenants()``. Inserts (the triggers, as the
    writing role) are not limited. Not FORCEd: the owner purges old entries."""
    tenant = f"NULLIF(current_setting({quote_literal(TENANT_SETTING)}, true), '')"
    everyone = f"current_setting({quote_literal(ALL_TENANTS_SETTING)}, true) = 'on'"
    return [
        RowLevelSecurity(schema=log.schema, table=log.name, force=False),
        Policy(log.schema, log.name, ident(log.name, "tenant_read"), command="SELECT",
               using=f"tenant_id IS NULL OR tenant_id = {tenant}"),
        Policy(log.schema, log.name, ident(log.name, "admin_read"), command="SELECT",
               using=everyone, roles=(ADMIN,)),
        Policy(log.schema, log.name, ident(log.name, "write"), command="INSERT", with_check="true"),
    ]


def _log_for(metadata: MetaData) -> Table:
    table: Table | None = metadata.info.get(_LOG_KEY)
    return table if table is not None else audit_log_table(metadata)


# --------------------------------------------------------------------------------------------
# the trigger function


def _jsonb_keys(names: Iterable[str]) -> str:
    names = list(names)
    if not names:
        return "'{}'::text[]"
    return "ARRAY[" + ", ".join(quote_literal(n) for n in names) + "]::text[]"


_INTEGER_TYPES = (sa.SmallInteger, sa.Integer, sa.BigInteger)


def _json_text(column: sa.Column[Any], expr: str) -> str:
    """SQL for the JSON text of ``expr`` (NULL stays NULL). The trigger builds its jsonb as text
    parsed once: ``jsonb_build_object`` classifies the type of every argument on every call,
    which was the most expensive expression per logged row. An integer's text form is already
    a JSON number; other types go through ``to_json``."""
    return f"{expr}::text" if isinstance(column.type, _INTEGER_TYPES) else f"to_json({expr})::text"


def _json_key(name: str) -> str:
    return quote_literal(json.dumps(name) + ":")


#: PostgreSQL passes at most 100 arguments to a function, ``concat_ws``'s separator included.
_MAX_CONCAT = 99


def _concat_ws(parts: list[str]) -> str:
    """``concat_ws(',', parts...)`` (NULL parts skipped) for any number of parts: beyond 99 they
    go in nested calls, each ``nullif(..., '')`` so that a chunk with nothing to say is skipped
    too, not joined as an empty element."""
    if len(parts) <= _MAX_CONCAT:
        return f"concat_ws(',', {', '.join(parts)})"
    chunks = [parts[i : i + _MAX_CONCAT] for i in range(0, len(parts), _MAX_CONCAT)]
    return _concat_ws([f"nullif({_concat_ws(chunk)}, '')" for chunk in chunks])


def _pk_json(table: Table, values: Mapping[str, str]) -> str:
    """The key as jsonb (key columns are NOT NULL)."""
    parts = [f"{_json_key(name)} || {_json_text(table.c[name], expr)}" for name, expr in values.items()]
    return "('{' || " + " || ',' || ".join(parts) + " || '}')::jsonb"


def _comparable(column: sa.Column[Any]) -> str:
    """What follows a column in the multi-row statement's ``IS DISTINCT FROM`` so that it agrees
    with the one-row path, which compares the values' jsonb: json as jsonb (no ``=`` of its own;
    whitespace and key order are not changes), strings byte for byte (``COLLATE "C"``: a case-only
    change under a case-insensitive collation or citext is a change in the log), and types
    without an ``=`` (xml, geometric) as text."""
    try:
        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        name = column.type.compile(dialect=dialect).split("(")[0].strip().upper()
    except Exception:  # a type the dialect cannot render: compare as text, always valid
        return "::text"
    base, array = name.split("[")[0].strip(), "[" in name
    if base == "JSON":
        return "::jsonb[]" if array else "::jsonb"
    if base in {"XML", "POINT", "LINE", "LSEG", "BOX", "PATH", "POLYGON", "CIRCLE"}:
        return "::text"  # an array compares its elements: xml[] has no = either
    impl = getattr(column.type, "impl_instance", column.type)
    if isinstance(impl, sa.String) and not isinstance(impl, sa.Enum) and not array:
        return "::text COLLATE \"C\""
    return ""


#: jsonb_build_object takes at most 100 arguments: 50 key/value pairs.
_MAX_PAIRS = 50


def _jsonb_object(alias: str, names: list[str]) -> str:
    """``jsonb_build_object`` of ``alias``'s columns ``names``, in calls of at most 50 pairs."""
    calls = [
        "jsonb_build_object("
        + ", ".join(f"{quote_literal(n)}, {alias}.{quote(n)}" for n in names[i : i + _MAX_PAIRS])
        + ")"
        for i in range(0, len(names), _MAX_PAIRS)
    ]
    return " || ".join(calls)


def _single_row_update(table: Table, logged: list[str], target: str, insert_cols: str) -> str:
    """plpgsql for an UPDATE of one row, the ORM's flush: compared in plpgsql rather than by the
    set-based statement. That statement's executor start-up (an expression per column, a hash
    table) is paid on every statement; plpgsql compiles its expressions once per transaction.
    Values are compared as jsonb, whose type never changes under a cached expression: typed
    record fields would fail every later write of a connection after an ``ALTER COLUMN ... TYPE``.
    A changed primary key, or more than one row, goes to the set-based statement."""
    columns = {c.name for c in table.columns}
    pk = [c.name for c in table.primary_key.columns]
    extra = [n for n in ("tenant_id", "deleted_at") if n in columns]
    names = list(dict.fromkeys([*pk, *logged, *extra]))

    def field(side: str, name: str) -> str:
        return f"{side} -> {quote_literal(name)}"

    same_key = " AND ".join(f"{field('sa_oj', c)} = {field('sa_nj', c)}" for c in pk)
    compare = "".join(
        f"""
      IF {field('sa_oj', c)} IS DISTINCT FROM {field('sa_nj', c)} THEN
        sa_ot := sa_ot || {quote_literal("," + json.dumps(c) + ":")} || ({field('sa_oj', c)})::text;
        sa_nt := sa_nt || {quote_literal("," + json.dumps(c) + ":")} || ({field('sa_nj', c)})::text;
        sa_ct := sa_ct || {quote_literal("," + json.dumps(c))};
      END IF;"""
        for c in logged
        if c not in pk  # equal on this path
    )
    pk_json = "jsonb_build_object(" + ", ".join(f"{quote_literal(c)}, {field('sa_nj', c)}" for c in pk) + ")"
    operation = (
        "CASE WHEN sa_oj -> 'deleted_at' = 'null' AND sa_nj -> 'deleted_at' <> 'null' THEN 'SOFT_DELETE'"
        " WHEN sa_nj -> 'deleted_at' = 'null' AND sa_oj -> 'deleted_at' <> 'null' THEN 'RESTORE'"
        " ELSE 'UPDATE' END"
        if "deleted_at" in columns
        else "'UPDATE'"
    )
    tenant = "coalesce(sa_nj ->> 'tenant_id', sa_oj ->> 'tenant_id')" if "tenant_id" in columns else "NULL"
    probe = one_row_probe([_jsonb_object("sa_o", names), _jsonb_object("sa_n", names)], ["sa_oj", "sa_nj"], "sa_rows")
    return f"""\
  IF TG_OP = 'UPDATE' THEN
{probe}    IF sa_rows = 1 AND {same_key} THEN{compare}
      IF sa_ct <> '' THEN
        sa_pk := {pk_json};
        sa_op := {operation};
        sa_tenant := {tenant};
        sa_old_values := ('{{' || substr(sa_ot, 2) || '}}')::jsonb;
        sa_new_values := ('{{' || substr(sa_nt, 2) || '}}')::jsonb;
        sa_changed := ('[' || substr(sa_ct, 2) || ']')::jsonb;
        INSERT INTO {target} ({insert_cols})
        VALUES (sa_table, sa_op, sa_pk, sa_old_values, sa_new_values, sa_changed, sa_actor, sa_request,
                sa_xid, sa_tenant, sa_at);
      END IF;
      RETURN NULL;
    END IF;
  END IF;
"""  # noqa: S608  (quoted identifiers and literals only)


def _function_body(table: Table, log: Table, exclude: Collection[str]) -> str:
    columns = [c.name for c in table.columns]
    pk = [c.name for c in table.primary_key.columns]
    logged = [c for c in columns if c not in exclude]
    drop = f" - {_jsonb_keys(sorted(exclude))}" if exclude else ""
    has_tenant = "tenant_id" in columns
    soft = "deleted_at" in columns
    target = qualified(log.schema, log.name)
    insert_cols = (
        "table_name, operation, primary_key, old_row, new_row, changed_columns, actor_id, "
        "request, transaction_id, tenant_id, recorded_at"
    )
    # The statement's context, once per call in plpgsql variables: as expressions inside the
    # statements below they were compiled again on every call (measured: 5-15% of a one-row
    # statement's server time). Scalar subqueries (InitPlans) cost more than they saved.
    declare = f"""\
#variable_conflict use_variable
DECLARE
  sa_table text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
  sa_actor text := nullif(current_setting({quote_literal(ACTOR_SETTING)}, true), '');
  sa_request jsonb := nullif(current_setting({quote_literal(REQUEST_SETTING)}, true), '')::jsonb;
  sa_xid bigint := pg_current_xact_id()::text::bigint;
  sa_at timestamptz := clock_timestamp();
  sa_rows bigint;
  sa_oj jsonb;
  sa_nj jsonb;
  sa_ot text := '';
  sa_nt text := '';
  sa_ct text := '';
  sa_pk jsonb;
  sa_op text;
  sa_tenant text;
  sa_old_values jsonb;
  sa_new_values jsonb;
  sa_changed jsonb;
"""
    ctx = "sa_actor, sa_request, sa_xid"
    table_expr = "sa_table"
    at = "sa_at"

    def tenant(expr: str) -> str:
        return f"({expr})::text" if has_tenant else "NULL"

    join = " AND ".join(f"sa_o.{quote(c)} = sa_n.{quote(c)}" for c in pk)
    first = quote(f"o_{pk[0]}")
    first_new = quote(f"n_{pk[0]}")
    # key columns are NOT NULL: the old key, or the new one for an unpaired new row
    pk_either = _pk_json(table, {c: f"coalesce(d.{quote('o_' + c)}, d.{quote('n_' + c)})" for c in pk})
    # Typed comparisons (cheap, short-circuiting); jsonb is built only for the changed values,
    # as JSON text joined by concat_ws (which skips the NULLs of unchanged columns).
    inner = [f"sa_o.{quote(c)} AS {quote('o_' + c)}, sa_n.{quote(c)} AS {quote('n_' + c)}" for c in pk]
    flags: list[str] = []
    old_parts: list[str] = []
    new_parts: list[str] = []
    name_parts: list[str] = []
    for i, column in enumerate(logged):
        col = table.c[column]
        cast = _comparable(col)
        flag = f"sa_c{i}"
        flags.append(flag)
        inner.append(f"sa_o.{quote(column)}{cast} IS DISTINCT FROM sa_n.{quote(column)}{cast} AS {flag}")
        if column not in pk:
            inner.append(f"sa_o.{quote(column)} AS {quote('o_' + column)}, sa_n.{quote(column)} AS {quote('n_' + column)}")
        for parts, side in ((old_parts, "o_"), (new_parts, "n_")):
            value = _json_text(col, f"d.{quote(side + column)}")
            parts.append(f"CASE WHEN d.{flag} THEN {_json_key(column)} || coalesce({value}, 'null') END")
        name_parts.append(f"CASE WHEN d.{flag} THEN {quote_literal(json.dumps(column))} END")
    inner.append(f"CASE WHEN sa_n.{quote(pk[0])} IS NULL THEN to_jsonb(sa_o.*){drop} END AS sa_old_row")
    inner.append(f"CASE WHEN sa_o.{quote(pk[0])} IS NULL THEN to_jsonb(sa_n.*){drop} END AS sa_new_row")
    if has_tenant:
        inner.append("coalesce(sa_n.tenant_id, sa_o.tenant_id)::text AS sa_tenant")
    if soft:
        inner.append("sa_o.deleted_at IS NULL AS sa_was_live, sa_n.deleted_at IS NULL AS sa_is_live")

    def obj(parts: list[str], full: str) -> str:
        return f"coalesce(d.{full}, ('{{' || {_concat_ws(parts)} || '}}')::jsonb)"

    paired = f"d.{first} IS NOT NULL AND d.{first_new} IS NOT NULL"
    changed_any = " OR ".join(f"d.{f}" for f in flags) or "false"
    operation = (
        f"CASE WHEN d.{first} IS NULL THEN 'INSERT' WHEN d.{first_new} IS NULL THEN 'DELETE'"
        + (
            " WHEN d.sa_was_live AND NOT d.sa_is_live THEN 'SOFT_DELETE'"
            " WHEN d.sa_is_live AND NOT d.sa_was_live THEN 'RESTORE'"
            if soft
            else ""
        )
        + " ELSE 'UPDATE' END"
    )
    # quoted identifiers and literals only
    update_sql = f"""\
    INSERT INTO {target} ({insert_cols})
    SELECT {table_expr}, {operation},
           {pk_either},
           CASE WHEN d.{first} IS NOT NULL THEN {obj(old_parts, "sa_old_row")} END,
           CASE WHEN d.{first_new} IS NOT NULL THEN {obj(new_parts, "sa_new_row")} END,
           CASE WHEN {paired} THEN ('[' || {_concat_ws(name_parts or ["NULL"])} || ']')::jsonb END,
           {ctx}, {"d.sa_tenant" if has_tenant else "NULL"}, {at}
    FROM (
      SELECT {(","+chr(10)+"             ").join(inner)}
      FROM {OLD} sa_o FULL JOIN {NEW} sa_n ON {join}
      OFFSET 0
    ) d
    WHERE d.{first} IS NULL OR d.{first_new} IS NULL OR {changed_any};"""  # noqa: S608
    return f"""\
{declare}BEGIN
{_single_row_update(table, logged, target, insert_cols)}  IF TG_OP = 'INSERT' THEN
    INSERT INTO {target} ({insert_cols})
    SELECT {table_expr}, 'INSERT', {_pk_json(table, {c: "sa_n." + quote(c) for c in pk})}, NULL, to_jsonb(sa_n.*){drop}, NULL, {ctx},
           {tenant("sa_n.tenant_id")}, {at}
    FROM {NEW} sa_n;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO {target} ({insert_cols})
    SELECT {table_expr}, 'DELETE', {_pk_json(table, {c: "sa_o." + quote(c) for c in pk})}, to_jsonb(sa_o.*){drop}, NULL, NULL, {ctx},
           {tenant("sa_o.tenant_id")}, {at}
    FROM {OLD} sa_o;
  ELSIF TG_OP = 'TRUNCATE' THEN
    -- No rows reach a TRUNCATE trigger: one entry for the statement, key {{}}, no tenant (it
    -- empties every tenant's rows, so every tenant reads it).
    INSERT INTO {target} ({insert_cols})
    VALUES ({table_expr}, 'TRUNCATE', '{{}}'::jsonb, NULL, NULL, NULL, {ctx}, NULL, {at});
  ELSE
    -- Several rows, or a changed key. FULL JOIN: never a nested loop, whatever size the
    -- cached plan was made for. OFFSET 0: keeps it a full join. Unpaired rows are key changes.
{update_sql}
  END IF;
  RETURN NULL;
END;"""  # noqa: S608


def audit_objects(table: Table, log: Table, exclude: Collection[str] = ()) -> list[Entity]:
    """The function and the four statement-level triggers that audit ``table`` into ``log``."""
    if not table.primary_key.columns:
        raise ConfigurationError(
            f"Audited table {table.name!r} has no primary key; the log identifies rows by it. "
            "Declare a primary key."
        )
    fn = ident(table.name, "audit")
    call = f"{qualified(table.schema, fn)}()"
    function = Function(
        table.schema, fn, returns="trigger", body=wrap(_function_body(table, log, exclude))
    )
    triggers = [
        Trigger(
            table.schema,
            table.name,
            ident(table.name, f"audit_{op.lower()[:3]}"),
            when=f"AFTER {op}",
            function=call,
            for_each="STATEMENT",
            referencing=referencing,
        )
        for op, referencing in (
            ("INSERT", f"NEW TABLE AS {NEW}"),
            ("UPDATE", f"OLD TABLE AS {OLD} NEW TABLE AS {NEW}"),
            ("DELETE", f"OLD TABLE AS {OLD}"),
            ("TRUNCATE", ""),  # no transition table: one entry for the statement
        )
    ]
    return [function, *triggers]


# --------------------------------------------------------------------------------------------
# the mixin


class Audited:
    """Mixin: every INSERT, UPDATE, DELETE and TRUNCATE on the table lands in ``audit_log``.

    ``__audit_exclude__ = {"password"}`` keeps columns out of the log (their changes alone
    produce no entry); generated columns are left out too, being derived from logged ones. The triggers are written by Alembic autogenerate (or
    ``sa_patterns.create_all`` in tests), never at ``after_create``.
    """

    __audit_exclude__: ClassVar[Collection[str]] = ()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        when_mapped(cls, _set_up)


def _set_up(mapper: Mapper[Any]) -> None:
    """An audited class is mapped (by any declarative style): register its triggers."""
    cls = mapper.class_
    table = own_table(mapper)
    if table is None:
        return  # single-table-inheritance subclass: the parent's table is audited
    exclude = set(getattr(cls, "__audit_exclude__", ()) or ())
    if isinstance(getattr(cls, "__audit_exclude__", ()), str):
        raise ConfigurationError(
            f"{cls.__name__}.__audit_exclude__ is a string; write a set of column names, "
            f"e.g. {{{cls.__audit_exclude__!r}}}."
        )
    unknown = exclude - set(table.c.keys())
    if unknown:
        raise ConfigurationError(
            f"{cls.__name__}.__audit_exclude__ names {sorted(unknown)}, which are not columns "
            f"of {table.name!r} (columns: {sorted(table.c.keys())}). Use column names."
        )
    pk_excluded = exclude & {c.name for c in table.primary_key.columns}
    if pk_excluded:
        raise ConfigurationError(
            f"{cls.__name__}.__audit_exclude__ names the primary key {sorted(pk_excluded)}; "
            "every entry records its row's key. Remove it from the excludes."
        )
    # Generated columns (Searchable's tsvector, GENERATED ALWAYS AS ... STORED) are derived
    # from columns the log already holds: logging them would only repeat them, larger.
    pk_names = {c.name for c in table.primary_key.columns}
    exclude |= {c.name for c in table.columns if c.computed is not None and c.name not in pk_names}
    log = _log_for(table.metadata)
    if table is log:
        raise ConfigurationError("the audit log itself cannot be Audited.")
    register(table.metadata, *audit_objects(table, log, exclude))


# --------------------------------------------------------------------------------------------
# query helpers

_pg_class = sa.table(
    "pg_class", sa.column("oid"), sa.column("relname"), sa.column("relnamespace"), schema="pg_catalog"
)
_pg_namespace = sa.table("pg_namespace", sa.column("oid"), sa.column("nspname"), schema="pg_catalog")


def table_name_expr(table: Table) -> ColumnElement[str]:
    """``schema.table`` as the triggers write it; resolved by the search path when unqualified."""
    if table.schema:
        return sa.literal(f"{table.schema}.{table.name}", sa.Text)
    regclass = sa.func.to_regclass(sa.literal(quote(table.name), sa.Text))
    found = (
        sa.select(_pg_namespace.c.nspname.concat(".").concat(_pg_class.c.relname))
        .where(_pg_class.c.relnamespace == _pg_namespace.c.oid, _pg_class.c.oid == regclass)
        .scalar_subquery()
    )
    return sa.type_coerce(found, sa.Text)


def _table_of(target: object) -> Table:
    if isinstance(target, Table):
        return target
    mapper = sa.inspect(target, raiseerr=False)
    if isinstance(mapper, Mapper):
        local = mapper.local_table
        if isinstance(local, Table):
            return local
    state_mapper = getattr(mapper, "mapper", None)
    if isinstance(state_mapper, Mapper) and isinstance(state_mapper.local_table, Table):
        return state_mapper.local_table
    raise ConfigurationError(
        f"audit_entries() takes a mapped class, a mapped object or a Table, got {target!r}."
    )


def _primary_key_of(obj: object, table: Table) -> dict[str, Any]:
    state = sa.inspect(obj, raiseerr=True)
    identity = getattr(state, "identity", None)
    if identity is None:
        raise ConfigurationError(
            f"{obj!r} has no primary key yet (not flushed); flush it before asking for its entries."
        )
    mapper = state.mapper
    return {
        col.name: value
        for col, value in zip(mapper.primary_key, identity, strict=True)
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def audit_entries(
    target: object = None,
    *,
    primary_key: Mapping[str, Any] | Any = None,
    actor: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    operations: Iterable[str] | None = None,
    transaction_id: int | None = None,
    metadata: MetaData | None = None,
    session: Session | None = None,
) -> sa.Select[Any]:
    """A ``select()`` of audit entries, oldest first, narrowed by what you pass.

    ``target`` is a mapped class or ``Table`` (its entries) or a mapped object (that row's
    entries). ``primary_key`` is a dict, or a scalar for single-column keys. ``since`` is
    inclusive, ``until`` exclusive. The key, table, actor and time filters are served by the
    log's indexes (those chosen in :func:`audit_log_table`); ``transaction_id`` is not indexed,
    so combine it with a time range on a large log.

    The tenant in scope when the query is built (``session.info`` too, given ``session``)
    narrows it like the models: a tenant model's entries are its tenant's only (and the
    table's ``TRUNCATE`` entries, which removed every tenant's rows), and none in
    scope raises :class:`~sa_patterns.TenantRequired`; without ``target``, a tenant in scope
    keeps its own entries and those of tables without tenants. ``all_tenants()`` lifts both.
    """
    table = _table_of(target) if target is not None else None
    md = table.metadata if table is not None else metadata
    if md is None or md.info.get(_LOG_KEY) is None:
        raise ConfigurationError(
            "audit_entries() needs an Audited model (or metadata=) whose MetaData has an audit log."
        )
    log: Table = md.info[_LOG_KEY]
    query = sa.select(log).order_by(log.c.id)
    if not is_all_tenants(session):
        if table is not None and is_tenant_table(table):
            scoped = require_tenant(session, what=f"audit_entries() of {table.name}")
            # a TRUNCATE removed every tenant's rows: its entry (no tenant) is each tenant's too
            query = query.where(sa.or_(
                log.c.tenant_id == str(scoped),
                sa.and_(log.c.tenant_id.is_(None), log.c.operation == "TRUNCATE"),
            ))
        elif table is None and (tenant := current_tenant(session)) is not None:
            query = query.where(sa.or_(log.c.tenant_id.is_(None), log.c.tenant_id == str(tenant)))
    if table is not None:
        query = query.where(log.c.table_name == table_name_expr(table))
        if target is not None and not isinstance(target, (type, Table)):
            primary_key = _primary_key_of(target, table)
    if primary_key is not None:
        if table is None:
            raise ConfigurationError("audit_entries(primary_key=...) needs the model as target.")
        if not isinstance(primary_key, Mapping):
            pk_cols = list(table.primary_key.columns)
            if len(pk_cols) != 1:
                raise ConfigurationError(
                    f"{table.name!r} has a composite key; pass primary_key as a dict of "
                    f"{[c.name for c in pk_cols]}."
                )
            primary_key = {pk_cols[0].name: primary_key}
        value = {k: _jsonable(v) for k, v in primary_key.items()}
        query = query.where(log.c.primary_key == sa.cast(sa.literal(value, postgresql.JSONB), postgresql.JSONB))
    if actor is not None:
        query = query.where(log.c.actor_id == str(actor))
    if since is not None:
        query = query.where(log.c.recorded_at >= since)
    if until is not None:
        query = query.where(log.c.recorded_at < until)
    if operations is not None:
        ops = list(operations)
        bad = set(ops) - set(AUDIT_OPERATIONS)
        if bad:
            raise ConfigurationError(f"unknown audit operations {sorted(bad)}; use {AUDIT_OPERATIONS}.")
        query = query.where(log.c.operation.in_(ops))
    if transaction_id is not None:
        query = query.where(log.c.transaction_id == transaction_id)
    return query


def purge(bind: Any, metadata: MetaData, *, before: dt.datetime) -> int:
    """Delete audit entries recorded before ``before``; returns how many. Owner only.

    The append-only guard refuses every ``DELETE``; this lifts it for the current transaction
    only (``ALTER TABLE ... DISABLE TRIGGER``, which only the table's owner, typically the
    migration role, may run) and puts it back before returning. A partitioned log does not need
    this: its maintenance function drops whole months past the retention instead.
    ``bind`` is a ``Connection`` or ``Session`` inside a transaction you commit.
    """
    log: Table | None = metadata.info.get(_LOG_KEY)
    if log is None:
        raise ConfigurationError("purge(): this MetaData has no audit log (no Audited model).")
    target = qualified(log.schema, log.name)
    guard = quote(ident(log.name, "append_only"))
    bind.execute(sa.text(f"ALTER TABLE {target} DISABLE TRIGGER {guard}"))
    try:
        result = bind.execute(sa.delete(log).where(log.c.recorded_at < before))
    finally:
        bind.execute(sa.text(f"ALTER TABLE {target} ENABLE TRIGGER {guard}"))
    return int(result.rowcount)
