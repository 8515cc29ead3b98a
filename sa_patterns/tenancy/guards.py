"""The write side of the ORM wall and the paths loader criteria skip: refreshes, bulk writes by
primary key, every INSERT form, upserts, flushes and the legacy ``Session.bulk_*`` methods."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    ClauseElement,
    Select,
    inspect,
    literal,
    select,
)
from sqlalchemy.engine import Result
from sqlalchemy.orm import (
    ORMExecuteState,
    Session,
)
from sqlalchemy.sql.elements import BindParameter

from .._compat import (
    add_parameters,
    conflict_set,
    conflict_update,
    insert_parts,
    replace_insert,
    update_values,
    with_conflict_where,
)
from ..context import (
    TenantId,
    current_tenant,
    is_all_tenants,
    require_tenant,
)
from ..errors import (
    TenantRequired,
    TenantViolation,
    UnsupportedStatement,
)
from ..options import parameter_rows
from ..pattern import Pattern
from .criteria import (
    _admin,
    _kinds_in_use,
    _selects_tenant_entity,
    _tenant_entities,
    _tenant_kind_of_mapper,
    from_criteria,
    loader_criteria,
)
from .tables import _ALL_TOKEN, _coerce


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
    if parameter_rows(state) is None or _admin(state):
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
    rows = parameter_rows(state)
    if rows is not None:
        return add_parameters(state, [fill(p) for p in rows])
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
    else:
        candidates.extend(p for p in parameter_rows(state) or () if isinstance(p, Mapping))
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
