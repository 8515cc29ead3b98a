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
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    column,
    event,
    false,
    inspect,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Result
from sqlalchemy.orm import (
    Mapped,
    Mapper,
    ORMExecuteState,
    RelationshipProperty,
    Session,
    SessionTransaction,
    declared_attr,
    mapped_column,
    with_loader_criteria,
)
from sqlalchemy.orm.interfaces import ORMOption
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.type_api import TypeEngine
from sqlalchemy.sql.util import find_tables
from sqlalchemy.types import TypeDecorator

from ._compat import add_parameters
from ._mapping import each_relationship, own_table, refuse_sqlmodel, when_mapped
from .context import TENANT_SETTING, TenantId, current_tenant, is_all_tenants, require_tenant
from .errors import ConfigurationError, TenantRequired, TenantViolation
from .options import ALL_TENANTS, flag
from .schema.objects import Policy, RowLevelSecurity, ident, quote, quote_literal
from .schema.registry import register

__all__ = [
    "ALL_TENANTS_SETTING",
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

#: Transaction-local setting that asks the admin policy (``__rls_admin_role__``) to lift the
#: tenant filter. Any role can *set* it; only members of the admin role get a policy that reads
#: it, so a plain app role cannot forge the bypass.
ALL_TENANTS_SETTING = "app.all_tenants"
# Bookkeeping lives in ``MetaData.info`` keyed by table, never in ``Table.info``: Alembic
# renders ``Table.info`` into every ``create_table`` of a migration.
#: ``{table.key: kind of its tenant column}``
_TENANT_INFO_KEY = "sa_patterns.tenant_tables"
#: per tenant table key: its RLS admin role ("" for none), for tables registered with __rls__
_RLS_INFO_KEY = "sa_patterns.rls_tables"
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
        return  # joined inheritance: the parent's table holds tenant_id
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
    # set on the class by TenantMixin.__init_subclass__ (inherited by mapped subclasses)
    kind: str | None = getattr(mapper.class_, "__sa_tenant_kind__", None)
    return kind


def _touches_tenant_table(state: ORMExecuteState) -> bool:
    """Only on the no-tenant path (cheap enough there): any tenant table anywhere in the
    statement, including joins, subqueries and EXISTS."""
    if _tenant_entities(state):
        return True
    statement: Any = state.statement
    return any(
        isinstance(t, Table) and _tenant_kind(t) is not None
        for t in find_tables(statement, include_crud=True)
    )


class _TenantGroup:
    """All mapped tenant classes of one tenant-column kind, as a ``with_loader_criteria`` root.

    One criteria lambda per *kind*: a lambda's bound parameter takes its type from the first
    class it is resolved for, so an int tenant's parameter must never meet a uuid column.
    ``with_loader_criteria`` finds the classes a root covers through ``__subclasses__()``.
    """

    _members: ClassVar[weakref.WeakSet[type]]

    @classmethod
    def __subclasses__(cls) -> list[type]:
        return list(cls._members)


class _TenantValue(TypeDecorator[Any]):
    """The type of the tenant's bound parameter: the column's type, plus a cheap ``==``
    between two bound parameters.

    SQLAlchemy annotates the criteria's bound parameter when it applies the criteria, and an
    annotated element hashes like the original; each execution then looks both up in the same
    dicts (``construct_params``), and every probe that meets the twin calls ``==``, which builds a
    ``BinaryExpression`` only to ask its truth (3+ per statement, most of the read overhead
    of tenant filtering). That truth is "same hash"; it is answered here without building SQL.
    Anything else compared with the parameter still builds SQL as usual.
    """

    cache_ok = True

    class comparator_factory(TypeDecorator.Comparator[Any]):
        def __eq__(self, other: Any) -> Any:
            if isinstance(other, BindParameter):
                return hash(self.expr) == hash(other)  # BinaryExpression.__bool__'s answer
            return super().__eq__(other)

        __hash__ = TypeDecorator.Comparator.__hash__


class _IntTenantValue(_TenantValue):
    impl = BigInteger
    cache_ok = True


class _UuidTenantValue(_TenantValue):
    impl = Uuid
    cache_ok = True


class _StrTenantValue(_TenantValue):
    impl = Text
    cache_ok = True


# ``tenant_id`` on a root is what the lambda sees when SQLAlchemy first analyses it: it fixes
# the bound parameter's type for the whole kind.
class _IntTenants(_TenantGroup):
    _members = weakref.WeakSet()
    tenant_id = column("tenant_id", _IntTenantValue())


class _UuidTenants(_TenantGroup):
    _members = weakref.WeakSet()
    tenant_id = column("tenant_id", _UuidTenantValue())


class _StrTenants(_TenantGroup):
    _members = weakref.WeakSet()
    tenant_id = column("tenant_id", _StrTenantValue())


_GROUPS: dict[str, type[_TenantGroup]] = {
    _KIND_INT: _IntTenants,
    _KIND_UUID: _UuidTenants,
    _KIND_STR: _StrTenants,
}


# One factory per kind (distinct lambdas, distinct cached analyses); the options are immutable,
# so one per (kind, tenant) is built and reused (building one costs more than the query's
# own Python work). ``tenant`` is a closure
# variable of the factory: the lambda is cached per class and the value becomes a bound
# parameter, never read inside the lambda at run time. propagate_to_loaders=False: every load
# (lazy, selectin, refresh) passes through do_orm_execute and gets the tenant in force *then*.
@functools.lru_cache(maxsize=4096)
def _int_criteria(tenant: TenantId) -> ORMOption:
    return with_loader_criteria(
        _IntTenants, lambda cls: cls.tenant_id == tenant, include_aliases=True,
        propagate_to_loaders=False,
    )


@functools.lru_cache(maxsize=4096)
def _uuid_criteria(tenant: TenantId) -> ORMOption:
    return with_loader_criteria(
        _UuidTenants, lambda cls: cls.tenant_id == tenant, include_aliases=True,
        propagate_to_loaders=False,
    )


@functools.lru_cache(maxsize=4096)
def _str_criteria(tenant: TenantId) -> ORMOption:
    return with_loader_criteria(
        _StrTenants, lambda cls: cls.tenant_id == tenant, include_aliases=True,
        propagate_to_loaders=False,
    )


_CRITERIA = {_KIND_INT: _int_criteria, _KIND_UUID: _uuid_criteria, _KIND_STR: _str_criteria}


@functools.cache
def _deny(kind: str) -> ORMOption:
    return with_loader_criteria(
        _GROUPS[kind], lambda cls: false(), include_aliases=True, propagate_to_loaders=False
    )


def _options(state: ORMExecuteState, tenant: TenantId) -> list[ORMOption]:
    options = []
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
    return options


@functools.lru_cache(maxsize=4096, typed=True)
def _scoped_options(kinds: tuple[str, ...], tenant: TenantId) -> tuple[ORMOption, ...] | None:
    """The options of :func:`_options` when ``tenant`` fits every kind in use, else None.

    Built once per (kinds in use, tenant): every statement of a request reuses the same option
    objects, so the per-statement cost is one cache lookup. The tenant stays a bound parameter
    of each option's criteria (see :func:`_int_criteria`).
    """
    options = []
    for kind in kinds:
        try:
            value = _coerce(tenant, kind, "tenant_scope()")
        except ConfigurationError:
            return None  # decided per statement by _options (raise, or deny that kind)
        options.append(_CRITERIA[kind](value))
    return tuple(options)


def loader_criteria(state: ORMExecuteState) -> Iterable[ORMOption]:
    """The ``LOADER_CRITERIA`` hook: ``tenant_id = :tenant`` on every tenant entity."""
    kinds = tuple([kind for kind, group in _GROUPS.items() if group._members])
    if not kinds:
        return ()  # no tenant model in this process: costs the other patterns nothing
    session = state.session
    if flag(state, ALL_TENANTS) or is_all_tenants(session):
        return ()
    tenant = current_tenant(session)
    if tenant is None:
        if _touches_tenant_table(state):
            require_tenant(session, what=_describe(state))
        # belt and braces: nothing we failed to see can leak
        return [_deny(kind) for kind in kinds]
    options = _scoped_options(kinds, tenant)
    return _not_carried(state, _options(state, tenant) if options is None else options)


def _not_carried(state: ORMExecuteState, options: Sequence[ORMOption]) -> Sequence[ORMOption]:
    """``options`` less those a relationship load already carries. A selectin load copies every
    option of its parent statement, ours included (whatever ``propagate_to_loaders`` says):
    adding them again repeated each tenant condition in its SQL and cost a second statement
    copy. Options are compared by identity, and ours are cached per tenant, so only the very
    criteria in force now are skipped; after a tenant switch both apply (no row)."""
    if not state.is_relationship_load:
        return options
    carried = {id(option) for option in state.statement._with_options}
    return [option for option in options if id(option) not in carried]


def _describe(state: ORMExecuteState) -> str:
    names = ", ".join(sorted({m.class_.__name__ for m in _tenant_entities(state)}))
    verb = "INSERT" if state.is_insert else "UPDATE" if state.is_update else "DELETE" if (
        state.is_delete
    ) else "SELECT"
    return f"this {verb}" + (f" on {names}" if names else "")


# The tenant each session's current transaction told PostgreSQL (set in after_begin).
_sent: weakref.WeakKeyDictionary[Session, tuple[str | None, bool]] = weakref.WeakKeyDictionary()


def _wanted(session: Session) -> tuple[str | None, bool]:
    tenant = current_tenant(session)
    return (None if tenant is None else str(tenant), is_all_tenants(session))


def _after_begin(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    _sent[session] = _wanted(session)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        _sent.pop(session, None)


def transaction_settings(session: Session) -> dict[str, str]:
    """``app.all_tenants = on`` inside ``all_tenants()`` (read only by the admin policy)."""
    return {ALL_TENANTS_SETTING: "on"} if is_all_tenants(session) else {}


def _resync(session: Session, tenant: TenantId | None, admin: bool) -> None:
    """The scope changed inside a transaction: tell PostgreSQL before the next statement, so the
    ORM filter and the RLS policy never disagree (one extra statement, only on a switch)."""
    sent = _sent.get(session)
    if sent is None:
        return  # no transaction yet: after_begin sends the settings
    wanted = (None if tenant is None else str(tenant), admin)
    if wanted == sent:
        return
    _sent[session] = wanted
    session.connection().execute(
        text("SELECT set_config(:t, :tv, true), set_config(:a, :av, true)"),
        {"t": TENANT_SETTING, "tv": wanted[0] or "", "a": ALL_TENANTS_SETTING,
         "av": "on" if admin else ""},
    )


def _do_orm_execute(state: ORMExecuteState) -> Result[Any] | None:
    session = state.session
    tenant = current_tenant(session)
    admin = is_all_tenants(session)
    _resync(session, tenant, admin)  # raw SQL is filtered by RLS too: always keep in sync
    if not (_IntTenants._members or _UuidTenants._members or _StrTenants._members):
        return None  # no tenant model in this process: nothing below can apply
    if state.is_select:
        if state.is_column_load:
            return None
        # Key loaded objects by tenant: get() and many-to-one lazy loads then never reuse an
        # object cached under another tenant (they query, and the filters apply).
        token = _ALL_TOKEN if admin or flag(state, ALL_TENANTS) else tenant
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


def _scope_bulk_by_primary_key(state: ORMExecuteState) -> None:
    """ORM bulk UPDATE by primary key (a list of parameter dicts) ignores loader criteria, so
    the tenant goes into its WHERE clause directly."""
    params = state.parameters
    if not isinstance(params, Sequence) or isinstance(params, str) or not params:
        return
    if flag(state, ALL_TENANTS) or is_all_tenants(state.session):
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
    mappers = _tenant_entities(state)
    if not mappers or flag(state, ALL_TENANTS) or is_all_tenants(state.session):
        return None
    kind = _tenant_kind_of_mapper(mappers[0])
    assert kind is not None
    name = mappers[0].class_.__name__
    tenant = _coerce(require_tenant(state.session, what=f"INSERT into {name}"), kind, "tenant")

    def fill(params: Mapping[str, Any]) -> dict[str, Any]:
        present, value = _tenant_param(params)
        if present and _coerce(value, kind, f"{name}.tenant_id") != tenant:
            raise TenantViolation(
                f"INSERT into {name} with tenant_id={value!r} while tenant {tenant!r} is in "
                "scope. Drop the explicit tenant_id, or use all_tenants() for admin work."
            )
        return {**params, "tenant_id": tenant}

    values = getattr(state.statement, "_values", None) or {}
    present, value = _tenant_param(values)
    if present:
        fill({"tenant_id": value})
    params = state.parameters
    if isinstance(params, Mapping) and params:
        return add_parameters(state, fill(params))
    if isinstance(params, Sequence) and params and not isinstance(params, str):
        return add_parameters(state, [fill(p) for p in params])
    if not present:
        state.statement = state.statement.values(tenant_id=tenant)  # type: ignore[attr-defined]
    return None


def _check_update_values(state: ORMExecuteState) -> None:
    mappers = _tenant_entities(state)
    if not mappers or flag(state, ALL_TENANTS) or is_all_tenants(state.session):
        return
    kind = _tenant_kind_of_mapper(mappers[0])
    assert kind is not None
    name = mappers[0].class_.__name__
    tenant = current_tenant(state.session)
    candidates: list[Mapping[Any, Any]] = []
    values = getattr(state.statement, "_values", None)
    if values:
        candidates.append(values)
    ordered = getattr(state.statement, "_ordered_values", None)
    if ordered:
        candidates.append(dict(ordered))
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
                "(in scope: {tenant!r}). Use all_tenants() for a deliberate migration."
            )


def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    admin = is_all_tenants(session)
    for obj in session.new:
        if not isinstance(obj, TenantMixin):
            continue
        kind = _tenant_kind(type(obj).__table__)  # type: ignore[attr-defined]
        assert kind is not None
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
        if not isinstance(obj, TenantMixin):
            continue
        insp = inspect(obj, raiseerr=True)
        if verb == "UPDATE" and not session.is_modified(obj):
            continue
        kind = _tenant_kind(type(obj).__table__)  # type: ignore[attr-defined]
        assert kind is not None
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


#: Composed by :func:`sa_patterns.install`.
SESSION_LISTENERS = [
    ("after_begin", _after_begin),
    ("after_transaction_end", _after_transaction_end),
    ("do_orm_execute", _do_orm_execute),
    ("before_flush", _before_flush),
]
LOADER_CRITERIA = loader_criteria
TRANSACTION_SETTINGS = transaction_settings
