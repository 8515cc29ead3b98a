"""The read side of the ORM wall: ``tenant_id = :tenant`` as loader criteria on every tenant
entity, and as conditions on the tables SQLAlchemy's criteria do not reach (explicit joins,
the Core statements the toolkit writes itself)."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterable
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    Table,
    Text,
    Uuid,
    column,
    false,
)
from sqlalchemy.orm import (
    ORMExecuteState,
    Session,
    with_loader_criteria,
)
from sqlalchemy.orm.interfaces import ORMOption, UserDefinedOption
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.util import find_tables
from sqlalchemy.types import TypeDecorator

from .._compat import parent_entity, raw_columns
from .._joins import base_table
from ..context import (
    StatementContext,
    TenantId,
    is_all_tenants,
    require_tenant,
)
from ..errors import (
    ConfigurationError,
)
from ..options import ALL_TENANTS, flag
from .tables import _JOINED_INFO_KEY, _KIND_INT, _KIND_STR, _KIND_UUID, _coerce, _tenant_kind


def _tenant_entities(state: ORMExecuteState) -> list[Any]:
    return [m for m in state.all_mappers if _tenant_kind_of_mapper(m) is not None]


def _selects_tenant_entity(state: ORMExecuteState) -> bool:
    """Whether a SELECT loads a tenant entity; reads the statement's entities' annotations
    (``all_mappers`` builds column descriptions, several times the cost of this hot path)."""
    statement = state.statement
    if not isinstance(statement, Select):
        return bool(_tenant_entities(state))
    for element in raw_columns(statement):
        entity = parent_entity(element)
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


class _TenantValue(TypeDecorator[Any]):
    """The type of the tenant's bound parameter: the column's type, plus a cheap ``==``
    between two bound parameters.

    SQLAlchemy annotates the criteria's bound parameter when it applies the criteria, and an
    annotated element hashes like the original; each execution then looks both up in the same
    dicts (``construct_params``), and every probe that meets the twin calls ``==``, which builds a
    ``BinaryExpression`` only to ask its truth (3+ per statement, most of the read overhead
    of tenant filtering). That truth is "same hash"; it is answered here without building SQL.
    Anything else compared with the parameter still builds SQL as usual.

    It leans on how SQLAlchemy looks parameters up, not on its API: pinned on 2.0 and 2.1 by
    tests/foundation/test_foundation_compat.py, and measured in bench/RESULTS.md (about 3 SQL
    expressions built per statement without it: 8–15 % of a tenant lookup's client time).
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


#: the kinds that have mapped tenant classes, kept by enroll() (read on every statement)
_in_use: list[tuple[str, ...]] = [()]


def enroll(kind: str, entity: type) -> None:
    """``entity`` is a mapped tenant class of ``kind``: its group's criteria cover it."""
    _GROUPS[kind]._members.add(entity)
    _in_use[0] = tuple(k for k in _GROUPS if _GROUPS[k]._members)


def _kinds_in_use() -> tuple[str, ...]:
    return _in_use[0]


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
    table = base_table(from_)
    kind = None if table is None or context.admin else _tenant_kind(table)
    if kind is None:
        return []
    what = _describe(context.state)
    tenant = _coerce(require_tenant(context.session, what=what), kind, what)
    return [from_.c.tenant_id == tenant]


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
    base = base_table(table)
    kind = None if base is None else _tenant_kind(base)
    if kind is None or admin or is_all_tenants(session):
        return []
    what = f"a statement on {base.name}"  # type: ignore[union-attr]
    return [table.c.tenant_id == _coerce(require_tenant(session, what=what), kind, what)]
