"""Column types that encrypt in Python before a value reaches PostgreSQL.

Each type stores an envelope (:mod:`.sealer`, the one owner of the format) in ``bytea``. The
associated data binds the value to ``table.column``; the type learns both names when its column
is attached to a table, so a type instance belongs to one column (the ORM copies it for mixin
columns). A type holds no key: its :class:`~.keyring.KeySource` resolves the keyring, and the
sealer built from it seals and opens.

``repr()`` is a constructor call without the keyring, because Alembic writes ``repr(type)`` into
migrations: a migration creates a ``bytea`` column and never needs, or sees, a key.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography.exceptions import InvalidTag
from sqlalchemy import Column, LargeBinary, Table, event
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement, ColumnElement, operators
from sqlalchemy.types import TypeDecorator

from ..errors import ConfigurationError, DecryptionError, KeyNotFound
from . import blind_index as _bidx
from .keyring import DEFAULT_ENV as DEFAULT_ENV
from .keyring import Keyring, KeyringProvider, KeySource
from .sealer import EnvelopeError, Sealer, Unauthentic, UnknownKey, binding
from .serializers import BUILTIN, Serializer, resolve_serializer

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["EncryptedBytes", "EncryptedJSON", "EncryptedString", "EncryptedType", "EncryptedValue"]

_T = TypeVar("_T")
_BLIND_OPS = {operators.eq, operators.ne, operators.in_op, operators.not_in_op}
_NO_PLACE = binding("?", "?")


class EncryptedType(TypeDecorator[_T]):
    """Base of the encrypted column types: AES-256-GCM envelopes in ``bytea``.

    ``keyring`` is a :class:`Keyring`, a zero-argument callable returning one (called once, at
    first use, so models import before keys are loaded), or a callable taking a
    :class:`KeyContext` (called per value: per-tenant keyrings). ``None`` reads
    ``Keyring.from_env("SA_PATTERNS_KEYS")`` at first use.

    ``blind_index=True`` adds a companion ``<column>_bidx`` bytea column (indexed) holding
    HMAC-SHA256 of the value under the keyring's separate index key, so ``Model.col == value``
    and ``.in_()`` work without decrypting; ``normalize`` (``"strip"``, ``"lower"``,
    ``"casefold"``, ``"nfkc"``, ``"collapse_spaces"``, a sequence of them, or a callable) is
    applied to the indexed form only, never to the stored value.

    ``bind_to="table.column"`` pins the associated data to a place, so values stay readable
    after the table or column is renamed (the binding defaults to the current names).

    The type holds no key: a :class:`~.keyring.KeySource` (the provider) and the place it
    encrypts for; the :class:`~.sealer.Sealer` it gets from them owns the envelope format.
    """

    impl = LargeBinary
    cache_ok = True
    #: recognised by :mod:`.blind_index` and the start-up check without importing this module
    __sa_encrypted__ = True

    def __init__(
        self,
        keyring: KeyringProvider | None = None,
        *,
        blind_index: bool = False,
        normalize: str | Sequence[str] | Callable[[str], str] | None = None,
        blind_index_name: str | None = None,
        bind_to: str | None = None,
    ) -> None:
        super().__init__()
        self.keyring = keyring
        self.blind_index = blind_index or blind_index_name is not None
        self.normalize = _bidx.normalizer_spec(normalize)
        self.blind_index_name = blind_index_name
        self.bind_to = bind_to
        if bind_to is not None and (bind_to.count(".") != 1 or not all(bind_to.split("."))):
            raise ConfigurationError(
                f"bind_to={bind_to!r} must be 'table.column': the place the values were first "
                "written for (keep it after renaming the table or column)."
            )
        if normalize is not None and not self.blind_index:
            raise ConfigurationError(
                "normalize= only shapes the blind index; add blind_index=True (the stored value "
                "is always the exact value)."
            )
        #: the provider, shared with the copies SQLAlchemy makes of this type (one resolution)
        self._keys = KeySource(keyring)
        self._where: tuple[str, str] | None = None
        #: the associated data's place, and the sealer cell the processors read for it
        self._place = _NO_PLACE
        self._cell: list[Sealer | None] = [None]
        #: the place keyring providers are asked for, when not this column's (a copy's)
        self._key_place: tuple[str, str] | None = None

    def copy_for_copies(self) -> Self:
        """A type for another column holding copies of this column's ciphertexts (a ``Versioned``
        history): the same keyring and value type, bound to this column's place and asking
        providers for its keys, so the copies decrypt as they are. No blind index of its own:
        the companion column is copied alongside."""
        self.where  # noqa: B018  (raises a ConfigurationError when unattached)
        twin = self.copy()
        twin.bind_to = self.bind_to or self.where
        twin.blind_index, twin.blind_index_name = False, None
        twin._key_place = self._key_place or self._where
        twin._where = None
        twin._set_place()
        return twin

    # -- what the value is -------------------------------------------------------------
    def _dumps(self, value: Any) -> bytes:
        raise NotImplementedError

    def _loads(self, raw: bytes) -> _T:
        raise NotImplementedError

    def _repr_args(self) -> str:
        return ""

    def __repr__(self) -> str:
        # The migration source: no keyring, no blind-index options (the companion column and its
        # index are rendered by Alembic as ordinary columns; see docs/encryption.md).
        return f"{type(self).__name__}({self._repr_args()})"

    # -- where it lives ----------------------------------------------------------------
    def _set_parent(self, parent: Any, outer: bool = False, **kw: Any) -> None:
        super()._set_parent(parent, outer=outer, **kw)
        if isinstance(parent, Column):
            table = getattr(parent, "table", None)
            if isinstance(table, Table):
                self._attach(parent, table)
            else:
                event.listen(parent, "after_parent_attach", self._attach)

    def _attach(self, column: Column[Any], table: Any) -> None:
        if not isinstance(table, Table):
            return
        if self._where is not None and self._where != (table.name, column.name):
            raise ConfigurationError(
                f"one {type(self).__name__} instance is used by {'.'.join(self._where)} and "
                f"{table.name}.{column.name}: give each column its own instance (the type binds "
                "its ciphertexts to its column)."
            )
        self._where = (table.name, column.name)
        self._set_place()
        if self.blind_index:
            # Add the companion once the Table is complete, so a migration that lists
            # ``<column>_bidx`` itself (as autogenerate writes it) is not given a second one.
            event.listen(
                table,
                "after_parent_attach",
                lambda table, _metadata: _bidx.add_companion(table, column, self),
                once=True,
            )

    def _set_place(self) -> None:
        place = self.bind_to.split(".") if self.bind_to else self._where
        self._place = binding(*place) if place else _NO_PLACE
        self._cell = self._keys.cell(self._place)

    @property
    def where(self) -> str:
        """``table.column`` this type encrypts for (used in every error message)."""
        if self._where is None:
            raise ConfigurationError(
                f"{type(self).__name__} is not attached to a table column: it binds each value "
                "to table and column, so use it as a column type (mapped_column(...))."
            )
        return f"{self._where[0]}.{self._where[1]}"

    # -- keys ----------------------------------------------------------------------------
    def resolve_keyring(self) -> Keyring:
        """The keyring for the current context; :class:`ConfigurationError` if there is none."""
        where = self._key_place or self._where or ("?", "?")
        return self._keys.keyring(*where)

    def reset_keyring(self) -> None:
        """Forget a deferred provider's keyring so the next value calls the provider again."""
        self._keys.reset()

    def _sealer(self, ring: Keyring | None = None) -> Sealer:
        if ring is not None:  # rotation and tests pass the keyring explicitly
            cached = self._cell[0]
            if cached is not None and cached.ring is ring:
                return cached
            if self._keys.resolved is ring:
                return self._cached_sealer()
            return Sealer(ring, self._place)
        self.where  # noqa: B018  (raises a ConfigurationError when unattached)
        where = self._key_place or self._where or ("?", "?")
        return self._keys.sealer(self._place, *where)

    def _cached_sealer(self) -> Sealer:
        """The hot path's sealer: cached unless keyrings are per context."""
        cell = self._cell
        sealer = cell[0]
        if sealer is None:
            sealer = self._sealer()
        return sealer

    def check(self) -> None:
        """Resolve the keyring now (start-up), so a missing or bad key fails before any row."""
        if self._keys.per_context:
            return  # per-tenant keyrings exist only inside a tenant's context
        ring = self.resolve_keyring()
        if self.blind_index and ring.active_index is None:
            ring.mac(b"")  # raises the ConfigurationError that explains index keys

    # -- sealing -----------------------------------------------------------------------
    def seal(self, plaintext: bytes, ring: Keyring | None = None) -> bytes:
        """Encrypt serialized bytes with the active key (rotation calls this directly)."""
        return self._sealer(ring).seal(plaintext)

    def _names(self) -> dict[str, Any]:
        """``table=``/``column=`` for the errors that name this column."""
        return {"table": self._where[0] if self._where else None,
                "column": self._where[1] if self._where else None}

    def open(self, value: bytes, ring: Keyring | None = None) -> bytes:
        """Authenticate and decrypt a stored envelope to serialized bytes."""
        try:
            sealer = self._sealer(ring)
            return sealer.open(value)
        except UnknownKey as exc:
            held = sorted(sealer.ring.key_ids)
            raise KeyNotFound(
                f"{self.where} holds a value sealed with key id {exc.key_id!r}, which the keyring "
                f"does not hold ({held}). Put the retired key back into the keyring (read-only), "
                "then run sa-patterns rotate-keys.",
                key_id=exc.key_id,
                **self._names(),
            ) from None
        except Unauthentic as exc:
            raise DecryptionError(
                f"{self.where}: {exc}. The value is refused rather than returned as garbage.",
                **self._names(),
            ) from None
        except EnvelopeError as exc:
            raise DecryptionError(
                f"{self.where} holds a value that is not a sa_patterns envelope ({exc}). Was it "
                "written by other code, or truncated?",
                **self._names(),
            ) from None

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        return self.seal(self._dumps(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> _T | None:
        # The checked path: every refusal names the column. SQLAlchemy calls the hoisted
        # processor below, which comes here only when its quick attempt fails.
        if value is None:
            return None
        if value.__class__ is str:
            return self._adopting(value)
        if value.__class__ is not bytes:
            value = bytes(value)
        raw = self.open(value)
        try:
            return self._loads(raw)
        except (ValueError, TypeError) as exc:
            raise DecryptionError(
                f"{self.where}: the value decrypted but does not parse as "
                f"{type(self).__name__} ({exc}); was the column's type changed?",
                **self._names(),
            ) from None

    # -- a text column being encrypted in place (op.encrypt_column) ----------------------
    def opened_text(self, value: str) -> _T | None:
        """The value of an envelope written through a text column as ``\\x``-hex (the new
        application's writes before the column becomes bytea), authenticated; None when
        ``value`` is no such envelope (plaintext the old application wrote)."""
        if not value.startswith("\\x01"):
            return None
        try:
            raw = self.open(bytes.fromhex(value[2:]))
        except (ValueError, DecryptionError, KeyNotFound):
            return None
        return self._loads(raw)

    def _adopting(self, value: str) -> _T:
        """A ``str`` result comes only from a text column: one ``op.encrypt_column`` has not
        swapped yet. Its value is an envelope the new application wrote, or still plaintext.
        Once the column is bytea no ``str`` arrives, and its CHECK refuses plaintext."""
        opened = self.opened_text(value)
        if opened is not None:
            return opened
        try:
            return self._loads(value.encode("utf-8"))
        except (ValueError, TypeError) as exc:
            raise DecryptionError(
                f"{self.where}: a text value that is not {type(self).__name__} plaintext ({exc}).",
                **self._names(),
            ) from None

    # The processors SQLAlchemy calls per value: the same logic as process_bind_param /
    # process_result_value, with the sealer's pieces inlined into the closure (measured in
    # bench/). A per-context keyring has no cached sealer: the cell stays empty.
    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        impl = self.impl_instance.bind_processor(dialect)
        cell, fast_dumps, dumps, urandom, sealer_of = (
            self._cell, self._fast_dumps(), self._dumps, os.urandom, self._cached_sealer
        )

        def process(value: Any) -> Any:
            if value is None:
                return None
            try:
                data = fast_dumps(value)
            except (TypeError, AttributeError):
                data = dumps(value)  # raises the error that names the column
            prefix, aead, aad = (cell[0] or sealer_of()).sealing
            nonce = urandom(12)
            sealed = prefix + nonce + aead.encrypt(nonce, data, aad)
            return impl(sealed) if impl is not None else sealed

        return process

    def _fast_dumps(self) -> Callable[[Any], bytes]:
        return self._dumps

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        if self.impl_instance.result_processor(dialect, coltype) is not None:
            return super().result_processor(dialect, coltype)
        cell, loads, sealer_of, checked = (
            self._cell, self._fast_loads(), self._cached_sealer, self.process_result_value
        )

        def process(value: Any) -> Any:
            if value is None:
                return None
            try:
                sealer = cell[0] or sealer_of()
                prefix, start, aead, aad = sealer.active
                if value[:start] == prefix:  # sealed by the active key: the usual case
                    return loads(aead.decrypt(value[start : start + 12], value[start + 12 :], aad))
                aead, aad, start = sealer.openers[value[2 : 2 + value[1]]]
                if value[0] == 1:
                    return loads(aead.decrypt(value[start : start + 12], value[start + 12 :], aad))
            except (KeyError, IndexError, InvalidTag, ValueError, TypeError):
                pass  # the checked path says precisely what is wrong
            return checked(value, dialect)

        return process

    def _fast_loads(self) -> Callable[[bytes], Any]:
        return self._loads

    def compare_values(self, x: Any, y: Any) -> bool:
        return bool(x == y)  # compare plaintexts: ciphertexts differ on every write

    # -- blind index ---------------------------------------------------------------------
    def index_bytes(self, value: Any) -> bytes:
        """The bytes a blind index hashes: the normalized, serialized value."""
        return self._dumps(_bidx.apply_normalize(self.normalize, value))

    def blind_index_values(self, value: Any) -> list[bytes]:
        """The blind index of ``value`` under every index key of the keyring."""
        return self.resolve_keyring().macs(self.index_bytes(value))

    def blind_index_value(self, value: Any) -> bytes | None:
        """What the companion column should hold for ``value`` (active index key)."""
        if value is None:
            return None
        return self.resolve_keyring().mac(self.index_bytes(value))

    class comparator_factory(TypeDecorator.Comparator[Any]):
        """``==``, ``!=``, ``in_()`` and ``not_in()`` go through the blind index."""

        def operate(self, op: Any, *other: Any, **kwargs: Any) -> ColumnElement[Any]:
            type_ = self.type
            if (
                op in _BLIND_OPS
                and isinstance(type_, EncryptedType)
                and other
                and other[0] is not None
                and not isinstance(other[0], ClauseElement)
            ):
                return _bidx.compare(type_, self.expr, op, other[0])
            return super().operate(op, *other, **kwargs)


class EncryptedString(EncryptedType[str]):
    """A ``str`` stored encrypted (UTF-8)."""

    cache_ok = True

    def _dumps(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise TypeError(f"{self.where} is an EncryptedString: expected str, got {type(value).__name__}")
        return value.encode("utf-8")

    def _loads(self, raw: bytes) -> str:
        return raw.decode("utf-8")

    def _fast_loads(self) -> Callable[[bytes], Any]:
        return bytes.decode  # UTF-8, strict: a C call instead of a Python frame

    def _fast_dumps(self) -> Callable[[Any], bytes]:
        return str.encode  # a non-str raises TypeError, then _dumps explains it

    @property
    def python_type(self) -> type[str]:
        return str


class EncryptedBytes(EncryptedType[bytes]):
    """``bytes`` stored encrypted."""

    cache_ok = True

    def _dumps(self, value: Any) -> bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{self.where} is an EncryptedBytes: expected bytes, got {type(value).__name__}")
        return bytes(value)

    def _loads(self, raw: bytes) -> bytes:
        return raw

    @property
    def python_type(self) -> type[bytes]:
        return bytes


class EncryptedValue(EncryptedType[Any]):
    """Any value with an explicit serializer: ``EncryptedValue("date")``, ``("decimal")``, ...

    ``serializer`` is a built-in name (``date``, ``datetime``, ``time``, ``decimal``, ``uuid``,
    ``int``, ``float``, ``bool``, ``json``) or a :class:`Serializer` whose ``ref`` names it as
    ``"package.module:NAME"`` (so a migration can name it without importing it).
    """

    cache_ok = True

    def __init__(
        self,
        serializer: str | Serializer,
        keyring: KeyringProvider | None = None,
        *,
        blind_index: bool = False,
        normalize: str | Sequence[str] | Callable[[str], str] | None = None,
        blind_index_name: str | None = None,
        bind_to: str | None = None,
    ) -> None:
        if isinstance(serializer, Serializer) and serializer.ref not in BUILTIN and ":" not in serializer.ref:
            raise ConfigurationError(
                f"Serializer(ref={serializer.ref!r}): a custom serializer's ref must be "
                "'package.module:NAME' naming it, so migrations can refer to it."
            )
        self.serializer = serializer
        self._serializer: Serializer | None = serializer if isinstance(serializer, Serializer) else None
        if self._serializer is None and serializer in BUILTIN:
            self._serializer = BUILTIN[serializer]
        super().__init__(
            keyring,
            blind_index=blind_index,
            normalize=normalize,
            blind_index_name=blind_index_name,
            bind_to=bind_to,
        )

    def _codec(self) -> Serializer:
        if self._serializer is None:
            self._serializer = resolve_serializer(self.serializer)
        return self._serializer

    def _dumps(self, value: Any) -> bytes:
        return self._codec().dumps(value)

    def _loads(self, raw: bytes) -> Any:
        return self._codec().loads(raw)

    def _repr_args(self) -> str:
        ref = self.serializer.ref if isinstance(self.serializer, Serializer) else self.serializer
        return repr(ref)

    @property
    def python_type(self) -> type:
        return self._codec().python_type


class EncryptedJSON(EncryptedValue):
    """Any JSON value (dict, list, str, int, float, bool) stored encrypted; ``None`` is NULL."""

    cache_ok = True

    def __init__(
        self,
        keyring: KeyringProvider | None = None,
        *,
        blind_index: bool = False,
        blind_index_name: str | None = None,
        bind_to: str | None = None,
    ) -> None:
        super().__init__(
            "json",
            keyring,
            blind_index=blind_index,
            blind_index_name=blind_index_name,
            bind_to=bind_to,
        )

    def _repr_args(self) -> str:
        return ""


# Autogenerate renders a type as ``<module>.<repr>``: name the public module, not this file.
for _cls in (EncryptedType, EncryptedString, EncryptedBytes, EncryptedValue, EncryptedJSON):
    _cls.__module__ = "sa_patterns"
