"""Mixin set-up that runs when SQLAlchemy maps a class, whatever declarative style maps it.

A mixin's set-up (enrolling a tenant table, registering audit triggers, building a history
table...) needs the class's ``Table``. ``DeclarativeBase`` maps a class inside
``__init_subclass__``, so the table exists there; the legacy ``declarative_base()``
(``DeclarativeMeta``), ``registry.mapped``, ``registry.map_declaratively``,
``registry.map_imperatively`` and SQLModel map it *after* ``__init_subclass__`` has run. A
set-up written in ``__init_subclass__`` alone then silently does nothing: a tenant model that is
not filtered, an audited table without triggers.

:func:`when_mapped` runs a set-up at the one moment every style shares: when the class's own
mapper exists. It runs it at once when the class is mapped already, and otherwise from the
class's own ``after_mapper_constructed`` event (SQLAlchemy holds a listener on a class that is
not mapped yet and attaches it to the mapper when one is made). Nothing is global: no listener
on :class:`~sqlalchemy.orm.Mapper`, nothing at import time.

:func:`each_relationship` runs a check on every relationship of the mappers a model is
configured with, for refusals that can only be decided once relationships are resolved.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import Table, event, inspect
from sqlalchemy.orm import Mapper, RelationshipProperty

from .errors import ConfigurationError

__all__ = ["each_relationship", "own_table", "refuse_sqlmodel", "secondary_refusal", "when_mapped"]

Setup = Callable[[Mapper[Any]], None]
Check = Callable[[RelationshipProperty[Any]], None]


def when_mapped(cls: type, setup: Setup) -> None:
    """Run ``setup(mapper)`` once ``cls`` has a mapper of its own: now if it has one, else when
    SQLAlchemy constructs it. Call it from a mixin's ``__init_subclass__``, after ``super()``.

    The set-ups of several mixins run in the same order in every style: ``__init_subclass__``
    calls return innermost mixin first, and listeners fire in the order they were added.
    (``after_mapper_constructed`` exists since SQLAlchemy 2.0.2; the floor is 2.0.30.)
    """
    if getattr(cls, "__rls__", False) and not hasattr(cls, "__sa_tenant_kind__"):
        raise ConfigurationError(
            f"{cls.__name__} sets __rls__ = True but is not a TenantMixin model: row-level "
            "security needs the tenant_id column and policy TenantMixin adds. Add TenantMixin "
            "to the class, or remove __rls__."
        )
    if cls.__dict__.get("__abstract__", False):
        return  # never mapped
    mapper: object = inspect(cls, raiseerr=False)
    if isinstance(mapper, Mapper) and mapper.class_ is cls:
        setup(mapper)
    else:
        event.listen(cls, "after_mapper_constructed", lambda m, _c: setup(m), once=True)


def own_table(mapper: Mapper[Any]) -> Table | None:
    """The ``Table`` ``mapper`` maps for its class alone: ``None`` for a single-table
    inheritance subclass (its parent set the table up) and for a class mapped to a select."""
    table = mapper.local_table
    if not isinstance(table, Table):
        return None
    if mapper.inherits is not None and mapper.inherits.local_table is table:
        return None
    return table


# mapper -> checks already run on its relationships (or waiting for its configuration)
_checked: weakref.WeakKeyDictionary[Mapper[Any], set[Check]] = weakref.WeakKeyDictionary()


def each_relationship(mapper: Mapper[Any], check: Check) -> None:
    """Run ``check`` on every relationship of ``mapper``'s registry once it is resolved.

    Registered per model (on ``mapper``'s ``mapper_configured`` event): when the model is
    configured, the mappers of its registry that are configured already are checked at once and
    the others when they are configured (each through its own one-off event). A relationship
    defined on a plain model is checked too, as long as it is configured in the same
    configuration pass as the model or before it.
    """

    def scan(configured: Mapper[Any], _class: type) -> None:
        for other in list(configured.registry.mappers):
            done = _checked.setdefault(other, set())
            if check in done:
                continue
            done.add(check)
            if other.configured:
                _check_mapper(other, check)
            else:
                event.listen(other, "mapper_configured", lambda m, _c: _check_mapper(m, check), once=True)

    event.listen(mapper, "mapper_configured", scan, once=True)


def _check_mapper(mapper: Mapper[Any], check: Check) -> None:
    for rel in mapper.relationships:
        if rel.parent is mapper:  # inherited relationships are checked on their own mapper
            check(rel)


def refuse_sqlmodel(cls: type, mixin: str) -> None:
    """Refuse ``mixin`` on a SQLModel model, at class definition, with what to do instead.

    The mixin's columns are not pydantic fields: pydantic cannot build a schema for a
    ``Mapped[...]`` annotation (``PydanticSchemaGenerationError`` while SQLModel defines the
    class), and a column added by a ``declared_attr`` (``tenant_id``) cannot be set on an
    instance (pydantic refuses the attribute, so the flush could not fill it). The counterparts
    in :mod:`sa_patterns.sqlmodel` declare them as SQLModel fields and mark themselves with
    ``__sa_sqlmodel_of__``; a class that has ``mixin``'s counterpart passes. Called before
    ``super().__init_subclass__()``, so the refusal comes before pydantic's error.
    """
    if not any(k.__name__ == "SQLModel" and k.__module__.startswith("sqlmodel") for k in cls.__mro__):
        return
    if any(vars(k).get("__sa_sqlmodel_of__") == mixin for k in cls.__mro__):
        return
    from . import sqlmodel as counterparts  # sqlmodel is importable: cls is a SQLModel

    if mixin in counterparts.__all__:
        raise ConfigurationError(
            f"{cls.__name__}: sa_patterns.{mixin} declares its columns as SQLAlchemy "
            "Mapped[...] attributes, which SQLModel can neither define nor fill. Use its SQLModel "
            f"counterpart, the same mixin with SQLModel fields: from sa_patterns.sqlmodel import "
            f"{mixin} (see docs/sqlmodel.md)."
        )
    raise ConfigurationError(
        f"{cls.__name__}: {mixin} does not support SQLModel models (its columns are not "
        "pydantic fields: SQLModel can neither define nor fill them, and sa_patterns.sqlmodel "
        "has no counterpart of it). Declare the table model on a SQLAlchemy DeclarativeBase "
        "(class Base(DeclarativeBase)) and keep SQLModel/pydantic classes for the API schemas, "
        "e.g. with model_config = ConfigDict(from_attributes=True)."
    )


def secondary_refusal(column: str, harm: str, link: str, page: str) -> Check:
    """The check that refuses ``relationship(secondary=...)`` through a table with ``column``
    (``tenant_id``, ``deleted_at``): SQLAlchemy's criteria never reach a secondary table, so
    ``harm`` would follow. The message names the association-object recipe (``link``) and the
    docs ``page`` that shows it."""

    def check(rel: RelationshipProperty[Any]) -> None:
        secondary = rel.secondary
        if secondary is None or column not in {c.name for c in secondary.columns}:
            return
        name = getattr(secondary, "name", None) or str(secondary)
        raise ConfigurationError(
            f"{rel.parent.class_.__name__}.{rel.key} uses the table {name!r} as secondary=, and "
            f"that table has a {column} column: SQLAlchemy's criteria do not reach a secondary "
            f"table, so {harm}. Map the link as an association object ({link}), give the parent "
            "a one-to-many relationship to it, and use "
            "sqlalchemy.ext.associationproxy.association_proxy for the collection of the other "
            f"side (see 'Many-to-many links' in {page}). A plain Table secondary= with a "
            f"{column} column is refused too: nothing would fill or filter it."
        )

    return check
