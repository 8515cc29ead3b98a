"""How non-string Python values become bytes before encryption, and back.

Built-in serializers are named (``"date"``, ``"decimal"``, ...) so a column type's ``repr`` can
name them in a migration. A custom one is a :class:`Serializer` with a ``ref`` of the form
``"package.module:NAME"`` pointing at itself, which a migration renders as a string and imports
only when a value is actually encrypted (never while migrating).
"""

from __future__ import annotations

import datetime as dt
import decimal
import importlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError

__all__ = ["BUILTIN", "Serializer", "resolve_serializer"]


@dataclass(frozen=True)
class Serializer:
    """``dumps(value) -> bytes`` and ``loads(bytes) -> value`` for one Python type.

    ``ref`` is how a migration names it: a built-in name or ``"package.module:ATTRIBUTE"``.
    ``dumps`` must be deterministic if the column has a blind index (equal values must give
    equal bytes).
    """

    ref: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]
    python_type: type = object


def _text(to: Callable[[str], Any], python_type: type) -> Callable[[bytes], Any]:
    return lambda raw: to(raw.decode("utf-8"))


def _iso(value: Any) -> bytes:
    return bytes(value.isoformat(), "ascii")


def _decimal(value: Any) -> bytes:
    if not isinstance(value, decimal.Decimal):
        value = decimal.Decimal(str(value))
    return str(value).encode("ascii")


def _bool_loads(raw: bytes) -> bool:
    if raw not in (b"0", b"1"):
        raise ValueError("not a serialized bool")
    return raw == b"1"


BUILTIN: dict[str, Serializer] = {
    "date": Serializer("date", _iso, _text(dt.date.fromisoformat, dt.date), dt.date),
    "datetime": Serializer(
        "datetime", _iso, _text(dt.datetime.fromisoformat, dt.datetime), dt.datetime
    ),
    "time": Serializer("time", _iso, _text(dt.time.fromisoformat, dt.time), dt.time),
    "decimal": Serializer("decimal", _decimal, _text(decimal.Decimal, decimal.Decimal), decimal.Decimal),
    "uuid": Serializer("uuid", lambda v: uuid.UUID(str(v)).bytes, lambda b: uuid.UUID(bytes=b), uuid.UUID),
    "int": Serializer("int", lambda v: str(int(v)).encode("ascii"), lambda b: int(b), int),
    "float": Serializer("float", lambda v: repr(float(v)).encode("ascii"), lambda b: float(b), float),
    "bool": Serializer("bool", lambda v: b"1" if v else b"0", _bool_loads, bool),
    "json": Serializer(
        "json",
        # sorted keys: equal objects give equal bytes, which a blind index needs
        lambda v: json.dumps(v, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode(),
        lambda b: json.loads(b),
        object,
    ),
}


def resolve_serializer(spec: str | Serializer) -> Serializer:
    """A :class:`Serializer` from a built-in name, a ``"module:attr"`` reference or itself."""
    if isinstance(spec, Serializer):
        return spec
    if spec in BUILTIN:
        return BUILTIN[spec]
    module_name, sep, attr = spec.partition(":")
    if not sep:
        raise ConfigurationError(
            f"unknown serializer {spec!r}: use one of {sorted(BUILTIN)} or 'package.module:NAME' "
            "naming a sa_patterns.encryption.Serializer."
        )
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"serializer {spec!r} cannot be imported: {exc}") from None
    if not isinstance(found, Serializer):
        raise ConfigurationError(f"serializer {spec!r} is a {type(found).__name__}, not a Serializer.")
    return found
