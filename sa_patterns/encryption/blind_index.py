"""Blind indexes: equality search over encrypted columns without decrypting.

Next to an encrypted column ``email`` sits ``email_bidx`` (``bytea``, b-tree indexed) holding
``key_id:HMAC-SHA256(index_key, normalize(value))``. The index key is separate from the
encryption keys, so the hash column reveals only which rows share a value, never the value. A
lookup hashes the searched value under every index key of the keyring (one while no HMAC
rotation is running) and compares hashes: ``Model.email == "x"`` becomes
``email_bidx IN (:h1, ...)``.

The companion column is filled by the ORM flush and ORM bulk UPDATE by primary key (listeners
that :func:`sa_patterns.install` attaches), by any ``INSERT`` that carries the plaintext (a
column default), and by :func:`sa_patterns.encryption.rotation.rotate_keys` for rebuilds. A
Core ``UPDATE`` (or ``update(Model).values(...)``) of the plaintext must set it itself with
:func:`blind_index_value`.
"""

from __future__ import annotations

import unicodedata
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, LargeBinary, Table, inspect
from sqlalchemy.engine import Result
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, UOWTransaction
from sqlalchemy.sql import ColumnElement, false, operators, true

from .._compat import add_parameters
from ..errors import ConfigurationError
from ..pattern import Pattern
from ..schema import ident

if TYPE_CHECKING:
    from .types import EncryptedType

__all__ = ["NORMALIZERS", "PATTERN", "blind_eq", "blind_index_value"]

#: Named normalisations (applied in the order given) for ``normalize=``.
NORMALIZERS: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "lower": str.lower,
    "casefold": str.casefold,
    "nfkc": lambda s: unicodedata.normalize("NFKC", s),
    "collapse_spaces": lambda s: " ".join(s.split()),
}
INFO_KEY = "sa_patterns.blind_index_of"

def normalizer_spec(
    normalize: str | Sequence[str] | Callable[[str], str] | None,
) -> tuple[str, ...] | Callable[[str], str] | None:
    """Validate ``normalize=`` at class definition; a hashable form for the type's cache key."""
    if normalize is None or callable(normalize):
        return normalize
    names = (normalize,) if isinstance(normalize, str) else tuple(normalize)
    unknown = [n for n in names if n not in NORMALIZERS]
    if unknown:
        raise ConfigurationError(
            f"unknown normalize step(s) {unknown}: use {sorted(NORMALIZERS)} or a callable."
        )
    return names


def apply_normalize(spec: tuple[str, ...] | Callable[[str], str] | None, value: Any) -> Any:
    if spec is None or not isinstance(value, str):
        return value
    if callable(spec):
        return spec(value)
    for name in spec:
        value = NORMALIZERS[name](value)
    return value


def add_companion(table: Table, column: Column[Any], type_: EncryptedType[Any]) -> None:
    """Add ``<column>_bidx`` and its index to ``table`` unless the model declares it (through
    :func:`~sa_patterns.schema.ident`: a long column name is cut with a hash, never refused)."""
    name = type_.blind_index_name or ident(column.name, "bidx")
    type_.blind_index_name = name
    if name in table.c:
        companion = table.c[name]
        if not isinstance(companion.type, LargeBinary):
            raise ConfigurationError(
                f"{table.name}.{name} is the blind index of {column.name} and must be bytea "
                f"(LargeBinary), not {companion.type!r}."
            )
        companion.info[INFO_KEY] = column.name
        return

    def insert_default(context: DefaultExecutionContext) -> bytes | None:
        # Core INSERTs carry the plaintext: hash it (the ORM flush has set it already).
        params = context.get_current_parameters()  # type: ignore[no-untyped-call]
        return type_.blind_index_value(params.get(column.key))

    companion = Column(
        name,
        LargeBinary(),
        nullable=True,
        default=insert_default,
        index=True,
        info={INFO_KEY: column.name},
    )
    table.append_column(companion)


def _companion(type_: EncryptedType[Any], expr: ColumnElement[Any]) -> ColumnElement[Any]:
    table = getattr(expr, "table", None)
    name = type_.blind_index_name
    if not type_.blind_index or name is None:
        raise ConfigurationError(
            f"{type_.where} is encrypted without a blind index, so equality cannot be "
            "evaluated (every ciphertext differs, even for equal values). Declare the column "
            "with blind_index=True (and index keys in the keyring), or load and compare in Python."
        )
    if table is None or name not in table.c:
        raise ConfigurationError(
            f"the blind index column {name!r} of {type_.where} is missing. It is added when the "
            "Table is built: declare blind-indexed columns in the class body or Table(...) "
            f"call, or declare {name} (LargeBinary, index=True) yourself."
        )
    companion: ColumnElement[Any] = table.c[name]
    return companion


def compare(
    type_: EncryptedType[Any], expr: ColumnElement[Any], op: Any, value: Any
) -> ColumnElement[Any]:
    """The blind-index form of ``expr <op> value`` (eq, ne, in_, not_in)."""
    companion = _companion(type_, expr)
    if op in (operators.in_op, operators.not_in_op):
        hashes = [h for v in value if v is not None for h in type_.blind_index_values(v)]
        if not hashes:
            return false() if op is operators.in_op else true()
    else:
        hashes = type_.blind_index_values(value)
    clause = companion.in_(hashes) if len(hashes) > 1 else companion == hashes[0]
    if op in (operators.ne, operators.not_in_op):
        return ~clause
    return clause


def blind_eq(attribute: Any, value: Any) -> ColumnElement[Any]:
    """``blind_eq(Customer.email, "x")``: the explicit spelling of ``Customer.email == "x"``."""
    expr = attribute.__clause_element__() if hasattr(attribute, "__clause_element__") else attribute
    type_ = expr.type
    from .types import EncryptedType

    if not isinstance(type_, EncryptedType):
        raise ConfigurationError(f"blind_eq() needs an encrypted column, got {expr} ({type_!r}).")
    return compare(type_, expr, operators.eq, value)


def blind_index_value(attribute: Any, value: Any) -> bytes | None:
    """What the companion column holds for ``value`` (for Core UPDATEs of the plaintext)."""
    expr = attribute.__clause_element__() if hasattr(attribute, "__clause_element__") else attribute
    from .types import EncryptedType

    if not isinstance(expr.type, EncryptedType) or not expr.type.blind_index:
        raise ConfigurationError(f"{expr} has no blind index.")
    return expr.type.blind_index_value(value)


_Plan = tuple[list[tuple[str, str, "EncryptedType[Any]"]], list["EncryptedType[Any]"]]
_plans: weakref.WeakKeyDictionary[Mapper[Any], _Plan] = weakref.WeakKeyDictionary()


def _plan(mapper: Mapper[Any]) -> _Plan:
    """Per mapper: (attribute, companion attribute, type) for each blind-indexed column, and
    every encrypted column type (whose keyring the flush resolves first)."""
    plan = _plans.get(mapper)
    if plan is None:
        from .types import EncryptedType

        indexed: list[tuple[str, str, EncryptedType[Any]]] = []
        encrypted: list[EncryptedType[Any]] = []
        for prop in mapper.column_attrs:
            col = prop.columns[0]
            type_ = col.type
            if isinstance(type_, EncryptedType) and isinstance(col, Column):
                encrypted.append(type_)
                if type_.blind_index:
                    companion = _companion(type_, col)
                    indexed.append((prop.key, mapper.get_property_by_column(companion).key, type_))
        plan = _plans[mapper] = (indexed, encrypted)
    return plan


_class_plans: weakref.WeakKeyDictionary[type, _Plan] = weakref.WeakKeyDictionary()


def _class_plan(cls: type) -> _Plan:
    # One dict lookup per flushed object: objects of models without encrypted columns (most
    # of them) skip the inspect() below.
    plan = _class_plans.get(cls)
    if plan is None:
        plan = _class_plans[cls] = _plan(inspect(cls))
    return plan


def _before_flush(session: Session, flush_context: UOWTransaction, instances: object) -> None:
    checked: set[Mapper[Any]] = set()
    for obj in (*session.new, *session.dirty):
        indexed, encrypted = _class_plan(type(obj))
        if not encrypted:
            continue
        state = inspect(obj)
        if state.mapper not in checked:
            # Resolve keyrings before any SQL: a missing key is a ConfigurationError here,
            # not a StatementError wrapped around the first INSERT.
            for type_ in encrypted:
                type_.check()
            checked.add(state.mapper)
        for key, companion_key, type_ in indexed:
            attr = state.attrs[key]
            if obj in session.new or attr.history.has_changes():
                setattr(obj, companion_key, type_.blind_index_value(attr.value))


def _do_orm_execute(state: ORMExecuteState) -> Result[Any] | None:
    """ORM bulk UPDATE by primary key (``session.execute(update(Model), [{...}, ...])``)
    bypasses the flush: add the companion value to every parameter set that changes a
    blind-indexed attribute."""
    if not state.is_update or not isinstance(state.parameters, list):
        return None
    mapper = state.bind_mapper
    if mapper is None:
        return None
    indexed, _ = _plan(mapper)
    if not indexed or not any(key in p for p in state.parameters for key, _, _ in indexed):
        return None
    rows = []
    for params in state.parameters:
        row = dict(params)
        for key, companion_key, type_ in indexed:
            if key in row and companion_key not in row:
                row[companion_key] = type_.blind_index_value(row[key])
        rows.append(row)
    return add_parameters(state, rows)


#: Composed by :func:`sa_patterns.install`: keep blind indexes current on every ORM flush and
#: ORM bulk UPDATE by primary key.
PATTERN = Pattern(
    "blind_index", listeners=(("before_flush", _before_flush), ("do_orm_execute", _do_orm_execute))
)
