"""``TypedJSON(Model)``: a ``jsonb`` column that holds a dataclass or a pydantic model.

PostgreSQL's ``jsonb`` accepts any JSON, so nothing in the database stops a typo'd key or a
string where a number belongs; the schema of the document lives only in the application.
``TypedJSON`` puts that schema in the column type: values are validated when written and when
read (a row written by another program or an old release fails loudly, naming the column), and
Python code works with real objects instead of dicts.

Pydantic models (and dataclasses, when pydantic is installed) go through
``pydantic.TypeAdapter``; without pydantic, dataclasses are checked field by field.

In-place changes (``order.shipping.city = "Oslo"``, even nested list appends) are saved on
sessions made by an ``install()``-ed factory: the loaded document is remembered and compared
with the current one at commit and at every flush, so no wrapper class or per-attribute proxy
is needed. One gap: a bare ``session.flush()`` right after a full (re)load of the object, with
nothing else pending, short-circuits before any hook runs; ``commit()`` still writes the change,
or call ``flag_modified(obj, "col")``. Without ``install()``, assign a new object.

Migrations store the column as plain ``jsonb`` (rendered ``sa_patterns.TypedJSON.jsonb()``), so
they never import your model classes.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import weakref
from typing import Any, Generic, TypeVar, Union

from sqlalchemy import Column, event, inspect
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm.attributes import flag_dirty, flag_modified
from sqlalchemy.orm.state import InstanceState
from sqlalchemy.types import TypeDecorator

from .errors import ConfigurationError, InvalidData
from .pattern import Listener, Pattern

__all__ = ["PATTERN", "TypedJSON"]

M = TypeVar("M")


def _pydantic() -> Any:
    try:
        import pydantic
    except ImportError:  # pragma: no cover - pydantic is optional
        return None
    return pydantic


class _DataclassCodec:
    """Field-by-field checking for dataclasses when pydantic is not installed."""

    def __init__(self, model: type[Any]) -> None:
        self.model = model

    def load(self, data: Any, cls: Any = None, where: str = "") -> Any:
        cls = self.model if cls is None else cls
        origin = typing.get_origin(cls)
        args = typing.get_args(cls)
        if cls is Any:
            return data
        if origin in (Union, types.UnionType):
            if data is None and type(None) in args:
                return None
            errors = []
            for arg in args:
                if arg is type(None):
                    continue
                try:
                    return self.load(data, arg, where)
                except InvalidData as exc:
                    errors.append(exc.args[0])
            raise InvalidData(f"{where or 'value'}: {data!r} matches none of {cls}")
        if dataclasses.is_dataclass(cls) and isinstance(cls, type):
            if not isinstance(data, dict):
                raise InvalidData(f"{where or 'value'}: expected an object, got {data!r}")
            hints = typing.get_type_hints(cls)
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(data) - names)
            if unknown:
                raise InvalidData(f"{where or cls.__name__}: unknown field {unknown[0]!r}")
            kwargs = {}
            for f in dataclasses.fields(cls):
                if f.name in data:
                    kwargs[f.name] = self.load(data[f.name], hints[f.name], f"{where}{f.name}.")
                elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise InvalidData(f"{where}{f.name}: field required")
            return cls(**kwargs)
        if origin in (list, tuple, set, frozenset) or cls in (list, tuple):
            if not isinstance(data, list | tuple):
                raise InvalidData(f"{where.rstrip('.') or 'value'}: expected a list, got {data!r}")
            item = args[0] if args else Any
            loaded = [self.load(v, item, f"{where}[{i}].") for i, v in enumerate(data)]
            return (origin or cls)(loaded)
        if origin is dict or cls is dict:
            if not isinstance(data, dict):
                raise InvalidData(f"{where.rstrip('.') or 'value'}: expected an object, got {data!r}")
            value_type = args[1] if len(args) == 2 else Any
            return {k: self.load(v, value_type, f"{where}{k}.") for k, v in data.items()}
        if cls is float and isinstance(data, int) and not isinstance(data, bool):
            return float(data)
        if isinstance(cls, type) and (not isinstance(data, cls) or (cls is int and isinstance(data, bool))):
            raise InvalidData(
                f"{where.rstrip('.') or 'value'}: expected {cls.__name__}, got {data!r}"
            )
        return data

    def dump(self, value: Any) -> Any:
        data = dataclasses.asdict(value)
        self.load(data)  # validates the object as it is now (it may have been mutated)
        return data


class _PydanticCodec:
    def __init__(self, model: type[Any], pydantic: Any) -> None:
        self.adapter = pydantic.TypeAdapter(model)
        self.error = pydantic.ValidationError

    def load(self, data: Any) -> Any:
        try:
            return self.adapter.validate_python(data)
        except self.error as exc:
            raise InvalidData(_pydantic_message(exc)) from exc

    def dump(self, value: Any) -> Any:
        data = self.adapter.dump_python(value, mode="json")
        self.load(data)  # re-validate: models are mutable and may hold invalid values now
        return data


def _pydantic_message(exc: Any) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "value"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)


class TypedJSON(TypeDecorator[M], Generic[M]):
    """A ``jsonb`` column holding instances of ``model`` (a dataclass or pydantic model)."""

    impl = JSONB
    cache_ok = True

    def __init__(self, model: type[M]) -> None:
        super().__init__(none_as_null=True)
        pydantic = _pydantic()
        is_pydantic = pydantic is not None and isinstance(model, type) and issubclass(
            model, pydantic.BaseModel
        )
        if not (is_pydantic or dataclasses.is_dataclass(model)):
            raise ConfigurationError(
                f"TypedJSON({model!r}): pass a dataclass or a pydantic model class. For "
                "free-form JSON use sqlalchemy.dialects.postgresql.JSONB."
            )
        self.model = model
        self._column: Column[Any] | None = None
        self._codec: Any = (
            _PydanticCodec(model, pydantic) if pydantic is not None else _DataclassCodec(model)
        )

    # -- where am I (for messages) ----------------------------------------------------------
    def _set_parent(self, parent: Any, outer: bool = False, **kw: Any) -> None:
        # TypeDecorator is a SchemaEventTarget: the Column tells us who we are, for messages.
        super()._set_parent(parent, outer=outer, **kw)
        if isinstance(parent, Column):
            self._column = parent

    @property
    def where(self) -> str:
        column = self._column
        if column is None:
            return f"TypedJSON({self.model.__name__})"
        table = getattr(column, "table", None)
        return f"{table.name}.{column.name}" if table is not None else str(column.name)

    # -- codec --------------------------------------------------------------------------------
    def dump(self, value: Any) -> Any:
        """The JSON document for ``value``, validated; :class:`InvalidData` names the column."""
        if value is None:
            return None
        if not isinstance(value, self.model):
            raise InvalidData(
                f"{self.where} holds {self.model.__name__} objects; got {type(value).__name__}. "
                f"Build it with {self.model.__name__}(...) (or {self.model.__name__}(**data))."
            )
        try:
            return self._codec.dump(value)
        except InvalidData as exc:
            raise InvalidData(f"{self.where}: invalid {self.model.__name__}: {exc.args[0]}") from exc

    def load(self, data: Any) -> M | None:
        """A ``model`` instance from a stored document; :class:`InvalidData` names the column."""
        if data is None:
            return None
        try:
            return typing.cast(M, self._codec.load(data))
        except InvalidData as exc:
            raise InvalidData(
                f"{self.where}: the stored document is not a valid {self.model.__name__} "
                f"({exc.args[0]}). Fix the row or migrate the data."
            ) from exc

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return self.dump(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> M | None:
        return self.load(value)

    def copy(self, **kw: Any) -> TypedJSON[M]:
        # Shares the codec; a Column copy re-attaches it to its own column (_set_parent).
        new = self.__class__.__new__(self.__class__)
        new.__dict__.update(self.__dict__)
        return new

    def coerce_compared_value(self, op: Any, value: Any) -> Any:
        return self.impl_instance.coerce_compared_value(op, value)

    def __repr__(self) -> str:
        # Alembic renders our types as ``sa_patterns.<repr>``: migrations get plain jsonb and
        # never import the application's model classes.
        return "TypedJSON.jsonb()"

    @staticmethod
    def jsonb() -> JSONB:
        """The storage type, as written into migrations."""
        return JSONB(none_as_null=True)


# -- mutation tracking (installed through sa_patterns.install) --------------------------------
_KEY = "sa_patterns.typed_json"
_attrs_cache: weakref.WeakKeyDictionary[Mapper[Any], tuple[tuple[str, TypedJSON[Any]], ...]] = (
    weakref.WeakKeyDictionary()
)


def _typed_attrs(mapper: Mapper[Any]) -> tuple[tuple[str, TypedJSON[Any]], ...]:
    found = _attrs_cache.get(mapper)
    if found is None:
        found = tuple(
            (prop.key, prop.columns[0].type)
            for prop in mapper.column_attrs
            if len(prop.columns) == 1 and isinstance(prop.columns[0].type, TypedJSON)
        )
        _attrs_cache[mapper] = found
        if found and not event.contains(mapper, "refresh", _on_refresh):
            # Expired attributes come back through "refresh", not a session event: without a
            # new snapshot, a change made right after reloading would look like a replacement.
            event.listen(mapper, "refresh", _on_refresh)
    return found


Snapshot = dict[str, tuple[Any, Any]]


def _store(session: Session) -> weakref.WeakKeyDictionary[InstanceState[Any], Snapshot]:
    store = session.info.get(_KEY)
    if store is None:
        store = session.info[_KEY] = weakref.WeakKeyDictionary()
    return typing.cast(weakref.WeakKeyDictionary[InstanceState[Any], Snapshot], store)


def _remember(session: Session, instance: object, *, dirty: bool = True) -> None:
    # Runs for every object a query loads: a model without TypedJSON columns (decided once per
    # class) costs one dict lookup, not an inspect() and a mapper lookup.
    if not _class_attrs(type(instance)):
        return
    state = inspect(instance, raiseerr=True)
    attrs = _typed_attrs(state.mapper)
    snap: Snapshot = {}
    for key, type_ in attrs:
        if key in state.dict:
            value = state.dict[key]
            snap[key] = (value, _safe_dump(type_, value))
    _store(session)[state] = snap
    # An in-place change sets no attribute, so the session would look clean and skip
    # before_flush; flag_dirty is SQLAlchemy's hook for "let this object reach before_flush".
    if dirty:
        flag_dirty(instance)


def _remember_flushed(session: Session, instance: object) -> None:
    # Inside the flush: flagging now would be reset (and warned about); after_flush_postexec
    # flags it once the flush is over.
    _remember(session, instance, dirty=False)


def _on_refresh(instance: object, context: Any, keys: Any) -> None:
    store = context.session.info.get(_KEY)
    if store is None:
        return  # a session without install(): not tracked
    state = inspect(instance, raiseerr=True)
    snap = store.setdefault(state, {})
    for key, type_ in _typed_attrs(state.mapper):
        if (keys is None or key in keys) and key in state.dict:
            value = state.dict[key]
            snap[key] = (value, _safe_dump(type_, value))
    flag_dirty(instance)


def _safe_dump(type_: TypedJSON[Any], value: Any) -> Any:
    try:
        return type_.dump(value)
    except InvalidData:
        return None  # reported when (if) the value is written


def _detect(session: Session) -> None:
    """flag_modified every tracked document whose JSON differs from its snapshot."""
    store = session.info.get(_KEY)
    if not store:
        return
    for state, snap in list(store.items()):
        obj = state.obj()
        if obj is None or state.session_id != session.hash_key or state.deleted:
            continue
        typed = dict(_typed_attrs(state.mapper))
        for key, (seen, document) in list(snap.items()):
            if key not in state.dict:
                continue  # expired: the reload ("refresh") takes a new snapshot
            current = state.dict[key]
            now = _safe_dump(typed[key], current)
            if current is seen and now != document:
                flag_modified(obj, key)  # changed in place
            snap[key] = (current, now)


_by_class: weakref.WeakKeyDictionary[type, dict[str, TypedJSON[Any]]] = weakref.WeakKeyDictionary()


def _class_attrs(cls: type) -> dict[str, TypedJSON[Any]]:
    # One dict lookup per object on the flush path: sessions without TypedJSON models (most
    # installed sessions) pay almost nothing for this listener.
    found = _by_class.get(cls)
    if found is None:
        mapper: Any = inspect(cls, raiseerr=False)
        found = dict(_typed_attrs(mapper)) if isinstance(mapper, Mapper) else {}
        _by_class[cls] = found
    return found


def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    _detect(session)
    # Validate what is about to be written, so the error is ours and names the column.
    for obj in list(session.new) + list(session.dirty):
        typed = _class_attrs(type(obj))
        if not typed:
            continue
        state = inspect(obj)
        keys = state.committed_state if state.key is not None else typed
        for key in keys:
            type_ = typed.get(key)
            if type_ is not None and key in state.dict:
                type_.dump(state.dict[key])


_COMMITTING = "sa_patterns.typed_json.committing"


def _before_commit(session: Session) -> None:
    session.info[_COMMITTING] = True
    _detect(session)  # objects already flushed in this transaction are not flagged dirty


def _after_flush_postexec(session: Session, flush_context: Any) -> None:
    if session.info.get(_COMMITTING):
        return  # re-flagging inside commit would make its flush loop never end
    store = session.info.get(_KEY)
    for state in list(store or ()):
        obj = state.obj()
        if obj is not None and state.session_id == session.hash_key and not state.deleted:
            flag_dirty(obj)


def _transaction_over(session: Session, *args: Any) -> None:
    session.info.pop(_COMMITTING, None)


_LISTENERS: list[Listener] = [
    ("loaded_as_persistent", _remember),
    ("pending_to_persistent", _remember_flushed),
    ("before_flush", _before_flush),
    ("after_flush_postexec", _after_flush_postexec),
    ("before_commit", _before_commit),
    ("after_commit", _transaction_over),
    ("after_soft_rollback", _transaction_over),
]

PATTERN = Pattern("typed_json", listeners=tuple(_LISTENERS))
