"""Tenant scoping that fails closed, with PostgreSQL row-level security as the second wall.

Two independent walls keep tenants apart:

1. **The ORM wall.** Every ORM statement on a :class:`TenantMixin` model (top-level selects,
   joins, relationship loads, refreshes, ``session.get()``, ORM bulk UPDATE/DELETE) gets
   ``tenant_id = :tenant`` through :func:`sqlalchemy.orm.with_loader_criteria`; the tenant is a
   bound parameter taken from the scope *when the statement runs*. Flushes fill ``tenant_id`` and
   refuse to write another tenant's rows. No tenant in scope means :class:`TenantRequired`.
2. **The database wall.** ``__rls__ = True`` adds ``ENABLE``/``FORCE ROW LEVEL SECURITY`` and a
   policy comparing ``tenant_id`` with the transaction-local setting ``app.tenant_id`` (sent once
   per transaction by :mod:`sa_patterns.context`), so raw SQL is filtered as well.

Objects live in the identity map under an identity token naming the tenant they were loaded for,
so ``session.get()`` and many-to-one lazy loads never hand back a row cached under another tenant:
they go to the database, where both walls apply.
"""

from __future__ import annotations

import functools
import re
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    ClauseElement,
    ColumnElement,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    column,
    event,
    false,
    inspect,
    literal,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Result
from sqlalchemy.orm import (
    Mapped,
    Mapper,
    ORMExecuteState,
    RelationshipProperty,
    Session,
    declared_attr,
    mapped_column,
    with_loader_criteria,
)
from sqlalchemy.orm.interfaces import ORMOption, UserDefinedOption
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.type_api import TypeEngine
from sqlalchemy.sql.util import find_tables

from ._compat import (
    add_parameters,
    conflict_set,
    conflict_update,
    insert_parts,
    note_joined_subclass,
    replace_insert,
    update_values,
    with_conflict_where,
)
from ._mapping import each_relationship, own_table, refuse_sqlmodel, when_mapped
from .context import (
    ALL_TENANTS_SETTING,
    TENANT_SETTING,
    StatementContext,
    TenantId,
    current_tenant,
    is_all_tenants,
    require_tenant,
)
from .errors import (
    ConfigurationError,
    TenantRequired,
    TenantViolation,
    UnsupportedStatement,
)
from .options import ALL_TENANTS, flag
from .pattern import Pattern
from .schema.objects import Policy, RowLevelSecurity, ident, quote, quote_literal
from .schema.registry import register

__all__ = [
    "ALL_TENANTS_SETTING",
    "PATTERN",
    "TenantMixin",
    "citus_mode",
    "is_tenant_table",
    "rls_entities",
    "scope_copies",
    "set_citus_mode",
    "tenant_foreign_key",
    "tenant_tables",
    "tenant_unique",
]

# Bookkeeping lives in ``MetaData.info`` keyed by table, never in ``Table.info``: Alembic
# renders ``Table.info`` into every ``create_table`` of a migration.
#: ``{table.key: kind of its tenant column}``
_TENANT_INFO_KEY = "sa_patterns.tenant_tables"
#: per tenant table key: its RLS admin role ("" for none), for tables registered with __rls__
_RLS_INFO_KEY = "sa_patterns.rls_tables"
#: ``{table.key: kind}`` of the tables of joined-inheritance subclasses of tenant models
_JOINED_INFO_KEY = "sa_patterns.tenant_joined_tables"
#: per source table key: the tables holding copies of its rows, with their ORM entities
_COPIES_INFO_KEY = "sa_patterns.tenant_copies"
#: ``{table.key: "distributed" | "reference"}``, read by :mod:`sa_patterns.citus`
_CITUS_INFO_KEY = "sa_patterns.citus_tables"
#: Identity token of objects loaded under :func:`sa_patterns.all_tenants`.
_ALL_TOKEN = "sa_patterns:all_tenants"

_KIND_INT, _KIND_UUID, _KIND_STR = "int", "uuid", "str"
_INT_TEXT = re.compile(r"-?[0-9]{1,19}")


def _kind(type_: TypeEngine[Any]) -> str:
    if isinstance(type_, Integer):
        return _KIND_INT
    if isinstance(type_, Uuid):
        return _KIND_UUID
    if isinstance(type_, String):
        return _KIND_STR
    raise ConfigurationError(
        f"__tenant_type__ = {type_!r} is not supported: use BigInteger (the default), Integer, "
        "Uuid or String(n)."
    )


def _coerce(value: object, kind: str, where: str) -> TenantId:
    """``value`` as the Python type of the tenant column, or a teaching ConfigurationError.

    Hostile text (``"1; drop table x"``) never reaches SQL as anything but a bound value, and for
    integer and UUID tenants it is refused here already.
    """
    if isinstance(value, bool) or value is None:
        raise ConfigurationError(f"{where}: {value!r} is not a tenant id.")
    if kind == _KIND_INT:
        if isinstance(value, int):
            return value
        if isinstance(value, str) and _INT_TEXT.fullmatch(value):
            return int(value)
    elif kind == _KIND_UUID:
        if isinstance(value, uuid.UUID):
            return value
        if isinstance(value, str):
            try:
                return uuid.UUID(value)
            except ValueError:
                pass
    elif isinstance(value, (str, int, uuid.UUID)):
        return str(value)
    raise ConfigurationError(
        f"{where}: tenant id {value!r} ({type(value).__name__}) does not fit a {kind} tenant "
        "column. Pass the tenant's key in the column's type."
    )


def _tenant_kind(table: Table) -> str | None:
    kind = table.metadata.info.get(_TENANT_INFO_KEY, {}).get(table.key)
    return kind if isinstance(kind, str) else None


def citus_mode(table: Table) -> str | None:
    """``"distributed"``, ``"reference"`` or ``None`` (see :mod:`sa_patterns.citus`)."""
    mode = table.metadata.info.get(_CITUS_INFO_KEY, {}).get(table.key)
    return mode if isinstance(mode, str) else None


def set_citus_mode(table: Table, mode: str) -> None:
    table.metadata.info.setdefault(_CITUS_INFO_KEY, {})[table.key] = mode


def _sql_type(type_: TypeEngine[Any], kind: str) -> str:
    # Strings compare as text: a cast to varchar(n) would *truncate* a long setting and could
    # match another tenant's id.
    if kind == _KIND_STR:
        return "text"
    compiled: str = type_.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    return compiled.lower()


def rls_entities(table: Table, admin_role: str | None = None) -> list[Policy | RowLevelSecurity]:
    """The row-level security objects of a tenant table: FORCE'd RLS, the isolation policy and,
    with ``admin_role``, a policy letting that role see all tenants inside ``all_tenants()``."""
    kind = _tenant_kind(table)
    if kind is None:
        raise ConfigurationError(f"{table.name} has no tenant_id column from TenantMixin.")
    column = table.c.tenant_id
    setting = f"NULLIF(current_setting({quote_literal(TENANT_SETTING)}, true), '')"
    check = f"{quote(column.name)} = {setting}::{_sql_type(column.type, kind)}"
    entities: list[Policy | RowLevelSecurity] = [
        RowLevelSecurity(schema=table.schema, table=table.name, force=True),
        Policy(
            schema=table.schema,
            table=table.name,
            name=ident(table.name, "tenant_isolation"),
            using=check,
            with_check=check,
        ),
    ]
    if admin_role:
        bypass = f"current_setting({quote_literal(ALL_TENANTS_SETTING)}, true) = 'on'"
        entities.append(
            Policy(
                schema=table.schema,
                table=table.name,
                name=ident(table.name, "tenant_admin"),
                using=bypass,
                with_check=bypass,
                roles=(admin_role,),
            )
        )
    return entities


class TenantMixin:
    """Adds an indexed, non-null ``tenant_id`` and scopes the model to the current tenant.

    Class options:

    ``__tenant_type__``
        the column type: ``BigInteger`` (default), ``Integer``, ``Uuid`` or ``String(n)``.
    ``__rls__``
        ``True`` registers ``ENABLE`` + ``FORCE ROW LEVEL SECURITY`` and a tenant policy on the
        metadata; ``alembic revision --autogenerate`` writes them.
    ``__rls_admin_role__``
        a database role whose sessions see every tenant inside ``all_tenants()`` (a second
        policy ``TO`` that role); the app role must not be a member of it.
    ``__citus__``
        ``True`` marks the table for ``create_distributed_table(..., 'tenant_id')`` (see
        :mod:`sa_patterns.citus`).
    """

    __tenant_type__: ClassVar[Any] = BigInteger
    __rls__: ClassVar[bool] = False
    __rls_admin_role__: ClassVar[str | None] = None
    __citus__: ClassVar[bool] = False
    #: set for each mapped tenant class: the kind of its tenant column (hot-path lookup)
    __sa_tenant_kind__: ClassVar[str | None] = None

    @declared_attr
    def tenant_id(cls) -> Mapped[Any]:
        name = getattr(cls, "__name__", "TenantMixin")
        type_ = cls.__tenant_type__
        instance = type_() if isinstance(type_, type) else type_
        if not isinstance(instance, TypeEngine):
            raise ConfigurationError(
                f"{name}.__tenant_type__ must be a SQLAlchemy type such as BigInteger, "
                f"Uuid or String(64); got {type_!r}."
            )
        _kind(instance)
        return mapped_column(instance, nullable=False, index=True)

    def __init_subclass__(cls, **kw: Any) -> None:
        refuse_sqlmodel(cls, "TenantMixin")
        super().__init_subclass__(**kw)
        when_mapped(cls, _set_up)


def _set_up(mapper: Mapper[Any]) -> None:
    """A tenant class is mapped (by any declarative style): enrol its table."""
    cls = mapper.class_
    each_relationship(mapper, _refuse_secondary)
    table = own_table(mapper)
    if table is None:
        return  # single-table inheritance: the parent's table is enrolled
    if "tenant_id" not in table.c:
        if mapper.inherits is None:
            raise ConfigurationError(
                f"{cls.__name__} is a TenantMixin model, but its table {table.name!r} has no "
                "tenant_id column (an imperative mapping does not get the mixin's column), so "
                "nothing could scope it. Add a non-null, indexed tenant_id column to the table, "
                "or map the class declaratively."
            )
        # joined inheritance: the parent's table holds tenant_id; a statement that reaches this
        # table alone (a subquery over the subclass) must still fail closed without a tenant
        kind = getattr(cls, "__sa_tenant_kind__", None)
        if kind is not None:
            table.metadata.info.setdefault(_JOINED_INFO_KEY, {})[table.key] = kind
            note_joined_subclass()
        return
    if cls.__rls_admin_role__ and not cls.__rls__:
        raise ConfigurationError(
            f"{cls.__name__}.__rls_admin_role__ only makes sense with __rls__ = True."
        )
    _enroll(table, cls, _kind(table.c.tenant_id.type), (cls.__rls_admin_role__ or "") if cls.__rls__ else None)
    if cls.__citus__:
        set_citus_mode(table, "distributed")
    for copy, entity in table.metadata.info.get(_COPIES_INFO_KEY, {}).get(table.key, ()):
        _scope_copy(table, copy, entity)  # declared before this mixin ran (mixin order)


def _refuse_secondary(rel: RelationshipProperty[Any]) -> None:
    """``relationship(secondary=...)`` through a tenant table: refused (see the message)."""
    secondary = rel.secondary
    if secondary is None or "tenant_id" not in {c.name for c in secondary.columns}:
        return
    name = getattr(secondary, "name", None) or str(secondary)
    raise ConfigurationError(
        f"{rel.parent.class_.__name__}.{rel.key} uses the table {name!r} as secondary=, and "
        "that table has a tenant_id column: SQLAlchemy's criteria do not reach a secondary "
        "table, so other tenants' links would show in the collection and an appended item's "
        "link row would get no tenant_id. Map the link as an association object (a TenantMixin "
        "model with a many-to-one relationship to each side, which the tenant filter covers), "
        "give the parent a one-to-many relationship to it, and use "
        "sqlalchemy.ext.associationproxy.association_proxy for the collection of the other "
        "side (see 'Many-to-many links' in docs/tenancy.md). A plain Table secondary= with a "
        "tenant_id column is refused too: nothing would fill or filter it."
    )


def _enroll(table: Table, entity: type, kind: str, rls: str | None) -> None:
    """Make ``table``, mapped by ``entity``, a tenant table of ``kind``: the session filters it,
    and with ``rls`` (an admin role, or "" for none) it gets row-level security."""
    table.metadata.info.setdefault(_TENANT_INFO_KEY, {})[table.key] = kind
    entity.__sa_tenant_kind__ = kind  # type: ignore[attr-defined]
    _GROUPS[kind]._members.add(entity)
    if rls is not None:
        table.metadata.info.setdefault(_RLS_INFO_KEY, {})[table.key] = rls
        register(table.metadata, *rls_entities(table, rls or None))


def scope_copies(source: Table, copy: Table, entity: type) -> None:
    """Make ``copy``, a table holding copies of ``source``'s rows (``Versioned``'s history), a
    tenant table like ``source``: the session filters it through ``entity`` (an ORM entity
    mapped to it) by the tenant in scope, statements without a tenant raise
    :class:`TenantRequired`, and it gets ``source``'s row-level security. A copy of a tenant's
    rows must never be the way around the wall. Either mixin may be set up first."""
    copies = source.metadata.info.setdefault(_COPIES_INFO_KEY, {}).setdefault(source.key, [])
    copies.append((copy, entity))
    if _tenant_kind(source) is not None:
        _scope_copy(source, copy, entity)


def _scope_copy(source: Table, copy: Table, entity: type) -> None:
    kind = _tenant_kind(source)
    assert kind is not None
    _enroll(copy, entity, kind, source.metadata.info.get(_RLS_INFO_KEY, {}).get(source.key))


def is_tenant_table(table: Table) -> bool:
    """Whether ``table`` is scoped by tenant: a ``TenantMixin`` model's, or a copy of one's rows."""
    return _tenant_kind(table) is not None


def tenant_tables(metadata: MetaData) -> list[Table]:
    """Tables of ``metadata`` that carry ``TenantMixin``'s ``tenant_id``."""
    return [t for t in metadata.sorted_tables if _tenant_kind(t) is not None]


def tenant_unique(*columns: str, name: str | None = None) -> UniqueConstraint:
    """A unique constraint on ``(tenant_id, *columns)``: unique *within* a tenant.

    ``tenant_unique("id")`` is also the target a composite foreign key needs (see
    :func:`tenant_foreign_key`). Without a ``name`` (and without a ``uq`` naming convention) the
    constraint is named ``uq_<table>_tenant_id_<columns>`` when it joins its table.
    """
    if not columns:
        raise ConfigurationError("tenant_unique() needs at least one column besides tenant_id.")
    constraint = UniqueConstraint("tenant_id", *columns, name=name)
    if name is None:

        def _name(target: UniqueConstraint, parent: Table) -> None:
            if "uq" not in parent.metadata.naming_convention and target.name is None:
                target.name = ident(parent.name, "tenant_id_" + "_".join(columns))
                target.name = "uq_" + target.name if len(target.name) <= 60 else target.name

        event.listen(constraint, "after_parent_attach", _name)
    return constraint


def tenant_foreign_key(
    columns: str | Sequence[str], refcolumns: str | Sequence[str], **kw: Any
) -> ForeignKeyConstraint:
    """A foreign key that includes ``tenant_id`` on both sides, so a row can only ever reference
    a row of its own tenant (the database refuses anything else).

    ``tenant_foreign_key("project_id", "projects.id")`` is
    ``FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id)``; the referenced
    table needs ``tenant_unique("id")`` in its ``__table_args__``. Extra keywords (``ondelete``,
    ``name``...) go to :class:`~sqlalchemy.ForeignKeyConstraint`.
    """
    cols = [columns] if isinstance(columns, str) else list(columns)
    refs = [refcolumns] if isinstance(refcolumns, str) else list(refcolumns)
    if len(cols) != len(refs) or not refs:
        raise ConfigurationError("tenant_foreign_key(): give as many columns as refcolumns.")
    tables = {r.rpartition(".")[0] for r in refs}
    if len(tables) != 1 or "" in tables:
        raise ConfigurationError(
            "tenant_foreign_key(): refcolumns are 'table.column' strings of one table."
        )
    (target,) = tables
    constraint = ForeignKeyConstraint(["tenant_id", *cols], [f"{target}.tenant_id", *refs], **kw)

    # PostgreSQL does not index the referencing side: without this index every delete of a
    # parent row scans the child table (sa-patterns doctor reports such foreign keys).
    @event.listens_for(constraint, "after_parent_attach")
    def _index(fk: ForeignKeyConstraint, table: Table) -> None:
        if not any([c.name for c in ix.columns][: len(cols) + 1] == ["tenant_id", *cols] for ix in table.indexes):
            name = ident(table.name, "_".join(["tenant_id", *cols]))
            Index(name, table.c.tenant_id, *(table.c[c] for c in cols))

    return constraint


# --- session hooks ------------------------------------------------------------------------


def _tenant_entities(state: ORMExecuteState) -> list[Any]:
    return [m for m in state.all_mappers if _tenant_kind_of_mapper(m) is not None]


def _selects_tenant_entity(state: ORMExecuteState) -> bool:
    """Whether a SELECT loads a tenant entity; reads the statement's entities' annotations
    (``all_mappers`` builds column descriptions, several times the cost of this hot path)."""
    raw = getattr(state.statement, "_raw_columns", None)
    if raw is None:
        return bool(_tenant_entities(state))
    for element in raw:
        entity = element._annotations.get("parententity")
        if entity is not None and _tenant_kind_of_mapper(entity.mapper) is not None:
            return True
    return False


def _tenant_kind_of_mapper(mapper: Any) -> str | None:
    # set on the class by TenantMixin's set-up (inherited by mapped subclasses)
    kind: str | None = getattr(mapper.class_, "__sa_tenant_kind__", None)
    if kind is None and getattr(mapper.class_, "__rls__", False):
        raise ConfigurationError(
            f"{mapper.class_.__name__} sets __rls__ = True but is not a TenantMixin model: "
            "row-level security needs the tenant_id column and policy TenantMixin adds. Add "
            "TenantMixin to the class, or remove __rls__."
        )
    return kind


def _touches_tenant_table(state: ORMExecuteState) -> bool:
    """Only on the no-tenant path (cheap enough there): any tenant table anywhere in the
    statement, including joins, subqueries and EXISTS."""
    if _tenant_entities(state):
        return True
    statement: Any = state.statement
    return any(
        isinstance(t, Table)
        and (_tenant_kind(t) is not None or t.key in t.metadata.info.get(_JOINED_INFO_KEY, ()))
        for t in find_tables(statement, include_crud=True)
    )


class _TenantGroup:
    """All mapped tenant classes of one tenant-column kind, as a ``with_loader_criteria`` root.

    One criteria lambda per *kind*: a lambda's bound parameter takes its type from the root it is
    first analysed with, so an int tenant's parameter must never meet a uuid column, and
    ``TenantMixin`` itself (one root for every kind) cannot be the root. ``with_loader_criteria``
    finds the classes a root covers through ``root.__subclasses__()``, which a group answers with
    its members. That is SQLAlchemy's behaviour, not its API: it is pinned by
    tests/foundation/test_foundation_compat.py on 2.0 and 2.1, and it pays (bench/RESULTS.md:
    one option per kind instead of one per tenant model, which costs 30 % more per lookup with 30
    tenant models).
    """

    _members: ClassVar[weakref.WeakSet[type]]

    @classmethod
    def __subclasses__(cls) -> list[type]:
        return list(cls._members)


# ``tenant_id`` on a root is what the lambda sees when SQLAlchemy first analyses it: it fixes
# the bound parameter's type for the whole kind.
class _IntTenants(_TenantGroup):
    _members = weakref.WeakSet()
    tenant_id = column("tenant_id", BigInteger())


class _UuidTenants(_TenantGroup):
    _members = weakref.WeakSet()
    tenant_id = column("tenant_id", Uuid())


class _StrTenants(_TenantGroup):
    _members = weakref.WeakSet()
    tenant_id = column("tenant_id", Text())


_GROUPS: dict[str, type[_TenantGroup]] = {
    _KIND_INT: _IntTenants,
    _KIND_UUID: _UuidTenants,
    _KIND_STR: _StrTenants,
}


class _Scoped(UserDefinedOption):
    """Travels with a statement to the loads it triggers (lazy, selectin, subquery): the tenant
    whose criteria it carries, so a load run under that same tenant does not add them twice."""

    propagate_to_loaders = True


# One factory per kind (distinct lambdas, distinct cached analyses); the options are immutable,
# so one per (kind, tenant) is built and reused (building one costs more than the query's own
# Python work). ``tenant`` is a closure variable of the factory: the lambda is cached per class
# and the value becomes a bound parameter, never read inside the lambda at run time.
# propagate_to_loaders=True: joined eager loads apply only propagating criteria, and the loads a
# statement triggers later carry them too; a load run under another tenant adds that tenant's
# criteria as well (both must hold: nothing is returned), see loader_criteria.
@functools.lru_cache(maxsize=4096)
def _int_criteria(tenant: TenantId) -> ORMOption:
    return with_loader_criteria(_IntTenants, lambda cls: cls.tenant_id == tenant, include_aliases=True)


@functools.lru_cache(maxsize=4096)
def _uuid_criteria(tenant: TenantId) -> ORMOption:
    return with_loader_criteria(_UuidTenants, lambda cls: cls.tenant_id == tenant, include_aliases=True)


@functools.lru_cache(maxsize=4096)
def _str_criteria(tenant: TenantId) -> ORMOption:
    return with_loader_criteria(_StrTenants, lambda cls: cls.tenant_id == tenant, include_aliases=True)


_CRITERIA = {_KIND_INT: _int_criteria, _KIND_UUID: _uuid_criteria, _KIND_STR: _str_criteria}


@functools.cache
def _deny(kind: str) -> ORMOption:
    return with_loader_criteria(_GROUPS[kind], lambda cls: false(), include_aliases=True)


@functools.lru_cache(maxsize=4096, typed=True)
def _marker(tenant: object) -> _Scoped:
    return _Scoped(tenant)


def _options(state: ORMExecuteState, tenant: TenantId) -> list[ORMOption]:
    options: list[ORMOption] = []
    for kind, group in _GROUPS.items():
        if not group._members:
            continue
        try:
            value = _coerce(tenant, kind, "tenant_scope()")
        except ConfigurationError:
            if any(_tenant_kind_of_mapper(m) == kind for m in _tenant_entities(state)):
                raise ConfigurationError(
                    f"{_describe(state)}: tenant id {tenant!r} ({type(tenant).__name__}) does not "
                    f"fit a {kind} tenant column. Pass the tenant's key in the column's type."
                ) from None
            options.append(_deny(kind))  # no row of this kind can belong to such a tenant
            continue
        options.append(_CRITERIA[kind](value))
    options.append(_marker(tenant))
    return options


@functools.lru_cache(maxsize=4096, typed=True)
def _scoped_options(kinds: tuple[str, ...], tenant: TenantId) -> tuple[ORMOption, ...] | None:
    """The options of :func:`_options` when ``tenant`` fits every kind in use, else None.

    Built once per (kinds in use, tenant): every statement of a request reuses the same option
    objects, so the per-statement cost is one cache lookup. The tenant stays a bound parameter
    of each option's criteria (see :func:`_int_criteria`).
    """
    options: list[ORMOption] = []
    for kind in kinds:
        try:
            value = _coerce(tenant, kind, "tenant_scope()")
        except ConfigurationError:
            return None  # decided per statement by _options (raise, or deny that kind)
        options.append(_CRITERIA[kind](value))
    options.append(_marker(tenant))
    return tuple(options)


def _kinds_in_use() -> tuple[str, ...]:
    return tuple([kind for kind, group in _GROUPS.items() if group._members])


def _admin(state: ORMExecuteState) -> bool:
    return flag(state, ALL_TENANTS) or is_all_tenants(state.session)


def loader_criteria(context: StatementContext) -> Iterable[ORMOption]:
    """The loader-criteria hook: ``tenant_id = :tenant`` on every tenant entity."""
    kinds = _kinds_in_use()
    if not kinds or context.admin:
        return ()  # no tenant model in this process: costs the other patterns nothing
    state, session, tenant = context.state, context.session, context.tenant
    if state.is_relationship_load and tenant is not None:
        for option in state.user_defined_options:
            if isinstance(option, _Scoped) and option.payload == tenant:
                return ()  # the parent statement's criteria for this very tenant came along
    if tenant is None:
        if _touches_tenant_table(state):
            require_tenant(session, what=_describe(state))
        # belt and braces: nothing we failed to see can leak
        return [_deny(kind) for kind in kinds]
    options = _scoped_options(kinds, tenant)
    return _options(state, tenant) if options is None else options


def from_criteria(context: StatementContext, from_: Any) -> list[ColumnElement[bool]]:
    """The explicit-join hook: the tenant condition on a tenant table (or an alias of one)
    that a statement names in an explicit join, where loader criteria do not reach."""
    table = _base_table(from_)
    kind = None if table is None or context.admin else _tenant_kind(table)
    if kind is None:
        return []
    what = _describe(context.state)
    tenant = _coerce(require_tenant(context.session, what=what), kind, what)
    return [from_.c.tenant_id == tenant]


def _base_table(from_: Any) -> Table | None:
    while not isinstance(from_, Table):
        from_ = getattr(from_, "element", None)
        if from_ is None:
            return None
    return from_


def _describe(state: ORMExecuteState) -> str:
    names = ", ".join(sorted({m.class_.__name__ for m in _tenant_entities(state)}))
    verb = "INSERT" if state.is_insert else "UPDATE" if state.is_update else "DELETE" if (
        state.is_delete
    ) else "SELECT"
    return f"this {verb}" + (f" on {names}" if names else "")


def table_criteria(session: Session, table: Any, *, admin: bool = False) -> list[ColumnElement[bool]]:
    """``[table.c.tenant_id == tenant]`` for a tenant table (or alias), ``[]`` for any other or
    inside ``all_tenants()``: the condition Core statements the toolkit writes itself (cascades,
    purges) add, so they never reach another tenant's rows by foreign key alone."""
    base = _base_table(table)
    kind = None if base is None else _tenant_kind(base)
    if kind is None or admin or is_all_tenants(session):
        return []
    what = f"a statement on {base.name}"  # type: ignore[union-attr]
    return [table.c.tenant_id == _coerce(require_tenant(session, what=what), kind, what)]


def _do_orm_execute(state: ORMExecuteState) -> Result[Any] | None:
    if not _kinds_in_use():
        return None  # no tenant model in this process: nothing below can apply
    session = state.session
    if state.is_select:
        if state.is_column_load:
            _scope_refresh(state)
            return None
        # Key loaded objects by tenant: get() and many-to-one lazy loads then never reuse an
        # object cached under another tenant (they query, and the filters apply).
        admin = _admin(state)
        token = _ALL_TOKEN if admin else current_tenant(session)
        if token is not None and _selects_tenant_entity(state):
            state.update_execution_options(identity_token=token)
    elif not state.is_orm_statement:
        return None
    elif state.is_insert:
        return _check_insert(state)
    elif state.is_update:
        _check_update_values(state)
        _scope_bulk_by_primary_key(state)
    elif state.is_delete:
        _scope_bulk_by_primary_key(state)
    return None


def _scope_refresh(state: ORMExecuteState) -> None:
    """``session.refresh()`` and the reload of expired attributes: SQLAlchemy applies no loader
    criteria to them, so the tenant in force now goes into their WHERE clause directly (an
    object loaded under another tenant then reads as deleted; with no tenant, TenantRequired)."""
    mapper = state.bind_mapper
    kind = None if mapper is None else _tenant_kind_of_mapper(mapper)
    if kind is None or _admin(state) or not isinstance(state.statement, Select):
        return
    assert mapper is not None
    what = f"reloading a {mapper.class_.__name__}"
    tenant = _coerce(require_tenant(state.session, what=what), kind, what)
    state.statement = state.statement.where(mapper.columns["tenant_id"] == tenant)


def _scope_bulk_by_primary_key(state: ORMExecuteState) -> None:
    """ORM bulk UPDATE by primary key (a list of parameter dicts) ignores loader criteria, so
    the tenant goes into its WHERE clause directly."""
    params = state.parameters
    if not isinstance(params, Sequence) or isinstance(params, str) or not params:
        return
    if _admin(state):
        return
    for mapper in _tenant_entities(state):
        kind = _tenant_kind_of_mapper(mapper)
        assert kind is not None
        what = f"bulk {'UPDATE' if state.is_update else 'DELETE'} of {mapper.class_.__name__}"
        tenant = _coerce(require_tenant(state.session, what=what), kind, what)
        state.statement = state.statement.where(  # type: ignore[attr-defined]
            mapper.class_.tenant_id == tenant
        )
        # SQLAlchemy cannot synchronize objects in the session for bulk-by-primary-key with
        # extra WHERE criteria; the rows changed are the database's business (expire to reload).
        state.update_execution_options(synchronize_session=None)


def _value_of(value: object) -> object:
    return value.value if isinstance(value, BindParameter) else value


def _tenant_param(params: Mapping[Any, Any]) -> tuple[bool, object]:
    for key, value in params.items():
        if getattr(key, "key", key) == "tenant_id":
            return True, _value_of(value)
    return False, None


def _check_insert(state: ORMExecuteState) -> Result[Any] | None:
    """Fill and check ``tenant_id`` in every form an ORM INSERT takes: parameter dicts and
    lists, ``.values()`` of one or many rows, ``from_select()`` and upserts."""
    mappers = _tenant_entities(state)
    if not mappers or _admin(state):
        return None
    kind = _tenant_kind_of_mapper(mappers[0])
    assert kind is not None
    mapper = mappers[0]
    name = mapper.class_.__name__
    tenant = _coerce(require_tenant(state.session, what=f"INSERT into {name}"), kind, "tenant")

    def check(value: object) -> None:
        if isinstance(value, ClauseElement):
            raise UnsupportedStatement(
                f"INSERT into {name} computes tenant_id in SQL ({value!r}): the wall cannot "
                "check it. Leave tenant_id out (it is filled in) or pass the value itself."
            )
        if _coerce(value, kind, f"{name}.tenant_id") != tenant:
            raise TenantViolation(
                f"INSERT into {name} with tenant_id={value!r} while tenant {tenant!r} is in "
                "scope. Drop the explicit tenant_id, or use all_tenants() for admin work."
            )

    def fill(params: Mapping[Any, Any]) -> dict[Any, Any]:
        present, value = _tenant_param(params)
        if present:
            check(value)
            return dict(params)
        return {**params, "tenant_id": tenant}

    statement: Any = state.statement
    parts = insert_parts(statement)
    present, value = _tenant_param(parts.values)
    if present:
        check(value)
    if conflict_update(statement) is not None:
        statement = _scope_upsert(statement, mapper, tenant)
    if parts.multi is not None:
        statement = replace_insert(statement, multi=[fill(row) for row in parts.multi])
    elif parts.select is not None:
        statement = _scope_insert_select(statement, parts, mapper, tenant)
    elif not present and not state.parameters:
        statement = statement.values(tenant_id=tenant)
    state.statement = statement
    params = state.parameters
    if isinstance(params, Mapping) and params:
        return add_parameters(state, fill(params))
    if isinstance(params, Sequence) and params and not isinstance(params, str):
        return add_parameters(state, [fill(p) for p in params])
    return None


def _scope_insert_select(statement: Any, parts: Any, mapper: Any, tenant: TenantId) -> Any:
    """``INSERT … SELECT``: the SELECT is read under the loader criteria (the hook puts them on
    the INSERT), and only rows of the tenant in scope are written: a ``tenant_id`` the SELECT
    computes is checked row by row in SQL, a missing one is filled."""
    names = list(parts.names)
    keys = [getattr(n, "key", n) for n in names]
    source = parts.select.subquery()
    columns = list(source.c)
    tenant_column = mapper.columns["tenant_id"]
    if "tenant_id" in keys:
        chosen = select(*columns).where(
            columns[keys.index("tenant_id")] == literal(tenant, tenant_column.type)
        )
        return replace_insert(statement, select=chosen, names=names)
    chosen = select(*columns, literal(tenant, tenant_column.type).label("tenant_id"))
    return replace_insert(statement, select=chosen, names=[*names, "tenant_id"])


def _scope_upsert(statement: Any, mapper: Any, tenant: TenantId) -> Any:
    """``INSERT … ON CONFLICT DO UPDATE``: the conflicting row is updated only when it is the
    tenant's own (another tenant's row is left as it is, and not returned), and ``SET`` may not
    move a row between tenants."""
    clause = conflict_update(statement)
    for key, value in conflict_set(clause):
        if getattr(key, "key", key) != "tenant_id":
            continue
        excluded = getattr(getattr(value, "table", None), "name", None) == "excluded"
        if not (excluded and getattr(value, "key", None) == "tenant_id"):
            raise TenantViolation(
                f"the upsert of {mapper.class_.__name__} sets tenant_id: rows never move between "
                "tenants. Leave tenant_id out of set_."
            )
    return with_conflict_where(statement, mapper.local_table.c.tenant_id == tenant)


def _check_update_values(state: ORMExecuteState) -> None:
    mappers = _tenant_entities(state)
    if not mappers or _admin(state):
        return
    kind = _tenant_kind_of_mapper(mappers[0])
    assert kind is not None
    name = mappers[0].class_.__name__
    tenant = current_tenant(state.session)
    candidates = update_values(state.statement)
    params = state.parameters
    if isinstance(params, Mapping):
        candidates.append(params)
    elif isinstance(params, Sequence) and not isinstance(params, str):
        candidates.extend(p for p in params if isinstance(p, Mapping))
    for candidate in candidates:
        present, value = _tenant_param(candidate)
        if present and (tenant is None or _coerce(value, kind, "tenant_id") != _coerce(
            tenant, kind, "tenant"
        )):
            raise TenantViolation(
                f"UPDATE of {name} sets tenant_id={value!r}: rows never move between tenants "
                f"(in scope: {tenant!r}). Use all_tenants() for a deliberate migration."
            )


def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    admin = is_all_tenants(session)
    for obj in session.new:
        kind = _tenant_kind_of_mapper(inspect(obj).mapper)  # refuses __rls__ w/o TenantMixin
        if kind is None:
            continue
        name = type(obj).__name__
        if admin:
            if obj.tenant_id is None:
                raise TenantRequired(
                    f"new {name} has no tenant_id inside all_tenants(): give it one explicitly."
                )
            continue
        tenant = _coerce(require_tenant(session, what=f"INSERT into {name}"), kind, "tenant")
        if obj.tenant_id is None:
            obj.tenant_id = tenant
        elif _coerce(obj.tenant_id, kind, f"{name}.tenant_id") != tenant:
            raise TenantViolation(
                f"new {name} has tenant_id={obj.tenant_id!r} but tenant {tenant!r} is in scope. "
                "Leave tenant_id unset (it is filled in), or use all_tenants() for admin work."
            )
        inspect(obj, raiseerr=True).identity_token = tenant
    if admin:
        return
    for obj, verb in [(o, "UPDATE") for o in session.dirty] + [(o, "DELETE") for o in session.deleted]:
        insp = inspect(obj, raiseerr=True)
        kind = _tenant_kind_of_mapper(insp.mapper)
        if kind is None or (verb == "UPDATE" and not session.is_modified(obj)):
            continue
        name = type(obj).__name__
        tenant = _coerce(require_tenant(session, what=f"{verb} of {name}"), kind, "tenant")
        history = insp.attrs.tenant_id.history
        if history.deleted and history.added:
            raise TenantViolation(
                f"{name} cannot move from tenant {history.deleted[0]!r} to {history.added[0]!r}: "
                "rows never change tenant. Use all_tenants() for a deliberate migration."
            )
        if _coerce(obj.tenant_id, kind, f"{name}.tenant_id") != tenant:
            raise TenantViolation(
                f"{verb} of a {name} belonging to tenant {obj.tenant_id!r} while tenant "
                f"{tenant!r} is in scope. Load it again inside the right tenant_scope()."
            )


def bulk_check(session: Session, method: str, mapper: Any) -> bool:
    """The check of the legacy ``Session.bulk_*`` methods, which skip every
    session event: True sends mappings of a tenant model through the scoped 2.0 statements
    (``execute(insert(...), rows)`` / ``execute(update(...), rows)``)."""
    return _tenant_kind_of_mapper(mapper) is not None


#: Composed by :func:`sa_patterns.install`.
PATTERN = Pattern(
    "tenancy",
    listeners=(("do_orm_execute", _do_orm_execute), ("before_flush", _before_flush)),
    loader_criteria=loader_criteria,
    from_criteria=from_criteria,
    bulk_check=bulk_check,
)
