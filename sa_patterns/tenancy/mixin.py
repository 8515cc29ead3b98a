"""``TenantMixin`` and the schema helpers of tenant models: enrolment when a class is mapped,
copies of a tenant's rows (history tables), keys unique within a tenant and foreign keys that
cannot cross tenants."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    ForeignKeyConstraint,
    Index,
    Table,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import (
    Mapped,
    Mapper,
    declared_attr,
    mapped_column,
)
from sqlalchemy.sql.type_api import TypeEngine

from .._compat import (
    note_joined_subclass,
)
from .._mapping import each_relationship, own_table, refuse_sqlmodel, secondary_refusal, when_mapped
from ..errors import (
    ConfigurationError,
)
from ..roles import ADMIN
from ..schema.access import manage_access
from ..schema.objects import ident
from ..schema.registry import register
from .criteria import enroll
from .references import reference_tenants
from .rls import rls_entities
from .tables import (
    _COPIES_INFO_KEY,
    _JOINED_INFO_KEY,
    _RLS_INFO_KEY,
    _TENANT_INFO_KEY,
    _kind,
    _tenant_kind,
    set_citus_mode,
)


class TenantMixin:
    """Adds an indexed, non-null ``tenant_id`` and scopes the model to the current tenant.

    Class options:

    ``__tenant_type__``
        the column type: ``BigInteger`` (default), ``Integer``, ``Uuid`` or ``String(n)``.
    ``__rls__``
        ``True`` (the default) registers ``ENABLE`` + ``FORCE ROW LEVEL SECURITY``, the tenant
        policy, a policy letting the configured admin role (:mod:`sa_patterns.roles`) see every
        tenant inside ``all_tenants()``, and the role model's grants; ``alembic revision
        --autogenerate`` writes them. ``False`` leaves the ORM filter as the only wall (a table
        the app must read across tenants by design, or a Citus reference table).
    ``__rls_admin_role__``
        a literal role name for the admin policy instead of the configured admin role (kept for
        existing models; configuration is preferred: a literal is frozen into migrations).
    ``__citus__``
        ``True`` marks the table for ``create_distributed_table(..., 'tenant_id')`` (see
        :mod:`sa_patterns.citus`).
    """

    __tenant_type__: ClassVar[Any] = BigInteger
    __rls__: ClassVar[bool] = True
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
    each_relationship(mapper, _REFUSE_SECONDARY)
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
    admin = cls.__rls_admin_role__ or ADMIN
    _enroll(table, cls, _kind(table.c.tenant_id.type), admin if cls.__rls__ else None)
    reference_tenants(table)
    if cls.__citus__:
        set_citus_mode(table, "distributed")
    for copy, entity in table.metadata.info.get(_COPIES_INFO_KEY, {}).get(table.key, ()):
        _scope_copy(table, copy, entity)  # declared before this mixin ran (mixin order)


_REFUSE_SECONDARY = secondary_refusal(
    "tenant_id",
    "other tenants' links would show in the collection and an appended item's link row would "
    "get no tenant_id",
    "a TenantMixin model with a many-to-one relationship to each side, which the tenant "
    "filter covers",
    "docs/tenancy.md",
)


def _enroll(table: Table, entity: type, kind: str, rls: str | None) -> None:
    """Make ``table``, mapped by ``entity``, a tenant table of ``kind``: the session filters it,
    and with ``rls`` (an admin role, or "" for none) it gets row-level security."""
    table.metadata.info.setdefault(_TENANT_INFO_KEY, {})[table.key] = kind
    entity.__sa_tenant_kind__ = kind  # type: ignore[attr-defined]
    enroll(kind, entity)
    if rls is not None:
        table.metadata.info.setdefault(_RLS_INFO_KEY, {})[table.key] = rls
        register(table.metadata, *rls_entities(table, rls or None))
        manage_access(table.metadata)


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
