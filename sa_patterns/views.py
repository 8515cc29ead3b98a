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
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable, Sequence
from itertools import chain
from typing import Any, ClassVar, overload

import sqlalchemy.sql.ddl as _sa_ddl
from sqlalchemy import DDL, Column, DateTime, Index, MetaData, Table, Text, event, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, UOWTransaction
from sqlalchemy.schema import CreateIndex
from sqlalchemy.sql.selectable import SelectBase
from sqlalchemy.sql.util import find_tables

from ._mapping import own_table, when_mapped
from .errors import ConfigurationError, ReadOnlyError
from .pattern import Pattern
from .schema import objects
from .schema.objects import RowLevelSecurity, qualified
from .schema.registry import NOT_A_TABLE, register, registered
from .schema.view_catalog import read_view_graph

__all__ = [
    "PATTERN",
    "MaterializedView",
    "View",
    "compile_definition",
    "refresh_all",
]

# "named" paramstyle: literals render with a single "%" (the default psycopg2 dialect doubles it).
_PG = postgresql.dialect(paramstyle="named")  # type: ignore[no-untyped-call]
# SQLAlchemy 2.1's CREATE VIEW construct; absent on 2.0, where the select compiles directly.
_CreateView: Any = getattr(_sa_ddl, "CreateView", None)
_DropView: Any = getattr(_sa_ddl, "DropView", None)


def compile_definition(
    select: SelectBase, name: str, schema: str | None = None, *, materialized: bool = False
) -> str:
    """The SQL text of a view's query, values rendered as literals (DDL takes no parameters).

    On SQLAlchemy 2.1 it is what ``CreateView`` compiles after ``AS``; on 2.0 the same select
    compiled with ``literal_binds`` (which is what ``CreateView`` does internally).
    """
    if _CreateView is not None:
        ddl = str(_CreateView(select, name, schema=schema, materialized=materialized).compile(dialect=_PG))
        header = f"CREATE {'MATERIALIZED ' if materialized else ''}VIEW {qualified(schema, name)} AS "
        if ddl.startswith(header):
            return ddl[len(header) :].strip()
    return str(select.compile(dialect=_PG, compile_kwargs={"literal_binds": True})).strip()


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
    #: the database object registered for this class (set at class creation)
    __view_entity__: ClassVar[objects.View | objects.MaterializedView]
    #: materialized views only: ``False`` creates it empty (``WITH NO DATA``) until refreshed
    __with_data__: ClassVar[bool] = True
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
    if materialized:
        refresh_log_table(table.metadata)
    definition = compile_definition(select, table.name, table.schema, materialized=materialized)
    entity: objects.View | objects.MaterializedView
    if materialized:
        indexes = tuple(
            str(CreateIndex(ix).compile(dialect=_PG))
            for ix in sorted(table.indexes, key=lambda ix: str(ix.name))
        )
        entity = objects.MaterializedView(
            table.schema, table.name, definition, indexes=indexes, with_data=cls.__with_data__
        )
    else:
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


# -- materialized views ---------------------------------------------------------------------

_MATVIEW_STATE = text(
    "SELECT c.relispopulated, EXISTS (SELECT 1 FROM pg_catalog.pg_index i "
    "WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid "
    "AND i.indpred IS NULL AND i.indexprs IS NULL) "
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


def _refresh(connection: Connection, schema: str | None, name: str, concurrently: bool) -> str:
    target = qualified(schema, name)
    state = connection.execute(_MATVIEW_STATE, {"name": target}).first()
    if state is None:
        raise ConfigurationError(
            f"materialized view {target} does not exist in this database; apply the "
            f"migrations (alembic upgrade head) or sa_patterns.create_all() first."
        )
    populated, has_unique = bool(state[0]), bool(state[1])
    if concurrently and not has_unique:
        raise ConfigurationError(_unique_index_hint(target))
    # A never-populated view cannot be refreshed concurrently, and has no readers to spare.
    mode = "CONCURRENTLY " if concurrently and populated else ""
    connection.execute(DDL(f"REFRESH MATERIALIZED VIEW {mode}{target}"))  # type: ignore[no-untyped-call]
    _log_refresh(connection, schema, target)
    return target


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
    return Table(
        REFRESH_LOG,
        metadata,
        Column("view_name", Text, primary_key=True),
        Column("refreshed_at", DateTime(timezone=True), nullable=False),
        comment="Last REFRESH of each materialized view, written by sa_patterns refreshes.",
    )


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
    _refresh(session.connection(), table.schema, table.name, concurrently)


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
            state = connection.execute(_MATVIEW_STATE, {"name": qualified(nsp, name)}).one()
            if not state[1]:
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
