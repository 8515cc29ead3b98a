"""Typed events: a registry of event classes, their stored names and versions, and upcasters.

An event is a dataclass (or a pydantic model, when pydantic is installed). The store never
pickles: it writes ``event_type`` (a stable name), ``schema_version`` and the event's fields as
JSON. Renaming a Python class therefore never breaks old rows, and changing an event's shape is
handled by *upcasters*: small functions that turn the stored dict of version ``n`` into version
``n + 1`` while reading, so old events never need a data migration.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import types
import typing
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..errors import ConfigurationError

__all__ = ["EventRegistry", "RecordedEvent", "Upcaster"]

E = TypeVar("E")
T = TypeVar("T")

#: ``fn(data) -> data``: turns the stored fields of one schema version into the next one.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class RecordedEvent(Generic[E]):
    """An event as stored: its data plus where and when it landed in the log.

    ``id`` is unique but *not* an ordering you can page by while writers are active; catch-up
    readers order by ``(transaction_id, id)`` (see :mod:`sa_patterns.eventsourcing.runner`).
    """

    id: int
    aggregate_id: Any
    version: int
    event_type: str
    schema_version: int
    data: E
    metadata: Mapping[str, Any]
    recorded_at: dt.datetime | None
    transaction_id: int
    tenant_id: Any = None


@dataclass(frozen=True)
class _Entry:
    cls: type[Any]
    name: str
    version: int


def _is_pydantic(cls: type[Any]) -> bool:
    return hasattr(cls, "model_validate") and hasattr(cls, "model_dump")


def _to_json(value: Any) -> Any:
    """Plain JSON values; the types jsonb cannot hold go as strings and come back by annotation."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return _to_json(value.value)
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_to_json(v) for v in value]
    raise ConfigurationError(
        f"cannot store a {type(value).__name__} in an event: use JSON values, str, int, float, "
        "bool, Decimal, UUID, datetime/date/time, Enum, nested dataclasses, lists or dicts."
    )


def _from_json(value: Any, hint: Any) -> Any:
    """Rebuild ``value`` as the annotated type (the inverse of :func:`_to_json`)."""
    if value is None or hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            if arm is type(None):
                continue
            try:
                return _from_json(value, arm)
            except (TypeError, ValueError, decimal.InvalidOperation):
                continue
        return value
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        return origin(_from_json(v, inner) for v in value)
    if origin is dict:
        args = typing.get_args(hint)
        inner = args[1] if len(args) == 2 else Any
        return {k: _from_json(v, inner) for k, v in value.items()}
    if not isinstance(hint, type):
        return value
    if dataclasses.is_dataclass(hint):
        return _build_dataclass(hint, value)
    if issubclass(hint, enum.Enum):
        return hint(value)
    if hint is decimal.Decimal:
        return decimal.Decimal(value)
    if hint is uuid.UUID:
        return uuid.UUID(value)
    if hint is dt.datetime:
        return dt.datetime.fromisoformat(value)
    if hint is dt.date:
        return dt.date.fromisoformat(value)
    if hint is dt.time:
        return dt.time.fromisoformat(value)
    return value


_HINTS: weakref.WeakKeyDictionary[type[Any], dict[str, Any]] = weakref.WeakKeyDictionary()


def _hints(cls: type[Any]) -> dict[str, Any]:
    """Resolved annotations of a class, cached: decoding 10,000 events must not re-resolve."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


_PLAIN = (str, int, float, bool)
_FIELDS: weakref.WeakKeyDictionary[type[Any], tuple[frozenset[str], dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def _field_plan(cls: type[Any]) -> tuple[frozenset[str], dict[str, Any]]:
    """Init fields of a dataclass and, for those needing conversion, their annotation.

    Fields annotated with JSON-native types need no work on read; computing that once per
    class keeps replaying a long stream cheap.
    """
    plan = _FIELDS.get(cls)
    if plan is None:
        hints = _hints(cls)
        names = frozenset(f.name for f in dataclasses.fields(cls) if f.init)
        convert = {
            n: hints.get(n, Any)
            for n in names
            if hints.get(n, Any) is not Any and hints.get(n, Any) not in _PLAIN
        }
        plan = _FIELDS[cls] = (names, convert)
    return plan


def _build_dataclass(cls: type[T], data: Mapping[str, Any]) -> T:
    names, convert = _field_plan(cls)
    unknown = data.keys() - names
    if unknown:
        raise ConfigurationError(
            f"stored event data has fields {sorted(unknown)} that {cls.__name__} does not "
            "declare: register an upcaster that renames or drops them."
        )
    if not convert:
        return cls(**data)
    return cls(**{k: (_from_json(v, convert[k]) if k in convert else v) for k, v in data.items()})


class EventRegistry:
    """Maps event classes to stored names and schema versions, and holds the upcasters.

    Explicit and per application (no module-global registry)::

        events = EventRegistry()

        @events.register("account.deposited", version=2)
        @dataclass(frozen=True)
        class Deposited:
            amount_cents: int
            currency: str = "EUR"

        @events.upcaster("account.deposited", from_version=1)
        def _v1_to_v2(data):
            return {"amount_cents": data.pop("amount") * 100, **data}
    """

    def __init__(self) -> None:
        self._by_name: dict[str, _Entry] = {}
        self._by_class: dict[type[Any], _Entry] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(
        self, name: str | None = None, *, version: int = 1
    ) -> Callable[[type[T]], type[T]]:
        """Class decorator: store instances of the class as ``name`` at schema ``version``."""

        def decorate(cls: type[T]) -> type[T]:
            self.add(cls, name, version=version)
            return cls

        return decorate

    def add(self, cls: type[Any], name: str | None = None, *, version: int = 1) -> None:
        """Register ``cls`` (the non-decorator form of :meth:`register`)."""
        if not (dataclasses.is_dataclass(cls) or _is_pydantic(cls)):
            raise ConfigurationError(
                f"{cls.__name__} cannot be an event: decorate it with @dataclass (or make it a "
                "pydantic BaseModel) so its fields can be stored as JSON and read back."
            )
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ConfigurationError(f"event schema version must be an int >= 1, got {version!r}")
        event_name = name or cls.__name__
        taken = self._by_name.get(event_name)
        if taken is not None and taken.cls is not cls:
            raise ConfigurationError(
                f"event name {event_name!r} is already used by {taken.cls.__qualname__}; stored "
                "names must be unique. Pass another name to register()."
            )
        entry = _Entry(cls, event_name, version)
        self._by_name[event_name] = entry
        self._by_class[cls] = entry

    def upcaster(self, name: str, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: ``fn(data) -> data`` upgrading stored ``name`` events from ``from_version``."""

        def decorate(fn: Upcaster) -> Upcaster:
            key = (name, from_version)
            if key in self._upcasters:
                raise ConfigurationError(
                    f"an upcaster for {name!r} version {from_version} is already registered."
                )
            self._upcasters[key] = fn
            return fn

        return decorate

    # -- used by the store ---------------------------------------------------------------
    def entry_for(self, event: object) -> _Entry:
        entry = self._by_class.get(type(event))
        if entry is None:
            raise ConfigurationError(
                f"{type(event).__qualname__} is not a registered event: decorate it with "
                "@registry.register() (or call registry.add(cls)) before appending it."
            )
        return entry

    def name_of(self, cls: type[Any]) -> str:
        entry = self._by_class.get(cls)
        if entry is None:
            raise ConfigurationError(f"{cls.__qualname__} is not a registered event.")
        return entry.name

    def knows(self, name: str) -> bool:
        return name in self._by_name

    def serialise(self, event: object) -> tuple[str, int, dict[str, Any]]:
        """``(event_type, schema_version, json_data)`` for one event instance."""
        entry = self.entry_for(event)
        if _is_pydantic(entry.cls):
            data: dict[str, Any] = event.model_dump(mode="json")  # type: ignore[attr-defined]
        else:
            data = _to_json(event)
        return entry.name, entry.version, data

    def deserialise(self, name: str, version: int, data: Mapping[str, Any]) -> Any:
        """The current event class instance for a stored row, upcasting old versions first."""
        entry = self._by_name.get(name)
        if entry is None:
            raise ConfigurationError(
                f"stored event type {name!r} is not registered in this EventRegistry: register "
                "its class (or an upcaster chain to a registered one) before reading the stream."
            )
        payload = data
        while version < entry.version:
            step = self._upcasters.get((name, version))
            if step is None:
                raise ConfigurationError(
                    f"event {name!r} is stored at schema version {version} but the class is at "
                    f"version {entry.version} and no upcaster from version {version} is "
                    f"registered: add @registry.upcaster({name!r}, from_version={version})."
                )
            payload = step(dict(payload))
            version += 1
        if version > entry.version:
            raise ConfigurationError(
                f"event {name!r} is stored at schema version {version}, newer than the "
                f"registered class ({entry.version}): this code is older than the data."
            )
        if _is_pydantic(entry.cls):
            return entry.cls.model_validate(payload)
        return _build_dataclass(entry.cls, payload)
