"""Blind indexes: equality search over encrypted columns without decrypting.

Next to an encrypted column ``email`` sits ``email_bidx`` (``bytea``, b-tree indexed) holding
``key_id:HMAC-SHA256(index_key, normalize(value))``. The index key is separate from the
encryption keys, so the hash column reveals only which rows share a value, never the value. A
lookup hashes the searched value under every index key of the keyring (one while no HMAC
rotation is running) and compares hashes: ``Model.email == "x"`` becomes
``email_bidx IN (:h1, ...)``.

The companion column keeps itself current, whatever writes the row: its ``default`` hashes the
plaintext of an ``INSERT``, and its ``onupdate`` hashes the plaintext of an ``UPDATE`` that sets
the column without setting the index (a flush, installed or not, sync or async; ORM bulk UPDATE
by primary key or by criteria; a Core ``update().values()`` or executemany). Only the database
can compute a SQL expression, and it has no index key: an ``UPDATE`` that sets the column from
one (``.values(email=Other.col)``) is refused when compiled, unless it sets the index itself.
``ON CONFLICT DO UPDATE`` has no ``onupdate``: :func:`sa_patterns.insert_many` adds the index to
its ``SET`` list, a hand-written upsert must (``SET email_bidx = excluded.email_bidx``).
"""

from __future__ import annotations

import unicodedata
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sqlalchemy import Column, ColumnDefault, LargeBinary, Table, bindparam, inspect
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapper, Session, UOWTransaction
from sqlalchemy.sql import ColumnElement, false, operators, true
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, Null

from .._compat import attach_default, per_row_update_default, prefetch_update_default, update_values
from ..errors import ConfigurationError
from ..pattern import Pattern
from ..schema import ident

__all__ = ["NORMALIZERS", "PATTERN", "IndexedType", "blind_eq", "blind_index_value", "encrypted_type"]

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


class IndexedType(Protocol):
    """What this module needs of an encrypted column type (:class:`~.types.EncryptedType`),
    named here so that the types depend on blind indexes and not the other way round."""

    blind_index: bool
    blind_index_name: str | None

    @property
    def where(self) -> str: ...

    def blind_index_value(self, value: Any) -> bytes | None: ...

    def blind_index_values(self, value: Any) -> list[bytes]: ...

    def check(self) -> None: ...


def encrypted_type(type_: Any) -> IndexedType | None:
    """``type_`` when it is one of the encrypted column types, else None."""
    return type_ if getattr(type_, "__sa_encrypted__", False) else None


def add_companion(table: Table, column: Column[Any], type_: IndexedType) -> None:
    """Add ``<column>_bidx`` and its index to ``table`` unless the model declares it (through
    :func:`~sa_patterns.schema.ident`: a long column name is cut with a hash, never refused).
    Either way the companion keeps itself current (see the module docstring)."""
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
    else:
        companion = Column(name, LargeBinary(), nullable=True, index=True, info={INFO_KEY: column.name})
        table.append_column(companion)
    if companion.default is None:
        attach_default(_insert_default(column, type_), companion)
    if companion.onupdate is None:
        attach_default(per_row_update_default(_OnUpdate(column, companion, type_)), companion)


def _insert_default(column: Column[Any], type_: IndexedType) -> Any:
    def insert_default(context: DefaultExecutionContext) -> bytes | None:
        # an INSERT carries the plaintext (or leaves it NULL): hash it
        params = context.get_current_parameters()  # type: ignore[no-untyped-call]
        return type_.blind_index_value(params.get(column.key))

    return ColumnDefault(insert_default)


class _OnUpdate(ColumnElement[bytes]):
    """The companion's value in an UPDATE that does not set it: compiled per statement (the
    stored index, or a parameter when the plaintext is set), called per row for the hash."""

    __visit_name__ = "sa_patterns_blind_index_update"
    inherit_cache = False  # a column default, never part of a statement's cache key

    def __init__(self, plain: Column[Any], companion: Column[Any], type_: IndexedType) -> None:
        self.plain, self.companion, self.type_ = plain, companion, type_
        self.type = LargeBinary()

    def __call__(self, context: DefaultExecutionContext) -> bytes | None:
        params = context.get_current_parameters()  # type: ignore[no-untyped-call]
        named = _param_names.get(context.compiled, {}).get(self.companion)
        for key in (named, self.plain.key, f"{self.plain.table.name}_{self.plain.key}"):
            if key in params:
                return self.type_.blind_index_value(params[key])
        raise ConfigurationError(  # fail closed: never a stale index
            f"{self.type_.where} is written without its value among the statement's "
            f"parameters, so its blind index {self.companion.name} cannot be computed. Give "
            f"{self.companion.name} in the same statement (blind_index_value())."
        )


_NOT_SET = object()
#: per compiled UPDATE: companion column -> the parameter holding its plaintext, when the
#: statement names it (``.values(email=bindparam("new_email"))``)
_param_names: weakref.WeakKeyDictionary[Any, dict[Column[Any], str]] = weakref.WeakKeyDictionary()


def _plaintext_in(compiler: SQLCompiler, plain: Column[Any]) -> Any:
    """How the UPDATE being compiled sets ``plain``: its ``.values()`` expression, ``None`` when
    it comes from the execution parameters, :data:`_NOT_SET` when it is not set."""
    names = {plain.key, plain.name}
    for values in update_values(compiler.statement):
        for key, value in values.items():
            if (key if isinstance(key, str) else getattr(key, "key", None)) in names:
                return value
            if getattr(key, "name", None) in names and getattr(key, "table", None) is plain.table:
                return value
    if names.intersection(compiler.column_keys or ()):
        return None
    return _NOT_SET


@compiles(_OnUpdate)
def _compile_on_update(element: _OnUpdate, compiler: SQLCompiler, **kw: Any) -> str:
    source = _plaintext_in(compiler, element.plain)
    if source is _NOT_SET:
        # the plaintext does not change: keep the stored index (``SET x_bidx = x_bidx``)
        return compiler.process(element.companion, **kw)
    if isinstance(source, Null):
        return compiler.process(source, **kw)
    if source is not None and not isinstance(source, BindParameter):
        raise ConfigurationError(
            f"{element.type_.where} is set from a SQL expression here, and its blind index "
            f"{element.companion.name} is an HMAC computed in Python with a key the database "
            f"never sees: it would go stale. Set {element.plain.key} from a Python value, or set "
            f"{element.companion.name} in the same statement "
            "(sa_patterns.encryption.blind_index_value())."
        )
    if isinstance(source, BindParameter) and not source.unique:
        _param_names.setdefault(compiler, {})[element.companion] = source.key
    prefetch_update_default(compiler, element.companion)
    param = bindparam(element.companion.key, type_=element.companion.type, required=False)
    return compiler.process(param, **kw)


def _companion(type_: IndexedType, expr: ColumnElement[Any]) -> ColumnElement[Any]:
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


def compare(type_: IndexedType, expr: ColumnElement[Any], op: Any, value: Any) -> ColumnElement[Any]:
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


def _expression(attribute: Any) -> Any:
    return attribute.__clause_element__() if hasattr(attribute, "__clause_element__") else attribute


def blind_eq(attribute: Any, value: Any) -> ColumnElement[Any]:
    """``blind_eq(Customer.email, "x")``: the explicit spelling of ``Customer.email == "x"``."""
    expr = _expression(attribute)
    type_ = encrypted_type(expr.type)
    if type_ is None:
        raise ConfigurationError(f"blind_eq() needs an encrypted column, got {expr} ({expr.type!r}).")
    return compare(type_, expr, operators.eq, value)


def blind_index_value(attribute: Any, value: Any) -> bytes | None:
    """What the companion column holds for ``value``: for an UPDATE that sets the column from a
    SQL expression, or a hand-written ``ON CONFLICT DO UPDATE``."""
    expr = _expression(attribute)
    type_ = encrypted_type(expr.type)
    if type_ is None or not type_.blind_index:
        raise ConfigurationError(f"{expr} has no blind index.")
    return type_.blind_index_value(value)


_checks: weakref.WeakKeyDictionary[type, list[IndexedType]] = weakref.WeakKeyDictionary()


def _encrypted_of(cls: type) -> list[IndexedType]:
    # One dict lookup per flushed object: objects of models without encrypted columns (most
    # of them) skip the inspect() below.
    found = _checks.get(cls)
    if found is None:
        mapper: Mapper[Any] = inspect(cls)
        found = _checks[cls] = [
            t
            for prop in mapper.column_attrs
            if (t := encrypted_type(prop.columns[0].type)) is not None
            and isinstance(prop.columns[0], Column)
        ]
    return found


def _before_flush(session: Session, flush_context: UOWTransaction, instances: object) -> None:
    """Resolve keyrings before any SQL: a missing key is a ConfigurationError here, not a
    StatementError wrapped around the first INSERT (blind indexes need no hook: see above)."""
    checked: set[type] = set()
    for obj in (*session.new, *session.dirty):
        cls = type(obj)
        if cls in checked:
            continue
        checked.add(cls)
        for type_ in _encrypted_of(cls):
            type_.check()


#: Composed by :func:`sa_patterns.install`: the keyring check before a flush's first statement.
PATTERN = Pattern("blind_index", listeners=(("before_flush", _before_flush),))
