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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Table, event, inspect
from sqlalchemy.orm import Mapper

from .errors import ConfigurationError

__all__ = ["own_table", "refuse_sqlmodel", "when_mapped"]

Setup = Callable[[Mapper[Any]], None]


def when_mapped(cls: type, setup: Setup) -> None:
    """Run ``setup(mapper)`` once ``cls`` has a mapper of its own: now if it has one, else when
    SQLAlchemy constructs it. Call it from a mixin's ``__init_subclass__``, after ``super()``.

    The set-ups of several mixins run in the same order in every style: ``__init_subclass__``
    calls return innermost mixin first, and listeners fire in the order they were added.
    (``after_mapper_constructed`` exists since SQLAlchemy 2.0.2; the floor is 2.0.30.)
    """
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


def refuse_sqlmodel(cls: type, mixin: str) -> None:
    """Refuse ``mixin`` on a SQLModel model, at class definition, with what to do instead.

    The mixin's columns are not pydantic fields: pydantic cannot build a schema for a
    ``Mapped[...]`` annotation (``PydanticSchemaGenerationError`` while SQLModel defines the
    class), and a column added by a ``declared_attr`` (``tenant_id``) cannot be set on an
    instance (pydantic refuses the attribute, so the flush could not fill it). Supporting
    SQLModel needs declarations of its own (``Field(sa_column=...)``). Called before
    ``super().__init_subclass__()``, so the refusal comes before pydantic's error.
    """
    if any(k.__name__ == "SQLModel" and k.__module__.startswith("sqlmodel") for k in cls.__mro__):
        raise ConfigurationError(
            f"{cls.__name__}: {mixin} does not support SQLModel models yet (its columns are "
            "not pydantic fields: SQLModel can neither define nor fill them). Declare the "
            "table model on a SQLAlchemy DeclarativeBase (class Base(DeclarativeBase)) and keep "
            "SQLModel/pydantic classes for the API schemas, e.g. with "
            "model_config = ConfigDict(from_attributes=True)."
        )
