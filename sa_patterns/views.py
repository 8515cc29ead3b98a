"""View and materialized-view models: a mapped class whose rows come from a ``select()``.

A class declares ``__tablename__``, its ``Mapped[]`` columns and ``__select__``::

    class CustomerTotals(View, Base):
        __tablename__ = "customer_totals"
        __select__ = select(Order.customer_id, func.sum(Order.amount).label("total")).group_by(
            Order.customer_id
        )
        customer_id: Mapped[int] = mapped_column(primary_key=True)
        total: Mapped[Decimal]

The class is queried like any model and may take part in relationships. Its ``Table`` is
flagged :data:`~sa_patterns.schema.NOT_A_TABLE`, so neither ``create_all`` nor Alembic creates
it as a table; instead a :class:`sa_patterns.schema.View` (or ``MaterializedView``, with the
indexes declared on the class) is registered on the metadata and autogenerate creates, replaces
and drops it. On SQLAlchemy 2.1 the ``Table`` also carries 2.1's own ``CreateView``, so even a
plain ``metadata.create_all()`` emits ``CREATE VIEW`` for it.

Views are read-only in the ORM: an installed session refuses to flush or bulk-write them
(:class:`~sa_patterns.errors.ReadOnlyError`), and each view mapper refuses too as a backstop.

**Materialized views under the database wall.** PostgreSQL refreshes a materialized view only
for its owner, and runs the query *as* the owner, whom ``FORCE ROW LEVEL SECURITY`` binds to
the tenant policies. So each materialized view gets a refresh function (:class:`MatviewRefresh`,
``<view>_refresh(concurrent boolean)``): ``SECURITY DEFINER``, owned by the role that migrates
(the owner), ``search_path`` pinned, ``EXECUTE`` for the app and admin roles only. It turns on
the transaction-local ``sa_patterns.refresh`` around its ``REFRESH``, which the
``<table>_matview_refresh`` policy on each RLS table the view reads honours for the table's
owner alone (:func:`refresh_policy`), and records the refresh. ``refresh()``, :func:`refresh_all`
and ``sa-patterns refresh`` call it.

A materialized view no policy can cover would hand every tenant's rows to every reader, so one
whose model maps ``tenant_id`` is a *tenant* materialized view: its rows are stored under
``<name>_all_tenants`` (no role but the owner may read it) and ``<name>`` is a
``security_barrier`` view of the current tenant's rows (:class:`TenantView`); the model is
filtered by the ORM like a ``TenantMixin`` model too.
"""

from __future__ import annotations

import re
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any, ClassVar, overload

import sqlalchemy.sql.ddl as _sa_ddl
from sqlalchemy import DDL, Column, DateTime, Index, MetaData, Table, Text, event, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, UOWTransaction
from sqlalchemy.schema import CreateIndex
from sqlalchemy.sql.selectable import SelectBase
from sqlalchemy.sql.sqltypes import NullType
from sqlalchemy.sql.util import find_tables

from ._mapping import own_table, when_mapped
from .context import ALL_TENANTS_SETTING, TENANT_SETTING
from .errors import ConfigurationError, ReadOnlyError
from .pattern import Pattern
from .roles import ADMIN, APP, OWNER, resolve_role
from .schema import objects
from .schema.access import set_privileges
from .schema.objects import (
    COMMENT_PREFIX,
    Entity,
    Policy,
    RowLevelSecurity,
    ident,
    qualified,
    quote,
    quote_literal,
)
from .schema.registry import _PROVIDERS, NOT_A_TABLE, provide, register, registered
from .schema.sql_text import wrap
from .schema.view_catalog import read_view_graph
from .tenancy.criteria import enroll
from .tenancy.rls import _sql_type, owner_rights
from .tenancy.tables import _kind

if TYPE_CHECKING:
    from sqlalchemy.sql.type_api import TypeEngine

__all__ = [
    "PATTERN",
    "REFRESH_SETTING",
    "MaterializedView",
    "MatviewRefresh",
    "RlsMaterializedView",
    "TenantView",
    "View",
    "compile_definition",
    "refresh_all",
    "refresh_function_name",
    "refresh_policy",
    "tenant_storage_name",
]

# "named" paramstyle: literals render with a single "%" (the default psycopg2 dialect doubles it).
_PG = postgresql.dialect(paramstyle="named")  # type: ignore[no-untyped-call]
# SQLAlchemy 2.1's CREATE VIEW construct; absent on 2.0, where the select compiles directly.
_CreateView: Any = getattr(_sa_ddl, "CreateView", None)
_DropView: Any = getattr(_sa_ddl, "DropView", None)


def compile_definition(
    select: SelectBase, name: str, schema: str | None = None, *, materialized: bool = False
) -> str:
    """The SQL text of a view's query, values rendered as literals (DDL takes no parameters),
    laid out for a migration's reader (:func:`~sa_patterns.schema.sql_text.wrap`; views are
    compared as PostgreSQL prints them, so the layout is never a diff).

    On SQLAlchemy 2.1 it is what ``CreateView`` compiles after ``AS``; on 2.0 the same select
    compiled with ``literal_binds`` (which is what ``CreateView`` does internally).
    """
    if _CreateView is not None:
        ddl = str(_CreateView(select, name, schema=schema, materialized=materialized).compile(dialect=_PG))
        header = f"CREATE {'MATERIALIZED ' if materialized else ''}VIEW {qualified(schema, name)} AS "
        if ddl.startswith(header):
            return wrap(ddl[len(header) :].strip())
    return wrap(str(select.compile(dialect=_PG, compile_kwargs={"literal_binds": True})).strip())


def _read_only(cls: type) -> ReadOnlyError:
    table: Table = cls.__table__  # type: ignore[attr-defined]
    extra = (
        f" and refresh it with {cls.__name__}.refresh(session)"
        if issubclass(cls, MaterializedView)
        else ""
    )
    return ReadOnlyError(
        f"{cls.__name__} maps the view {qualified(table.schema, table.name)}: its rows come from "
        f"its __select__ and cannot be inserted, updated or deleted through the ORM. Write to "
        f"the tables it reads instead{extra}."
    )


def _refuse(mapper: Mapper[Any], connection: Connection, target: object) -> None:
    raise _read_only(mapper.class_)


class _ViewModel:
    """What :class:`View` and :class:`MaterializedView` share; not used directly."""

    #: the query whose rows the view holds (required): a select(), union, ...
    __select__: ClassVar[SelectBase]
    #: ``WITH (security_invoker = true)``: ``None`` means "on when the view reads a table with
    #: row-level security registered on the same metadata" (plain views only, PostgreSQL 15+)
    __security_invoker__: ClassVar[bool | None] = None
    #: the database object registered for this class (set at class creation): for a tenant
    #: materialized view, the materialized view holding every tenant's rows
    __view_entity__: ClassVar[objects.View | objects.MaterializedView]
    #: materialized views only: ``False`` creates it empty (``WITH NO DATA``) until refreshed
    __with_data__: ClassVar[bool] = True
    #: materialized views only: ``None`` makes one that maps a ``tenant_id`` column a tenant
    #: materialized view (stored under ``<name>_all_tenants``, read through a view of the current
    #: tenant's rows, filtered by the ORM); ``False`` lets every reader see every row (an
    #: aggregate meant to cross tenants); ``True`` insists on it
    __tenant_scoped__: ClassVar[bool | None] = None
    #: a tenant materialized view's tenant-filtered view (set at class creation), else None
    __tenant_view__: ClassVar[TenantView | None] = None
    _materialized: ClassVar[bool] = False

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "__tablename__" in cls.__dict__:
            when_mapped(cls, _set_up)


def _set_up(mapper: Mapper[Any]) -> None:
    """A view class is mapped (by any declarative style): register its view."""
    table = own_table(mapper)
    if table is None:
        raise ConfigurationError(
            f"{mapper.class_.__name__} is a view model but maps no table of its own: give it "
            "__tablename__ and its columns as Mapped[] attributes."
        )
    _configure(mapper.class_, table)


def _configure(cls: type[_ViewModel], table: Table) -> None:
    select = getattr(cls, "__select__", None)
    if not isinstance(select, SelectBase):
        raise ConfigurationError(
            f"{cls.__name__} needs __select__ = select(...): the query whose rows the view "
            f"holds (got {type(select).__name__})."
        )
    produced = [str(getattr(c, "name", c.key)) for c in select.selected_columns]
    duplicates = sorted({n for n in produced if produced.count(n) > 1})
    if duplicates:
        raise ConfigurationError(
            f"{cls.__name__}.__select__ produces the column name(s) {', '.join(duplicates)} "
            f"more than once; give each a distinct .label()."
        )
    missing = [c.name for c in table.columns if c.name not in produced]
    if missing:
        raise ConfigurationError(
            f"{cls.__name__} maps column(s) {', '.join(missing)} that its __select__ does not "
            f"produce (it produces {', '.join(produced)}). Label the select's expressions to "
            f"match (.label('name')) or remove the attributes."
        )
    materialized = cls._materialized
    invoker = cls.__security_invoker__
    if materialized:
        if invoker:
            raise ConfigurationError(
                f"{cls.__name__}: security_invoker applies to plain views only; a materialized "
                f"view stores what the role running REFRESH sees."
            )
        invoker = False
    elif table.indexes:
        raise ConfigurationError(
            f"{cls.__name__} declares indexes, but a plain view stores no rows to index; "
            f"subclass MaterializedView instead."
        )
    elif invoker is None:
        invoker = _reads_rls_table(select, table)
    table.info[NOT_A_TABLE] = True
    table.metadata.info.setdefault(_SELECTS_KEY, {})[table.key] = select
    if materialized:
        _configure_materialized(cls, table, select, produced)
    else:
        definition = compile_definition(select, table.name, table.schema)
        entity = objects.View(table.schema, table.name, definition, security_invoker=invoker)
        cls.__view_entity__ = entity
        register(table.metadata, entity)
    if _CreateView is not None:
        # SQLAlchemy 2.1: a plain metadata.create_all()/drop_all() handles it as a view too.
        options = {"postgresql_with": {"security_invoker": True}} if invoker else {}
        table.set_creator_ddl(  # type: ignore[attr-defined, unused-ignore]  # 2.1 API
            _CreateView(select, table.name, schema=table.schema, materialized=materialized, **options)
        )
        table.set_dropper_ddl(  # type: ignore[attr-defined, unused-ignore]  # 2.1 API
            _DropView(table, materialized=materialized)
        )
    for name in ("before_insert", "before_update", "before_delete"):
        event.listen(cls, name, _refuse)


def _configure_materialized(
    cls: type[_ViewModel], table: Table, select: SelectBase, produced: list[str]
) -> None:
    """Register a materialized view model's objects: the materialized view (under its own name,
    or for a tenant one under ``<name>_all_tenants`` with the tenant view under ``<name>``), its
    refresh function, and the refresh policy of each RLS table it reads."""
    metadata = table.metadata
    refresh_log_table(metadata)
    tenant = _tenant_column(cls, table, select)
    storage = table.name
    if tenant is not None:
        storage = tenant_storage_name(table.name)
        clash = metadata.tables.get(storage if table.schema is None else f"{table.schema}.{storage}")
        if clash is not None:
            raise ConfigurationError(
                f"{cls.__name__} is a tenant materialized view, whose rows are stored under "
                f"{storage}, but the models already have a table of that name. Rename one of "
                f"them, or set __tenant_scoped__ = False."
            )
    definition = compile_definition(select, storage, table.schema, materialized=True)
    indexes = tuple(
        _index_sql(ix, table, storage) for ix in sorted(table.indexes, key=lambda ix: str(ix.name))
    )
    walled = _rls_tables_read(select, metadata)
    stored = RlsMaterializedView if walled else objects.MaterializedView
    entity = stored(table.schema, storage, definition, indexes=indexes, with_data=cls.__with_data__)
    cls.__view_entity__ = entity
    register(metadata, *(refresh_policy(source) for source in walled))
    register(metadata, entity)
    if tenant is not None:
        tenant_kind, sql_type = tenant
        reader = TenantView(
            table.schema,
            table.name,
            _tenant_filter(table.schema, storage, produced, sql_type),
            source=storage,
        )
        cls.__tenant_view__ = reader
        register(metadata, reader)
        # the ORM's wall: criteria on every statement, TenantRequired without a tenant
        cls.__sa_tenant_kind__ = tenant_kind  # type: ignore[attr-defined]
        enroll(tenant_kind, cls)
    metadata.info.setdefault(_MATVIEWS_KEY, {})[table.key] = (table.schema, storage)
    provide(metadata, "matview_refresh", _refresh_functions)


def _tenant_column(
    cls: type[_ViewModel], table: Table, select: SelectBase
) -> tuple[str, str] | None:
    """``(kind, SQL type)`` of a tenant materialized view's ``tenant_id``; ``None`` for one
    that is not scoped by tenant."""
    scoped = cls.__tenant_scoped__
    if scoped is False or "tenant_id" not in table.c:
        if scoped:
            raise ConfigurationError(
                f"{cls.__name__} sets __tenant_scoped__ = True but maps no tenant_id column: "
                f"select the tenant_id of the rows it aggregates and map it."
            )
        return None
    produced = select.selected_columns.get("tenant_id")
    type_: TypeEngine[Any] = table.c.tenant_id.type
    if produced is not None and not isinstance(produced.type, NullType):
        type_ = produced.type
    try:
        kind = _kind(type_)
    except ConfigurationError:
        raise ConfigurationError(
            f"{cls.__name__} maps tenant_id as {type_!r}: a tenant materialized view's tenant_id "
            f"is an integer, UUID or string like TenantMixin's. Select the tenant models' "
            f"tenant_id, or set __tenant_scoped__ = False if the view is not per tenant."
        ) from None
    return kind, _sql_type(type_, kind)


_INDEX_TARGET = re.compile(
    r'^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?'
    r'(?:"(?:[^"]|"")+"|[^\s(]+)\s+ON\s+',
    re.IGNORECASE,
)


def _index_sql(index: Index, table: Table, storage: str) -> str:
    """``CREATE INDEX`` of a model's index, on ``storage`` (where the rows are stored)."""
    sql = str(CreateIndex(index).compile(dialect=_PG))
    if storage == table.name:
        return sql
    match = _INDEX_TARGET.match(sql)
    target = qualified(table.schema, table.name)
    if match is None or not sql[match.end() :].startswith(target):
        raise ConfigurationError(f"cannot move index {index.name} to {storage}: {sql}")
    return sql[: match.end()] + qualified(table.schema, storage) + sql[match.end() + len(target) :]


def _rls_tables_read(select: SelectBase, metadata: MetaData) -> list[Table]:
    """The tables with forced row-level security that ``select`` reads, directly or through
    view models (whose own queries are followed)."""
    forced = {
        (e.schema or "", e.table) for e in registered(metadata) if isinstance(e, RowLevelSecurity) and e.force
    }
    found: dict[tuple[str, str], Table] = {}
    pending, followed = [select], set()
    while pending:
        query = pending.pop()
        for table in find_tables(query, include_joins=True, include_aliases=True, include_selects=True):
            if not isinstance(table, Table):
                continue
            inner = table.metadata.info.get(_SELECTS_KEY, {}).get(table.key)
            if inner is not None:
                if id(inner) not in followed:
                    followed.add(id(inner))
                    pending.append(inner)
            elif (table.schema or "", table.name) in forced:
                found[(table.schema or "", table.name)] = table
    return list(found.values())


def _reads_rls_table(select: SelectBase, table: Table) -> bool:
    rls = {
        (e.schema or "", e.table)
        for e in registered(table.metadata)
        if isinstance(e, RowLevelSecurity)
    }
    return any(
        isinstance(t, Table) and (t.schema or "", t.name) in rls
        for t in find_tables(select, include_joins=True, include_aliases=True, include_selects=True)
    )


class View(_ViewModel):
    """Mixin for a mapped class backed by a plain ``CREATE VIEW``; put it before your base."""

    __abstract__ = True


# -- materialized views under the wall ------------------------------------------------------

#: Bookkeeping in ``MetaData.info``: ``{table.key: select}`` of every view model (followed to
#: find the tables a materialized view reads), and ``{table.key: (schema, name)}`` of the
#: materialized view behind each materialized view model.
_SELECTS_KEY = "sa_patterns.view_selects"
_MATVIEWS_KEY = "sa_patterns.matviews"

#: The transaction-local setting a refresh function turns on around its ``REFRESH``. Anyone can
#: set a custom setting, so it opens nothing alone: the policies and views honouring it also
#: ask that the role running the query be the owner of what it reads, which only code running
#: as the owner (a ``SECURITY DEFINER`` function, a ``REFRESH``) is; a view the owner owns,
#: read by the app role, still runs as the app role.
REFRESH_SETTING = "sa_patterns.refresh"
_REFRESHING = f"pg_catalog.current_setting({quote_literal(REFRESH_SETTING)}, true) = 'on'"


def tenant_storage_name(name: str) -> str:
    """Where a tenant materialized view named ``name`` stores every tenant's rows."""
    return ident(name, "all_tenants")


def refresh_function_name(view: str) -> str:
    """The refresh function of the materialized view ``view`` (in the same schema)."""
    return ident(view, "refresh")


def refresh_policy(table: Table) -> Policy:
    """The policy letting the owner of ``table`` read all of it while a refresh function runs
    (``FOR SELECT``: it writes nothing). ``TO`` the owner role (``@owner``), whom PostgreSQL
    runs a ``REFRESH`` as; ``TO CURRENT_USER`` (the migrating role) when the models manage no
    roles, so no ``@owner`` role may exist."""
    managed = "access" in table.metadata.info.get(_PROVIDERS, {})
    return Policy(
        schema=table.schema,
        table=table.name,
        name=ident(table.name, "matview_refresh"),
        using=f"{_REFRESHING} AND {owner_rights(qualified(table.schema, table.name))}",
        command="SELECT",
        roles=(OWNER,) if managed else ("CURRENT_USER",),
    )


def _tenant_filter(schema: str | None, storage: str, columns: Sequence[str], sql_type: str) -> str:
    """The query of a tenant view: the rows of the current tenant (``app.tenant_id``); every
    row for a member of the admin role inside ``all_tenants()``, and for the owner during a
    refresh (a materialized view reading this one)."""
    source = qualified(schema, storage)
    tenant = f"NULLIF(pg_catalog.current_setting({quote_literal(TENANT_SETTING)}, true), '')::{sql_type}"
    # a missing admin role gives NULL (no row), not an error on every read
    admin = (
        f"pg_catalog.current_setting({quote_literal(ALL_TENANTS_SETTING)}, true) = 'on' AND "  # noqa: S608
        "pg_catalog.pg_has_role((SELECT r.oid FROM pg_catalog.pg_roles r "
        f"WHERE r.rolname = {quote_literal(ADMIN)}), 'USAGE')"
    )
    return (
        f"SELECT {', '.join('d.' + quote(c) for c in columns)}\n"
        f"FROM {source} AS d\n"
        f"WHERE d.tenant_id = {tenant}\n"
        f"   OR ({admin})\n"
        f"   OR ({_REFRESHING} AND {owner_rights(source)})"
    )


@dataclass(frozen=True)
class RlsMaterializedView(objects.MaterializedView):
    """A materialized view reading tables under forced row-level security. Created ``WITH
    DATA`` as the owner, its first rows would be what the tenant policies show a role with no
    tenant: none. So its creation runs with ``sa_patterns.refresh`` on (transaction-local, off
    again right after), like a refresh: every tenant's rows, each time a migration (re)builds
    it."""

    kind: ClassVar[str] = "rls_materialized_view"

    def create_sql(self) -> list[str]:
        statements = super().create_sql()
        if not self.with_data:
            return statements
        setting = quote_literal(REFRESH_SETTING)
        return [
            f"SELECT pg_catalog.set_config({setting}, 'on', true)",
            *statements,
            f"SELECT pg_catalog.set_config({setting}, '', true)",
        ]


@dataclass(frozen=True)
class TenantView(Entity):
    """What a tenant materialized view's model reads: a ``security_barrier`` view (the
    reader's own conditions cannot see a row before the tenant filter has dropped it) of the
    current tenant's rows of ``source``, the materialized view holding every tenant's. Owned
    by the owner, whose rights it reads ``source`` with; creating or replacing it also revokes
    every privilege on ``source`` from every role but its owner (default privileges included),
    so the app and admin roles read the rows through this view only. ``definition`` names the
    admin role by its placeholder, resolved when the SQL runs.

    Not a :class:`sa_patterns.schema.View` (whose options are ``security_invoker`` alone): its
    ``relkind`` tells autogenerate's view planning to rebuild it with the views it reads."""

    schema: str | None
    name: str
    #: the query (generated from the model's columns), the admin role as its placeholder
    definition: str
    #: the materialized view holding every tenant's rows
    source: str = ""

    kind: ClassVar[str] = "tenant_view"
    #: with the views (a materialized view over this one comes after it, in declaration order)
    order: ClassVar[int] = 50
    #: what it is in ``pg_class`` (read by :mod:`sa_patterns.alembic.view_plan`)
    relkind: ClassVar[str] = "v"

    def key(self) -> tuple[str, ...]:
        return (self.kind, self.schema or "", self.name)

    def comment_target(self) -> str:
        return f"VIEW {qualified(self.schema, self.name)}"

    def _with(self) -> str:
        return " WITH (security_barrier = true)"

    def _query(self) -> str:
        return self.definition.replace(quote_literal(ADMIN), quote_literal(resolve_role(ADMIN)))

    def _lock_source(self) -> list[str]:
        source = quote_literal(qualified(self.schema, self.source))
        return [
            "DO $sa_patterns$\n"  # noqa: S608  (the view's name as a literal)
            "DECLARE sa_grantee oid;\n"
            "BEGIN\n"
            "  FOR sa_grantee IN SELECT DISTINCT a.grantee FROM pg_catalog.pg_class c\n"
            "      CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a\n"
            f"      WHERE c.oid = {source}::pg_catalog.regclass AND a.grantee <> c.relowner\n"
            "  LOOP\n"
            f"    EXECUTE 'REVOKE ALL ON ' || {source}::pg_catalog.regclass::text || ' FROM ' ||\n"
            "      CASE WHEN sa_grantee = 0 THEN 'PUBLIC'\n"
            "           ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(sa_grantee)) END;\n"
            "  END LOOP;\n"
            "END $sa_patterns$"
        ]

    def create_sql(self) -> list[str]:
        view = qualified(self.schema, self.name)
        return [f"CREATE VIEW {view}{self._with()} AS\n{self._query()}", *self._lock_source()]

    def replace_sql(self, old: Entity) -> list[str]:
        view = qualified(self.schema, self.name)
        return [f"CREATE OR REPLACE VIEW {view}{self._with()} AS\n{self._query()}", *self._lock_source()]

    def drop_sql(self) -> list[str]:
        return [f"DROP VIEW IF EXISTS {qualified(self.schema, self.name)}"]

    def same_in_database(self, old: Entity, connection: Connection) -> bool:
        # generated from the model's columns alone (no user SQL): the spec says it all; the
        # materialized view it reads is compared (and rebuilt, with this view) on its own
        return self.same_definition(old)


_REFRESH_BODY = """CREATE OR REPLACE FUNCTION %1$I.{function}(concurrent boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $sa_refresh$
DECLARE
  sa_outer text := pg_catalog.current_setting('{setting}', true);
BEGIN
  -- the owner reads every tenant's rows while this is on (the matview_refresh policies)
  PERFORM pg_catalog.set_config('{setting}', 'on', true);
  -- a view never populated cannot be refreshed concurrently (and has no reader to spare)
  IF concurrent AND (SELECT c.relispopulated FROM pg_catalog.pg_class c
                     WHERE c.oid = %3$L::pg_catalog.regclass) THEN
    REFRESH MATERIALIZED VIEW CONCURRENTLY %1$I.{view};
  ELSE
    REFRESH MATERIALIZED VIEW %1$I.{view};
  END IF;
  IF pg_catalog.to_regclass(%4$L) IS NOT NULL THEN
    INSERT INTO %2$I.{log} (view_name, refreshed_at)
    VALUES (%5$L, pg_catalog.clock_timestamp())
    ON CONFLICT (view_name) DO UPDATE SET refreshed_at = EXCLUDED.refreshed_at;
  END IF;
  PERFORM pg_catalog.set_config('{setting}', COALESCE(sa_outer, ''), true);
END
$sa_refresh$"""


@dataclass(frozen=True)
class MatviewRefresh(Entity):
    """``<view>_refresh(concurrent boolean DEFAULT false)``: refreshes the materialized view
    ``view`` (concurrently when asked and it is populated) for any role allowed to execute it,
    with every tenant's rows, and records the refresh in the refresh log.

    ``SECURITY DEFINER``: it runs as its owner, the role that created it (the owner, who owns
    the view too: PostgreSQL refreshes a view only for its owner). ``search_path`` is pinned to
    ``pg_catalog, pg_temp`` and every name in it is schema-qualified, resolved when it is
    created (the current schema when the model names none). ``EXECUTE`` is revoked from
    ``PUBLIC`` and granted to ``roles`` (placeholders: the app and admin roles when the models
    manage roles)."""

    schema: str | None
    view: str
    name: str
    #: the refresh log's schema (``None``: the current schema when the function is created)
    log_schema: str | None = None
    roles: tuple[str, ...] = ()

    kind: ClassVar[str] = "matview_refresh"
    #: after the views (and their tenant views), before the grants
    order: ClassVar[int] = 55

    def key(self) -> tuple[str, ...]:
        return (self.kind, self.schema or "", self.name)

    def signature(self) -> str:
        return f"{qualified(self.schema, self.name)}(boolean)"

    def comment_target(self) -> str:
        return f"FUNCTION {self.signature()}"

    def create_sql(self) -> list[str]:
        def name(value: str) -> str:
            return quote(value).replace("%", "%%")  # format() reads "%" as a placeholder

        body = _REFRESH_BODY.format(
            function=name(self.name), view=name(self.view), log=name(REFRESH_LOG), setting=REFRESH_SETTING
        )
        schema = quote_literal(self.schema) if self.schema else "pg_catalog.current_schema()"
        log_schema = quote_literal(self.log_schema) if self.log_schema else "pg_catalog.current_schema()"
        view, log = quote_literal(self.view), quote_literal(REFRESH_LOG)
        arguments = [
            schema,
            log_schema,
            f"pg_catalog.quote_ident({schema}) || '.' || pg_catalog.quote_ident({view})",
            f"pg_catalog.quote_ident({log_schema}) || '.' || pg_catalog.quote_ident({log})",
            f"{schema} || '.' || {view}",  # the log's key, as QUALIFIED_NAME spells it
        ]
        statements = [
            "DO $sa_patterns$ BEGIN EXECUTE pg_catalog.format(\n"
            f"{quote_literal(body)},\n{', '.join(arguments)}); END $sa_patterns$",
            f"REVOKE ALL ON FUNCTION {self.signature()} FROM PUBLIC",
        ]
        if self.roles:
            grantees = ", ".join(quote(resolve_role(r)) for r in self.roles)
            statements.append(f"GRANT EXECUTE ON FUNCTION {self.signature()} TO {grantees}")
        return statements

    def drop_sql(self) -> list[str]:
        return [f"DROP FUNCTION IF EXISTS {self.signature()}"]


def _refresh_functions(metadata: MetaData) -> list[Entity]:
    """The refresh function of every materialized view model of ``metadata``; executable by the
    app and admin roles when the models manage roles (:func:`sa_patterns.schema.access.manage_access`,
    which tenant models with row-level security call)."""
    roles = (APP, ADMIN) if "access" in metadata.info.get(_PROVIDERS, {}) else ()
    return [
        MatviewRefresh(schema, storage, refresh_function_name(storage), metadata.schema, roles)
        for schema, storage in metadata.info.get(_MATVIEWS_KEY, {}).values()
    ]


# -- materialized views ---------------------------------------------------------------------

# Whether it is populated, has a unique index CONCURRENTLY can use, and its refresh function
# (one stamped as ours, for this view, beside it), qualified: NULL for a view without one.
_MATVIEW_STATE = text(
    "SELECT c.relispopulated, EXISTS (SELECT 1 FROM pg_catalog.pg_index i "
    "WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid "
    "AND i.indpred IS NULL AND i.indexprs IS NULL), "
    "(SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(p.proname) "
    " FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
    " JOIN pg_catalog.pg_description d ON d.objoid = p.oid AND d.objsubid = 0 "
    "  AND d.classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass "
    " WHERE p.pronamespace = c.relnamespace AND p.proname = :function "
    "  AND pg_catalog.starts_with(d.description, :stamp) "
    "  AND pg_catalog.substr(d.description, :skip)::jsonb @> "
    "      pg_catalog.jsonb_build_object('kind', CAST(:kind AS text), 'view', c.relname)), "
    "current_user "
    "FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass(:name) AND c.relkind = 'm'"
)
_SEARCH_PATH = text("SELECT unnest(pg_catalog.current_schemas(false))")


def _unique_index_hint(label: str) -> str:
    return (
        f"REFRESH ... CONCURRENTLY needs a unique index on {label} over plain columns "
        f"(no expression, no WHERE) that identify a row: declare "
        f"__table_args__ = (Index('ix_name', 'col', unique=True),) on the class and run the "
        f"migration autogenerate writes, or refresh with concurrently=False."
    )


def _matview_state(connection: Connection, schema: str | None, name: str) -> Any:
    parameters = {
        "name": qualified(schema, name),
        "function": refresh_function_name(name),
        "stamp": COMMENT_PREFIX,
        "skip": len(COMMENT_PREFIX) + 1,
        "kind": MatviewRefresh.kind,
    }
    return connection.execute(_MATVIEW_STATE, parameters).first()


def _refresh(connection: Connection, schema: str | None, name: str, concurrently: bool) -> str:
    """Refresh one materialized view through its refresh function, or, for one without (made
    by hand, or migrated before the functions existed), with ``REFRESH`` itself."""
    target = qualified(schema, name)
    state = _matview_state(connection, schema, name)
    if state is None:
        raise ConfigurationError(
            f"materialized view {target} does not exist in this database; apply the "
            f"migrations (alembic upgrade head) or sa_patterns.create_all() first."
        )
    populated, has_unique, function, role = bool(state[0]), bool(state[1]), state[2], state[3]
    if concurrently and not has_unique:
        raise ConfigurationError(_unique_index_hint(target))
    # A never-populated view cannot be refreshed concurrently, and has no readers to spare.
    concurrent = concurrently and populated
    try:
        if function is not None:
            # the name comes from the catalog, quoted; a ":" in it must not read as a parameter
            escaped = function.replace(":", "\\:")
            call = text(f"SELECT {escaped}(:concurrent)")
            connection.execute(call, {"concurrent": concurrent})
            return target
        mode = "CONCURRENTLY " if concurrent else ""
        refresh = f"REFRESH MATERIALIZED VIEW {mode}{target}".replace("%", "%%")
        connection.execute(DDL(refresh))  # type: ignore[no-untyped-call]
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient_privilege
            raise
        raise _refresh_denied(target, name, role, function) from exc
    _log_refresh(connection, schema, target)
    return target


def _refresh_denied(target: str, name: str, role: str, function: str | None) -> ConfigurationError:
    if function is not None:
        return ConfigurationError(
            f"role {role} may not refresh materialized view {target}: it lacks EXECUTE on its "
            f"refresh function. GRANT EXECUTE ON FUNCTION {function}(boolean) TO {quote(role)} "
            f"(the migrations autogenerate writes grant it to the app and admin roles)."
        )
    return ConfigurationError(
        f"role {role} may not refresh materialized view {target}: PostgreSQL refreshes it only "
        f"for its owner, and it has no refresh function. Apply the migrations autogenerate "
        f"writes (they add {refresh_function_name(name)}(), which the app and admin roles may "
        f"execute), or refresh it as its owner."
    )


#: Where refreshes are recorded: PostgreSQL keeps no time of the last REFRESH, and
#: ``sa-patterns doctor --matview-max-age`` needs one. Created by autogenerate with the first
#: materialized view model; refreshes work without it (nothing is recorded then).
REFRESH_LOG = "sa_patterns_matview_refreshes"

_LOG_EXISTS = text("SELECT to_regclass(:t) IS NOT NULL")
#: The view's schema-qualified name, whatever the search path: the log's key.
QUALIFIED_NAME = (
    "(SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(:v))"
)
# {log} is a quoted identifier from qualified(); the view's name is a bound parameter.
_LOG_UPSERT = (
    "INSERT INTO {log} (view_name, refreshed_at) VALUES (" + QUALIFIED_NAME + ", clock_timestamp()) "  # noqa: S608
    "ON CONFLICT (view_name) DO UPDATE SET refreshed_at = excluded.refreshed_at"
)


def refresh_log_table(metadata: MetaData) -> Table:
    """The refresh log of ``metadata`` (one row per materialized view: its last refresh)."""
    key = REFRESH_LOG if metadata.schema is None else f"{metadata.schema}.{REFRESH_LOG}"
    existing = metadata.tables.get(key)
    if existing is not None:
        return existing
    log = Table(
        REFRESH_LOG,
        metadata,
        Column("view_name", Text, primary_key=True),
        Column("refreshed_at", DateTime(timezone=True), nullable=False),
        comment="Last REFRESH of each materialized view, written by sa_patterns refreshes.",
    )
    # written by the refresh functions, as the owner: the app and admin roles only read it
    # (sa-patterns doctor), so no role but the owner can fake a fresh view
    set_privileges(log, ("SELECT",))
    return log


def refresh_log_of(connection: Connection, schema: str | None) -> str | None:
    """The refresh log that records views of ``schema``: the one beside them
    (``MetaData(schema=...)`` puts both there), else the one on the search path; ``None``
    when neither exists. Refreshes write to it and ``doctor`` reads from it."""
    for log in ([qualified(schema, REFRESH_LOG)] if schema else []) + [REFRESH_LOG]:
        if connection.execute(_LOG_EXISTS, {"t": log}).scalar():
            return log
    return None


def _log_refresh(connection: Connection, schema: str | None, target: str) -> None:
    """Record the refresh, in the same transaction as the REFRESH: the time is recorded only
    if the refresh commits."""
    log = refresh_log_of(connection, schema)
    if log is not None:
        connection.execute(text(_LOG_UPSERT.format(log=log)), {"v": target})


def _refresh_model(session: Session, cls: type[MaterializedView], concurrently: bool) -> None:
    table: Table = cls.__table__  # type: ignore[attr-defined]
    if concurrently and not any(_usable_unique(ix) for ix in table.indexes):
        raise ConfigurationError(f"{cls.__name__}: " + _unique_index_hint(cls.__name__))
    session.flush()  # the refresh must see this session's pending writes
    stored = cls.__view_entity__  # where the rows are: <name>_all_tenants for a tenant one
    _refresh(session.connection(), stored.schema, stored.name, concurrently)


def _usable_unique(index: Index) -> bool:
    """Unique, over plain columns, without a WHERE: what CONCURRENTLY accepts."""
    where = index.dialect_options["postgresql"].get("where")
    return bool(index.unique) and where is None and all(isinstance(e, Column) for e in index.expressions)


class MaterializedView(_ViewModel):
    """Mixin for a mapped class backed by ``CREATE MATERIALIZED VIEW``; put it before your base.

    Indexes go in ``__table_args__`` (``Index(..., unique=True)`` enables concurrent refresh);
    autogenerate creates them with the view and recreates them whenever the view is rebuilt.
    """

    __abstract__ = True
    _materialized: ClassVar[bool] = True

    @overload
    @classmethod
    def refresh(cls, session: Session, *, concurrently: bool = False) -> None: ...

    @overload
    @classmethod
    def refresh(
        cls, session: AsyncSession, *, concurrently: bool = False
    ) -> Coroutine[Any, Any, None]: ...

    @classmethod
    def refresh(
        cls, session: Session | AsyncSession, *, concurrently: bool = False
    ) -> Coroutine[Any, Any, None] | None:
        """``REFRESH MATERIALIZED VIEW`` in the session's transaction (after a flush).

        ``concurrently=True`` lets readers keep reading the old rows meanwhile; it needs a
        unique index (checked on the class and in the database: :class:`ConfigurationError`
        when missing). With an ``AsyncSession`` this returns an awaitable.
        """
        if isinstance(session, AsyncSession):
            return session.run_sync(_refresh_model, cls, concurrently)
        _refresh_model(session, cls, concurrently)
        return None


def _refresh_all(
    session: Session, concurrently: bool, schemas: Sequence[str] | None
) -> list[str]:
    session.flush()
    connection = session.connection()
    wanted = set(schemas) if schemas is not None else set(connection.execute(_SEARCH_PATH).scalars())
    graph = read_view_graph(connection)
    matviews = [oid for oid, (nsp, _, kind) in graph.nodes.items() if kind == "m" and nsp in wanted]
    order = graph.ordered(matviews)
    if concurrently:
        lacking = []
        for oid in order:
            nsp, name, _ = graph.nodes[oid]
            state = _matview_state(connection, nsp, name)
            if state is None or not state[1]:
                lacking.append(qualified(nsp, name))
        if lacking:
            raise ConfigurationError(
                f"refresh_all(concurrently=True): nothing refreshed, {', '.join(lacking)} "
                f"lack(s) a unique index. " + _unique_index_hint("each of them")
            )
    return [_refresh(connection, *graph.nodes[oid][:2], concurrently) for oid in order]


@overload
def refresh_all(
    session: Session, *, concurrently: bool = False, schemas: Sequence[str] | None = None
) -> list[str]: ...


@overload
def refresh_all(
    session: AsyncSession, *, concurrently: bool = False, schemas: Sequence[str] | None = None
) -> Coroutine[Any, Any, list[str]]: ...


def refresh_all(
    session: Session | AsyncSession,
    *,
    concurrently: bool = False,
    schemas: Sequence[str] | None = None,
) -> list[str] | Coroutine[Any, Any, list[str]]:
    """Refresh every materialized view in ``schemas`` (default: the search path), each after
    the materialized views it reads (directly or through views), as ``pg_depend`` records it.

    Returns the refreshed names in order. ``concurrently=True`` checks every view has a unique
    index before refreshing any. With an ``AsyncSession`` this returns an awaitable.
    """
    if isinstance(session, AsyncSession):
        return session.run_sync(_refresh_all, concurrently, schemas)
    return _refresh_all(session, concurrently, schemas)


# -- session hooks (composed by sa_patterns.install) -----------------------------------------


def _before_flush(session: Session, flush_context: UOWTransaction, instances: Iterable[object] | None) -> None:
    for obj in chain(session.new, session.deleted, session.dirty):
        if isinstance(obj, _ViewModel) and (
            obj in session.new
            or obj in session.deleted
            or session.is_modified(obj, include_collections=False)
        ):
            raise _read_only(type(obj))


def _do_orm_execute(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        mapper = state.bind_mapper
        if mapper is not None and issubclass(mapper.class_, _ViewModel):
            raise _read_only(mapper.class_)


def _bulk_check(session: Session, method: str, mapper: Mapper[Any]) -> bool:
    """The legacy ``Session.bulk_*`` methods skip the hooks above: refuse them here."""
    if issubclass(mapper.class_, _ViewModel):
        raise _read_only(mapper.class_)
    return False


PATTERN = Pattern(
    "views",
    listeners=(("before_flush", _before_flush), ("do_orm_execute", _do_orm_execute)),
    bulk_check=_bulk_check,
)
