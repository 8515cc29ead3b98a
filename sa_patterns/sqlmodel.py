"""The mixins for SQLModel table models: the same names, their columns declared as SQLModel fields.

``sa_patterns.TenantMixin`` and ``sa_patterns.SoftDeleteMixin`` declare their columns as
SQLAlchemy ``Mapped[...]`` attributes. SQLModel turns every annotation of a model into a
pydantic field, so it cannot define a class with them (``PydanticSchemaGenerationError``), and a
column pydantic does not know cannot be set on an instance (``"Item" object has no field
"tenant_id"`` when the flush fills it). The classes here subclass those mixins and redeclare
their columns as SQLModel fields (``Field(sa_type=...)``, so every table gets a fresh ``Column``
of its own): the behaviour is the mixin's own (it is the same class underneath), only the
declaration differs. Switching is one import line::

    from sa_patterns.sqlmodel import Audited, SoftDeleteMixin, TenantMixin

    class Item(SoftDeleteMixin, TenantMixin, Audited, SQLModel, table=True):
        id: int | None = Field(default=None, primary_key=True)
        name: str

``Audited``, ``Versioned`` and ``Searchable`` carry no pydantic-visible columns (their tables,
triggers and the generated ``search_vector`` are added when SQLAlchemy maps the class); they are
re-exported as they are, and ``Searchable``'s ``search()`` returns SQLModel's ``select`` here so
``session.exec()`` yields model instances. Encrypted columns are ordinary fields:
``Field(sa_type=EncryptedString(keyring=...))``, one type instance per column.

``tenant_id`` is optional (``None``) in pydantic: the session fills it at flush and refuses
another tenant's id (:class:`~sa_patterns.TenantViolation`), so API schemas should leave it
out (see docs/sqlmodel.md). A tenant column other than ``BigInteger`` is a redeclared field,
``tenant_id: uuid.UUID | None = tenant_field(Uuid)``; ``__tenant_type__`` is refused, since
SQLModel takes the column's type from the field.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID

from sqlalchemy import BigInteger, DateTime, String, Text, Uuid, func, literal
from sqlalchemy.exc import SAWarning
from sqlalchemy.sql.type_api import TypeEngine

from . import search as _search
from . import soft_delete as _soft_delete
from .audit import Audited
from .errors import ConfigurationError
from .tenancy import mixin as _tenancy
from .versioning import Versioned

try:
    from sqlmodel import Field, SQLModel, select
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ConfigurationError(
        "sa_patterns.sqlmodel needs the sqlmodel package, which is not installed: "
        "pip install sqlmodel (or use the mixins of sa_patterns on a DeclarativeBase)."
    ) from exc

if TYPE_CHECKING:
    from sqlmodel.sql.expression import SelectOfScalar
    from typing_extensions import Self

    from .search import ConfigArg

__all__ = ["Audited", "Searchable", "SoftDeleteMixin", "TenantMixin", "Versioned", "tenant_field"]


class _Hidden:
    """Stands, on a counterpart, for the attribute its SQLAlchemy mixin declares a column with.

    pydantic reads a parent's class attribute as the field's default (``getattr(Item,
    "deleted_at")`` would find the mixin's ``mapped_column``, and ``tenant_id``'s
    ``declared_attr`` would run unmapped, then become an ``INTEGER NULL`` column); hidden, the
    field is inherited as the counterpart declares it. A non-data descriptor: an instance's own
    value wins, and SQLAlchemy instruments the mapped subclass above it.
    """

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        raise AttributeError("a column of the mapped subclass")


@contextmanager
def _redeclaring() -> Iterator[None]:
    """Silence what redeclaring a mixin's columns as fields makes pydantic say (the field
    "shadows an attribute in parent", read through the unmapped ``declared_attr``): here it is
    the point. Only around the definitions below."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Field name .* shadows an attribute in parent", UserWarning)
        warnings.filterwarnings("ignore", r"Unmanaged access of declarative attribute", SAWarning)
        yield


def _hide(cls: type, *names: str) -> None:
    for name in names:
        type.__setattr__(cls, name, _Hidden())


def tenant_field(sa_type: type[TypeEngine[Any]] | TypeEngine[Any] = BigInteger) -> Any:
    """The ``tenant_id`` field: indexed, ``NOT NULL`` in the table, optional in pydantic (the
    session fills it at flush). Redeclare it with another type for a non-integer tenant:
    ``tenant_id: uuid.UUID | None = tenant_field(Uuid)``."""
    return Field(default=None, sa_type=sa_type, nullable=False, index=True)


class _Counterpart(SQLModel):
    """What the counterparts share: their fields come last, as the mixins' columns do.

    SQLModel makes a table's columns in the order of the pydantic fields, which lists inherited
    fields first; a ``DeclarativeBase`` model lists the mixins' columns after its own. The
    audit and history functions name the columns in table order, so a model moved to SQLModel
    would see them rewritten by autogenerate: the inherited counterpart fields are moved after
    the others (in the mixins' order) before SQLModel reads them. Validation and serialization
    keep pydantic's order; only the list of fields is reordered.
    """

    #: the mixin this class stands for (``refuse_sqlmodel`` lets a class with it through)
    __sa_sqlmodel_of__: ClassVar[str]
    #: the fields it declares for that mixin's columns
    __sa_sqlmodel_fields__: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kw: Any) -> None:
        super().__pydantic_init_subclass__(**kw)
        own = inspect.get_annotations(cls)
        fields = cls.__pydantic_fields__
        for base in cls.__mro__:
            for name in vars(base).get("__sa_sqlmodel_fields__", ()):
                if name in fields and name not in own:
                    fields[name] = fields.pop(name)


with _redeclaring():

    class TenantMixin(_tenancy.TenantMixin, _Counterpart):
        """:class:`sa_patterns.TenantMixin` with ``tenant_id`` as a SQLModel field (``bigint``)."""

        __sa_sqlmodel_of__ = "TenantMixin"
        __sa_sqlmodel_fields__: ClassVar[tuple[str, ...]] = ("tenant_id",)

        tenant_id: int | None = tenant_field()

        def __init_subclass__(cls, **kw: Any) -> None:
            if "__tenant_type__" in cls.__dict__:
                raise ConfigurationError(
                    f"{cls.__name__}: __tenant_type__ does not reach a SQLModel model, whose "
                    "column type comes from the field. Redeclare the field instead, e.g. "
                    "tenant_id: uuid.UUID | None = tenant_field(Uuid) "
                    "(from sa_patterns.sqlmodel import tenant_field)."
                )
            super().__init_subclass__(**kw)

    class SoftDeleteMixin(_soft_delete.SoftDeleteMixin, _Counterpart):
        """:class:`sa_patterns.SoftDeleteMixin` with ``deleted_at``, ``deleted_by`` and
        ``delete_batch`` as SQLModel fields (the same columns)."""

        __sa_sqlmodel_of__ = "SoftDeleteMixin"
        __sa_sqlmodel_fields__: ClassVar[tuple[str, ...]] = ("deleted_at", "deleted_by", "delete_batch")

        deleted_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
        deleted_by: str | None = Field(default=None, sa_type=Text)
        delete_batch: UUID | None = Field(default=None, sa_type=Uuid)


_hide(TenantMixin, "tenant_id")
_hide(SoftDeleteMixin, "deleted_at", "deleted_by", "delete_batch")


class Searchable(_search.Searchable):
    """:class:`sa_patterns.Searchable` whose :meth:`search` is SQLModel's ``select``, so
    ``session.exec(Model.search(q))`` yields model instances (a plain SQLAlchemy ``select``
    gives ``exec()`` rows)."""

    @classmethod
    def search(
        cls,
        query: str,
        *,
        config: ConfigArg = None,
        prefix: bool = False,
        fuzzy: bool = False,
        sort: bool = True,
    ) -> SelectOfScalar[Self]:
        """:meth:`sa_patterns.Searchable.search`'s statement: its condition, its order."""
        found = super().search(query, config=config, prefix=prefix, fuzzy=fuzzy, sort=False)
        stmt: SelectOfScalar[Self] = select(cls).where(found.whereclause)  # type: ignore[arg-type]
        if not sort:
            return stmt
        order = [_search.rank(cls, query, config=config, prefix=prefix).desc()]
        if fuzzy:  # the same second key as the core search: the closest trigram match
            typed = literal(_search._clean(query), String)
            columns = _search._trigram_columns(cls)
            order.append(func.greatest(*(func.word_similarity(typed, c) for c in columns)).desc())
        return stmt.order_by(*order)
