"""Keyrings: several named 256-bit keys, one of them active, loaded from outside the code.

A value is always *written* with the active key and may be *read* with any key of the ring,
which is what makes rotation possible without downtime: add a new key as active, deploy, run
``sa-patterns rotate-keys``, then drop the old key. Blind-index (HMAC) keys are a separate set
in the same ring, so the key that can decrypt is never the key that makes searchable hashes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ConfigurationError, KeyNotFound
from .sealer import header

if TYPE_CHECKING:
    from ..context import TenantId
    from .sealer import Sealer

__all__ = [
    "DEFAULT_ENV",
    "KeyContext",
    "KeySource",
    "Keyring",
    "KeyringProvider",
    "generate_key",
    "resolve_provider",
]

KEY_SIZE = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: Longer ids are named by position in messages: a 32-byte key is 43+ characters of base64.
_SHOWN_ID_MAX = 32
_GENERATE_HINT = (
    "Generate one with: python -c \"import sa_patterns.encryption as e; print(e.generate_key())\""
)


def generate_key() -> str:
    """A fresh random 256-bit key, base64-encoded for an environment variable or a secret store."""
    return base64.b64encode(os.urandom(KEY_SIZE)).decode("ascii")


@dataclass(frozen=True)
class KeyContext:
    """What a per-tenant keyring provider receives: where the value lives and whose it is.

    ``tenant`` is the tenant of :func:`sa_patterns.tenant_scope` when the value is encrypted or
    decrypted (``None`` outside a scope).
    """

    table: str
    column: str
    tenant: TenantId | None


def _showable(key_id: object) -> bool:
    return isinstance(key_id, str) and bool(_KEY_ID.match(key_id)) and len(key_id) <= _SHOWN_ID_MAX


def _shown(key_id: object, position: int) -> str:
    """How a message names a key: its id when that is a short, valid id, else only its position.

    An id that is bytes, long or malformed may be key material passed in the wrong place (id and
    key swapped, a base64 key where the id goes): it is never echoed, nor its repr."""
    if _showable(key_id):
        return repr(key_id)
    kind = type(key_id).__name__
    if isinstance(key_id, str):
        size = f" of {len(key_id)} characters"
    else:
        size = f" of {len(key_id)} bytes" if isinstance(key_id, (bytes, bytearray)) else ""
    return f"number {position + 1} (its id, a {kind}{size}, is not shown: it may be key material)"


def _check_keys(keys: Mapping[str, bytes], what: str) -> dict[str, bytes]:
    checked: dict[str, bytes] = {}
    if not isinstance(keys, Mapping):
        raise ConfigurationError(
            f"{what}s must be a mapping of key id to key bytes, got {type(keys).__name__}."
        )
    for position, (key_id, key) in enumerate(keys.items()):
        if isinstance(key_id, (bytes, bytearray)) and isinstance(key, str):
            raise ConfigurationError(
                f"{what} {_shown(key_id, position)}: the id and the key look swapped (the id is "
                f"bytes, the key is a str). Write {{key_id: key_bytes}}, e.g. {{'k1': key}}."
            )
        if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
            raise ConfigurationError(
                f"{what} {_shown(key_id, position)} has an invalid id: use 1-64 characters from "
                "A-Z a-z 0-9 . _ -"
            )
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_SIZE:
            size = len(key) if isinstance(key, (bytes, bytearray, str)) else type(key).__name__
            raise ConfigurationError(
                f"{what} {_shown(key_id, position)} must be exactly {KEY_SIZE} random bytes "
                f"(AES-256), got {size}. Pass raw bytes (base64 only in environment variables). "
                f"{_GENERATE_HINT}"
            )
        checked[key_id] = bytes(key)
    return checked


def _pick_active(ids: list[str], active: str | None, what: str) -> str | None:
    if active is None:
        return ids[0] if ids else None
    if active not in ids:
        shown = _shown(active, 0) if _showable(active) else "(not shown: it may be key material)"
        raise ConfigurationError(
            f"the active {what} {shown} is not in the keyring (it holds {sorted(ids)})."
        )
    return active


class Keyring:
    """Named 32-byte keys with one active key, plus optional blind-index keys.

    ``Keyring({"k1": key1, "k2": key2}, active="k2")``. Without ``active`` the first key is
    active (as with ``MultiFernet``). ``index_keys`` are the HMAC keys for blind indexes, with
    ``active_index`` chosen the same way. Invalid keys raise :class:`ConfigurationError` here,
    at start-up, never at the first row. ``repr()`` shows key ids only.
    """

    __slots__ = ("_aeads", "_headers", "_index_keys", "active", "active_index")

    def __init__(
        self,
        keys: Mapping[str, bytes],
        active: str | None = None,
        *,
        index_keys: Mapping[str, bytes] | None = None,
        active_index: str | None = None,
    ) -> None:
        checked = _check_keys(keys, "key")
        if not checked:
            raise ConfigurationError(f"a Keyring needs at least one key. {_GENERATE_HINT}")
        self.active: str = _pick_active(list(checked), active, "key") or ""
        self._aeads = {key_id: AESGCM(key) for key_id, key in checked.items()}
        self._headers = {key_id: header(key_id) for key_id in checked}
        self._index_keys = _check_keys(index_keys or {}, "index key")
        self.active_index: str | None = _pick_active(
            list(self._index_keys), active_index, "index key"
        )

    @classmethod
    def from_env(
        cls, name: str = "SA_PATTERNS_KEYS", environ: Mapping[str, str] | None = None
    ) -> Keyring:
        """Load ``NAME="id:base64key,id:base64key"`` (first = active, or ``NAME_ACTIVE``).

        Blind-index keys come from ``NAME_INDEX`` in the same format (``NAME_INDEX_ACTIVE``).
        A missing variable or a malformed key raises :class:`ConfigurationError` naming it.
        """
        env = os.environ if environ is None else environ
        raw = env.get(name, "").strip()
        if not raw:
            raise ConfigurationError(
                f"environment variable {name} is not set: set it to 'key_id:base64key' (comma "
                f"separated, the first is active) before the first encrypted value is used. "
                f"{_GENERATE_HINT}"
            )
        index_raw = env.get(f"{name}_INDEX", "").strip()
        return cls(
            _parse(raw, name),
            env.get(f"{name}_ACTIVE") or None,
            index_keys=_parse(index_raw, f"{name}_INDEX") if index_raw else None,
            active_index=env.get(f"{name}_INDEX_ACTIVE") or None,
        )

    generate_key = staticmethod(generate_key)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._aeads)

    @property
    def index_key_ids(self) -> tuple[str, ...]:
        return tuple(self._index_keys)

    def aead(self, key_id: str) -> AESGCM:
        """The cipher for ``key_id``; :class:`KeyNotFound` when the ring does not hold it."""
        try:
            return self._aeads[key_id]
        except KeyError:
            raise KeyNotFound(
                f"key id {key_id!r} is not in the keyring (it holds {sorted(self._aeads)}). Add "
                "the retired key back to the keyring, or restore the value from a backup.",
                key_id=key_id,
            ) from None

    def header(self, key_id: str) -> bytes:
        return self._headers[key_id]

    def mac(self, data: bytes, key_id: str | None = None) -> bytes:
        """``key_id || ":" || HMAC-SHA256(index key, data)``; the active index key by default."""
        key_id = key_id or self.active_index
        if key_id is None:
            raise ConfigurationError(
                "this keyring has no blind-index keys: a blind_index column needs index_keys= "
                "(or SA_PATTERNS_KEYS_INDEX in the environment), separate from the encryption keys."
            )
        try:
            key = self._index_keys[key_id]
        except KeyError:
            raise KeyNotFound(
                f"index key id {key_id!r} is not in the keyring", key_id=key_id
            ) from None
        return key_id.encode("ascii") + b":" + hmac.new(key, data, hashlib.sha256).digest()

    def macs(self, data: bytes) -> list[bytes]:
        """The blind index of ``data`` under every index key (lookups during an HMAC rotation)."""
        return [self.mac(data, key_id) for key_id in self._index_keys]

    def __repr__(self) -> str:
        extra = f", index_keys={list(self._index_keys)}" if self._index_keys else ""
        return f"Keyring(keys={list(self._aeads)}, active={self.active!r}{extra})"

    def __reduce__(self) -> str:
        raise TypeError("a Keyring holds key material and is not picklable")


def _parse(raw: str, name: str) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for position, entry in enumerate(p.strip() for p in raw.split(",") if p.strip()):
        key_id, sep, encoded = entry.partition(":")
        if not sep:
            raise ConfigurationError(
                f"{name}: entry {position + 1} is not 'key_id:base64key' (no ':' found)."
            )
        try:
            keys[key_id.strip()] = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(
                f"{name}: the key of entry {_shown(key_id.strip(), position)} is not valid "
                f"base64 (entries are 'key_id:base64key'). {_GENERATE_HINT}"
            ) from None
    return keys


KeyringProvider: TypeAlias = "Keyring | Callable[[], Keyring] | Callable[[KeyContext], Keyring]"


def resolve_provider(
    provider: KeyringProvider,
) -> tuple[Keyring | None, Callable[[KeyContext], Keyring] | None]:
    """Split a provider into a fixed keyring or a per-context function.

    A zero-argument callable is *deferred*, not per-call: the caller invokes it once (models
    import before keys are loaded). A one-argument callable is called with a :class:`KeyContext`
    whenever a value is sealed or opened, which is how per-tenant keyrings work.
    """
    if isinstance(provider, Keyring):
        return provider, None
    if not callable(provider):
        raise ConfigurationError(
            f"keyring= takes a Keyring or a callable returning one, got {type(provider).__name__}."
        )
    try:
        params = inspect.signature(provider).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: treat as zero-argument
        return None, None
    required = [
        p
        for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(required) == 1:
        return None, provider  # type: ignore[return-value]
    if required:
        raise ConfigurationError(
            "a keyring provider takes no argument (a deferred keyring) or one KeyContext "
            f"argument (per-tenant keyrings); {provider!r} takes {len(required)}."
        )
    return None, None


#: Where a keyring comes from when a column names none.
DEFAULT_ENV = "SA_PATTERNS_KEYS"
_PER_CONTEXT_CACHE = 128


class KeySource:
    """What an encrypted column holds instead of keys: its provider, resolved on demand, and the
    :class:`~.sealer.Sealer` of each place it serves.

    A fixed or deferred keyring gives one sealer per place, kept in a one-item list the column's
    processors read (``cell[0]``); :meth:`reset` empties them all. A per-context provider is
    asked for every value, and the sealers of the keyrings it returns are kept by identity.
    Shared by a type and the copies SQLAlchemy makes of it.
    """

    __slots__ = ("_cells", "_fixed", "_per_context", "_seen", "provider")

    def __init__(self, provider: KeyringProvider | None) -> None:
        self.provider = provider
        self._fixed: Keyring | None = None
        self._per_context: Callable[[KeyContext], Keyring] | None = None
        if provider is not None:
            self._fixed, self._per_context = resolve_provider(provider)
        self._cells: dict[bytes, list[Sealer | None]] = {}
        self._seen: dict[tuple[int, bytes], tuple[Keyring, Sealer]] = {}

    @property
    def per_context(self) -> bool:
        return self._per_context is not None

    @property
    def resolved(self) -> Keyring | None:
        """The fixed or already resolved deferred keyring (None for per-context providers)."""
        return self._fixed

    def cell(self, place: bytes) -> list[Sealer | None]:
        """The cached sealer of ``place`` (``[None]`` until first use or after :meth:`reset`)."""
        return self._cells.setdefault(place, [None])

    def keyring(self, table: str, column: str) -> Keyring:
        """The keyring for a value of ``table.column`` now; :class:`ConfigurationError` if none."""
        if self._fixed is not None:
            return self._fixed
        if self._per_context is not None:
            from ..context import current_tenant

            ring = self._per_context(KeyContext(table, column, current_tenant()))
        elif self.provider is None:
            ring = Keyring.from_env(DEFAULT_ENV)
        else:
            ring = self.provider()  # type: ignore[call-arg,operator]
        if not isinstance(ring, Keyring):
            raise ConfigurationError(
                f"the keyring provider of {table}.{column} returned {type(ring).__name__}, not a "
                "sa_patterns.Keyring."
            )
        if self._per_context is None:
            self._fixed = ring  # a deferred provider is resolved once
        return ring

    def sealer(self, place: bytes, table: str, column: str) -> Sealer:
        """The sealer for ``place`` under the keyring of the moment (cached when it can be)."""
        from .sealer import Sealer

        ring = self.keyring(table, column)
        if self._per_context is None:
            cell = self.cell(place)
            sealer = cell[0]
            if sealer is None or sealer.ring is not ring:
                sealer = cell[0] = Sealer(ring, place)
            return sealer
        seen = self._seen.get((id(ring), place))
        if seen is not None and seen[0] is ring:
            return seen[1]
        if len(self._seen) >= _PER_CONTEXT_CACHE:
            self._seen.clear()
        sealer = Sealer(ring, place)
        self._seen[(id(ring), place)] = (ring, sealer)
        return sealer

    def reset(self) -> None:
        """Forget a deferred provider's keyring and every cached sealer."""
        if not isinstance(self.provider, Keyring):
            self._fixed = None
        for cell in self._cells.values():
            cell[0] = None
        self._seen.clear()
